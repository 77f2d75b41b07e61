"""`tmux-agent`: the user's command line (init, send, reply, status, meta set, unblock,
approve, doctor, run, dashboard, validate)."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.adapters.tmux import TmuxAdapter
from orchestrator.assist.coordinator import status_lines
from orchestrator.assist.plan_executor import plan_progress
from orchestrator.cli import dashboard as dashboard_cli
from orchestrator.cli import doctor, run_stack
from orchestrator.cli.common import add_config_flags, config_from_args, run_cli
from orchestrator.cli.starter import AGENT_CONFIG, ORCHESTRATOR_TOML
from orchestrator.clock import SystemClock, iso_utc, parse_iso_utc
from orchestrator.config import ORCHESTRATOR_RELATIVE, Config
from orchestrator.envfile import EnvSource
from orchestrator.errors import UserError
from orchestrator.model import CommandRow
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


# a running orchestrator writes every session's `orchestrator_heartbeat` about every 2 s
HEARTBEAT_FRESH_SECONDS = 10.0
OUTPUT_TAIL_SHOWN = 5  # lines of a running command's output in the text status
REPLY_SHOWN = 200  # characters of an agent's last reply in the text status (--json has it whole)
PROMPT_SHOWN = 120  # characters of an agent's prompt on one line of the text status
ASKING_STATES = ("waiting_input", "waiting_approval")  # states whose `running.question` is shown


def _text(value: object) -> str | None:
    """A metadata value that should be a string; anything else counts as absent."""
    return value if isinstance(value, str) and value.strip() else None


def _timestamp(value: object) -> float | None:
    """An ISO UTC timestamp as epoch seconds; anything unreadable counts as absent."""
    text = _text(value)
    if text is None:
        return None
    try:
        return parse_iso_utc(text)
    except ValueError:
        pass
    try:
        moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)).timestamp()


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


@dataclass(frozen=True)
class Heartbeat:
    """A session's metadata `orchestrator_heartbeat`, seen at `now`."""

    at: str | None
    age_s: float | None

    @classmethod
    def of(cls, metadata: Mapping[str, Any], now: float) -> Heartbeat:
        at = _text(metadata.get("orchestrator_heartbeat"))
        epoch = _timestamp(at)
        if at is None or epoch is None:
            return cls(None, None)
        return cls(at, round(max(0.0, now - epoch), 1))

    @property
    def fresh(self) -> bool:
        return self.age_s is not None and self.age_s < HEARTBEAT_FRESH_SECONDS

    def last(self) -> str:
        return "never" if self.at is None or self.age_s is None else f"{self.at}, {_duration(self.age_s)} ago"

    def describe(self) -> str:
        if self.at is None or self.age_s is None:
            return "no orchestrator heartbeat"
        if self.fresh:
            return f"orchestrator heartbeat {_duration(self.age_s)} ago"
        return f"STALE (last heartbeat {self.last()})"

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "age_s": self.age_s, "fresh": self.fresh}


def warn_unsupervised(store: StateStore, session: str, what: str) -> None:
    """One warning line on stderr when no running orchestrator will pick up what was just queued."""
    beat = Heartbeat.of(store.metadata(session), SystemClock().now())
    if not beat.fresh:
        print(
            f"tmux-agent: warning: no orchestrator is running for {session} (last heartbeat: {beat.last()}); "
            f"{what} waits in the queue until one starts (tmux-agent run)",
            file=sys.stderr,
        )


def words_to_text(argv: list[str], *, what: str, example: str) -> str:
    """The words after `--`, exactly as the user gave them to their shell.

    Only the leading `--` separates: later ones are the text's own (`git diff -- a.py`). One
    word is taken as it is (`-- "make test && echo ok"`); several are joined with `shlex.join`,
    so the pane's shell splits them back into the same words (`-- echo "two  spaces"`).
    """
    words = argv[1:] if argv[:1] == ["--"] else argv
    if not words:
        raise UserError(f"no {what} given", key=what.upper(), fix=f"write it after --, e.g. {example}")
    if not any(word.strip() for word in words):
        raise UserError(f"the {what} is empty", key=what.upper(), fix=f"write it after --, e.g. {example}")
    return words[0] if len(words) == 1 else shlex.join(words)


