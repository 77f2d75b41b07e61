"""`tmux-agent`: the user's command line (init, send, status, meta set, unblock,
approve, doctor, validate)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from orchestrator.adapters.tmux import TmuxAdapter
from orchestrator.assist.coordinator import status_lines
from orchestrator.assist.plan_executor import plan_progress
from orchestrator.cli import dashboard as dashboard_cli
from orchestrator.cli import doctor, run_stack
from orchestrator.cli.common import add_config_flags, config_from_args, run_cli
from orchestrator.cli.starter import AGENT_CONFIG, ORCHESTRATOR_TOML
from orchestrator.config import ORCHESTRATOR_RELATIVE, Config
from orchestrator.envfile import EnvSource
from orchestrator.errors import UserError
from orchestrator.state.audit import AuditLog
from orchestrator.state.outbox import Outbox
from orchestrator.state.store import StateStore


def cmd_init(args: argparse.Namespace) -> int:
    config = Path(args.config).absolute()
    orch = (
        Path(args.orchestrator_config).absolute() if args.orchestrator_config else config.parent / ORCHESTRATOR_RELATIVE
    )
    targets = [(config, AGENT_CONFIG), (orch, ORCHESTRATOR_TOML)]
    existing = [str(p) for p, _ in targets if p.exists()]
    if existing and not args.force:
        raise UserError("already exists, not overwritten", file=existing[0], fix="pass --force to overwrite")
    for path, text in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


def _open(args: argparse.Namespace) -> tuple[Config, StateStore, AuditLog]:
    config = config_from_args(args)
    EnvSource(config.settings.env_file).current()  # learn the secrets, so the audit lines we write mask them
    return config, StateStore(config.state_db), AuditLog(config.audit_log)


def cmd_send(args: argparse.Namespace) -> int:
    config, store, audit = _open(args)
    session = config.session(args.session)
    # only the leading `--` separates the command: later ones are the command's own (`git diff -- a.py`)
    words: list[str] = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not words:
        raise UserError(
            "no command given", key="CMD", fix="write it after --, e.g. tmux-agent send weather/bot -- make test"
        )
    command = words[0] if len(words) == 1 else " ".join(words)
    if not args.no_check:
        TmuxAdapter(config.tmux).resolve(session.target)
    store.ensure_session(session.name, session.target)
    command_id = store.enqueue(session.name, command, source="cli")
    depth = store.queue_depths().get(session.name, 0)
    audit.record("command_queued", session.name, command_id=command_id, command=command, queue_depth=depth)
    print(command_id)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    config, store, _ = _open(args)
    names = [config.session(args.session).name] if args.session else [s.name for s in config.sessions]
    depths = store.queue_depths()
    report: list[dict[str, Any]] = []
    for name in names:
        report.append(
            {
                "name": name,
                "target": config.session(name).target,
                "metadata": store.metadata(name),
                "queue_depth": depths.get(name, 0),
                "queued": [{"id": r.id, "command": r.command} for r in store.queued(name)],
                "recent": [r.as_dict() for r in store.commands(name, limit=args.limit)],
                "plan_progress": plan_progress(store.metadata(name).get("task_decomposition")),
            }
        )
    notifications = Outbox(store).health()
    notifications["pending"] = len(Outbox(store).pending())
    if args.json:
        print(json.dumps({"sessions": report, "notifications": notifications}, ensure_ascii=False, indent=2))
        return 0
    if notifications.get("state") == "degraded":
        print(f"notifications DEGRADED: {notifications.get('reason')} ({notifications['pending']} queued)")
    for item in report:
        last = item["metadata"].get("last_command_result") or {}
        blocked = " BLOCKED" if item["metadata"].get("blocked") else ""
        print(f"{item['name']} ({item['target']}) queue={item['queue_depth']}{blocked}")
        if last:
            print(
                f"  last: #{last['command_id']} {last['status']} exit={last['exit_code']} "
                f"{last['duration_s']}s  {last['command']}"
            )
        for line in status_lines(item["name"], item["metadata"]):
            print(line)
    return 0


def cmd_meta_set(args: argparse.Namespace) -> int:
    config, store, audit = _open(args)
    session = config.session(args.session)
    try:
        value = json.loads(args.value)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"value is not JSON ({exc.msg})",
            key=args.key,
            fix="pass JSON, e.g. '[\"missing OPENAI_API_KEY\"]' or '\"docs/plan.md\"'",
        ) from None
    store.ensure_session(session.name, session.target)
    store.update_metadata(session.name, {args.key: value})
    audit.record("metadata_set", session.name, detail=args.key)
    return 0


def cmd_unblock(args: argparse.Namespace) -> int:
    config, store, audit = _open(args)
    session = config.session(args.session)
    store.update_metadata(session.name, {"blocked": False, "failure_streak": 0})
    audit.record("session_unblocked", session.name)
    print(f"{session.name} unblocked")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from orchestrator.assist.decision import approve

    config, store, audit = _open(args)
    session = config.session(args.session)
    command_id, command = approve(config, store, audit, session.name, args.id)
    print(f"{command_id}\t{command}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from orchestrator.cli.validate import run_validation

    return run_validation(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tmux-agent", description="Supervise AI coding agents in tmux panes.")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("init", help="write agent-config.yaml and .tmuxagent/orchestrator.toml")
    add_config_flags(p)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("send", help="queue a command for an agent session")
    add_config_flags(p)
    p.add_argument("--no-check", action="store_true", help="queue even if the pane does not exist yet")
    p.add_argument("session")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("status", help="sessions, metadata and queue")
    add_config_flags(p)
    p.add_argument("session", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=10)
    p.set_defaults(func=cmd_status)

    meta = sub.add_parser("meta", help="session metadata").add_subparsers(dest="meta_cmd", required=True)
    p = meta.add_parser("set", help="set a metadata key to a JSON value")
    add_config_flags(p)
    p.add_argument("session")
    p.add_argument("key")
    p.add_argument("value")
    p.set_defaults(func=cmd_meta_set)

    p = sub.add_parser("unblock", help="clear a failure-streak block")
    add_config_flags(p)
    p.add_argument("session")
    p.set_defaults(func=cmd_unblock)

    p = sub.add_parser("approve", help="queue a suggested command from next_actions (never a denied one)")
    add_config_flags(p)
    p.add_argument("session")
    p.add_argument("id", help="the suggestion's id, as `tmux-agent status` shows it")
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser("validate", help="run the A–G playbook through pytest and write the report")
    p.add_argument("--live", action="store_true")
    p.add_argument("-m", dest="markexpr", default=None)
    p.add_argument("--scenario", action="append", default=[], help="letter a–g; repeatable")
    p.add_argument("-n", dest="workers", default=None)
    p.add_argument("--report", default=None)
    p.add_argument("--allure", default=None)
    p.add_argument("--scenarios-dir", default=None, help="run scenario tests from another folder")
    p.set_defaults(func=cmd_validate)

    doctor.register(sub, add_config_flags)
    run_stack.register(sub, add_config_flags)
    dashboard_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli("tmux-agent", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