def cmd_send(args: argparse.Namespace) -> int:
    config, store, audit = _open(args)
    session = config.session(args.session)
    command = words_to_text(args.command, what="command", example="tmux-agent send weather/bot -- make test")
    if not args.no_check:
        TmuxAdapter(config.tmux).resolve(session.target)
    store.ensure_session(session.name, session.target)
    command_id = store.enqueue(session.name, command, source="cli")
    depth = store.queue_depths().get(session.name, 0)
    audit.record("command_queued", session.name, command_id=command_id, command=command, queue_depth=depth)
    print(command_id)
    warn_unsupervised(store, session.name, "the command")
    return 0


def cmd_reply(args: argparse.Namespace) -> int:
    config, store, audit = _open(args)
    session = config.session(args.session)
    text = words_to_text(args.text, what="text", example="tmux-agent reply weather/bot -- yes")
    metadata = store.metadata(session.name)
    state = _text(metadata.get("state"))
    if state != "waiting_input":
        raise UserError(
            f"session {session.name} is {state or 'in no reported state'}, not waiting_input: nothing to reply to",
            key="SESSION",
            fix=f"reply when `tmux-agent status {session.name}` shows waiting_input; queue commands with send",
        )
    earlier = metadata.get("pending_reply")
    store.update_metadata(session.name, {"pending_reply": {"text": text, "queued_at": iso_utc(store.clock.now())}})
    # the text itself stays out of the audit log: an answer to a prompt may be a password
    audit.record("reply_queued", session.name, detail=f"reply of {len(text)} character(s)")
    print(f"reply queued for {session.name}")
    if isinstance(earlier, dict):
        print(
            f"tmux-agent: warning: replaced the reply queued at {_text(earlier.get('queued_at')) or '?'} "
            "that was not typed yet",
            file=sys.stderr,
        )
    warn_unsupervised(store, session.name, "the reply")
    return 0


def _short(text: str, limit: int) -> str:
    """One line of at most `limit` characters: whitespace runs become one space, a cut ends in `…`."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: max(0, limit - 1)].rstrip() + "…"


def _last_reply(last: object) -> str | None:
    """An agent turn's reply, from `last_command_result.reply` (None for a shell command's result)."""
    return last.get("reply") if isinstance(last, dict) and isinstance(last.get("reply"), str) else None


def _last_tools(last: object) -> list[dict[str, str | None]] | None:
    """The tool calls of an agent's last turn as `{name, command}` (`command` for shell tools, else
    None); None when the last result holds no tool list (a shell command's result)."""
    tools = last.get("tools") if isinstance(last, dict) else None
    if not isinstance(tools, list):
        return None
    out: list[dict[str, str | None]] = []
    for tool in tools:
        if isinstance(tool, dict):
            name, command = tool.get("name"), tool.get("command")
            out.append(
                {
                    "name": name if isinstance(name, str) else "?",
                    "command": command if isinstance(command, str) else None,
                }
            )
    return out


def _tools_text(tools: list[dict[str, str | None]]) -> str:
    if not tools:
        return "none"
    return "; ".join(
        f"{t['name']}: {_short(t['command'], PROMPT_SHOWN)}" if t["command"] else str(t["name"]) for t in tools
    )


def _running_report(row: CommandRow | None, live: Mapping[str, Any], now: float) -> dict[str, Any] | None:
    """The session's running command (its `running` row), with the engine's output tail if it wrote one."""
    if row is None:
        return None
    started = _timestamp(row.started_at)
    return {
        "id": row.id,
        "command": row.command,
        "started_at": row.started_at,
        "elapsed_s": None if started is None else round(max(0.0, now - started), 1),
        "output_tail": _text(live.get("output_tail")),
    }


def _live(metadata: Mapping[str, Any], row: CommandRow | None) -> Mapping[str, Any]:
    """Metadata `running`, unless it is not an object or speaks of another command than the row."""
    live = metadata.get("running")
    if not isinstance(live, dict):
        return {}
    if row is not None and live.get("command_id") is not None and live.get("command_id") != row.id:
        return {}
    return live


def _for_status_lines(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata with only object-shaped recommendations, so odd values never reach status_lines."""
    clean = dict(metadata)
    next_actions = clean.get("next_actions")
    if isinstance(next_actions, dict):
        recs = next_actions.get("recommendations")
        clean["next_actions"] = {
            **next_actions,
            "recommendations": [r for r in recs if isinstance(r, dict)] if isinstance(recs, list) else [],
        }
    return clean


def cmd_status(args: argparse.Namespace) -> int:
    config, store, _ = _open(args)
    names = [config.session(args.session).name] if args.session else [s.name for s in config.sessions]
    depths = store.queue_depths()
    now = SystemClock().now()
    running_rows = {row.session: row for row in reversed(store.running())}
    report: list[dict[str, Any]] = []
    for name in names:
        metadata = store.metadata(name)
        session = config.session(name)
        row = running_rows.get(name)
        live = _live(metadata, row)
        state = _text(metadata.get("state"))
        last = metadata.get("last_command_result")
        report.append(
            {
                "name": name,
                "target": session.target,
                "kind": session.kind,
                "provider": session.provider,
                "metadata": metadata,
                "queue_depth": depths.get(name, 0),
                "queued": [{"id": r.id, "command": r.command} for r in store.queued(name)],
                "recent": [r.as_dict() for r in store.commands(name, limit=args.limit)],
                "plan_progress": plan_progress(metadata.get("task_decomposition")),
                "state": state,
                "state_detail": _text(metadata.get("state_detail")),
                "question": _text(live.get("question")) if state in ASKING_STATES else None,
                "running": _running_report(row, live, now),
                "heartbeat": Heartbeat.of(metadata, now).as_dict(),
                "last_reply": _last_reply(last),
                "last_tools": _last_tools(last),
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
        print_session(item, Heartbeat.of(item["metadata"], now))
    return 0


def print_session(item: Mapping[str, Any], beat: Heartbeat) -> None:
    metadata: Mapping[str, Any] = item["metadata"]
    agent = item["kind"] == "agent"
    blocked = " BLOCKED" if metadata.get("blocked") else ""
    print(f"{item['name']} ({item['target']}) queue={item['queue_depth']}{blocked}")
    print(f"  kind: {item['kind']}" + (f"  provider: {item['provider']}" if agent else ""))
    state = item["state"] or "(not reported)"
    print(f"  state: {state}" + (f" — {item['state_detail']}" if item["state_detail"] else ""))
    running = item["running"]
    if running is not None:
        elapsed = "" if running["elapsed_s"] is None else f" for {_duration(running['elapsed_s'])}"
        if agent:
            print(f"  prompt: #{running['id']}{elapsed}  {_short(running['command'], PROMPT_SHOWN)}")
        else:
            print(f"  running: #{running['id']}{elapsed}  {running['command']}")
            if running["output_tail"]:
                for line in running["output_tail"].splitlines()[-OUTPUT_TAIL_SHOWN:]:
                    print(f"    | {line}")
    if item["question"]:
        hint = f"  (answer: tmux-agent reply {item['name']} -- TEXT)" if item["state"] == "waiting_input" else ""
        print(f"  question: {item['question']}{hint}")
    print(f"  {beat.describe()}")
    last = metadata.get("last_command_result")
    if isinstance(last, dict) and last:
        if agent:
            command = last.get("command")
            shown = _short(command, PROMPT_SHOWN) if isinstance(command, str) else command
            print(f"  last: #{last.get('command_id')} {last.get('status')} {last.get('duration_s')}s  {shown}")
        else:
            print(
                f"  last: #{last.get('command_id')} {last.get('status')} exit={last.get('exit_code')} "
                f"{last.get('duration_s')}s  {last.get('command')}"
            )
    if item["last_reply"] is not None:
        print(f"  reply: {_short(item['last_reply'], REPLY_SHOWN) or '(empty)'}")
    if item["last_tools"] is not None:
        print(f"  tools: {_tools_text(item['last_tools'])}")
    for line in status_lines(item["name"], _for_status_lines(metadata)):
        print(line)


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

    p = sub.add_parser("reply", help="answer a session that is waiting_input (a read -p or y/N prompt)")
    add_config_flags(p)
    p.add_argument("session")
    p.add_argument("text", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_reply)

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
