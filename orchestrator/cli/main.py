"""`tmux-agent`: the user's command line (init, send, reply, status, meta set, unblock,
approve, deny, doctor, run, dashboard, validate)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cli.common import add_config_flags, run_cli
from orchestrator.errors import PaneNotFound, UserError

if TYPE_CHECKING:
    from orchestrator.config import TmuxConfig

# Each handler imports what it needs when it runs, and the parser of a subcommand defined here leaves
# out doctor, run and dashboard: a quick call like send never pays for the modules of the others.


def cmd_init(args: argparse.Namespace) -> int:
    from orchestrator.cli.starter import AGENT_CONFIG, ORCHESTRATOR_TOML
    from orchestrator.config import ORCHESTRATOR_RELATIVE

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
    import shlex

    return words[0] if len(words) == 1 else shlex.join(words)


def check_pane(tmux: TmuxConfig, target: str) -> None:
    """PaneNotFound unless `target` names a pane now, decided as TmuxAdapter.resolve decides it
    (the target's window listed first, since `display-message -t` alone falls back to another
    window of the session) and said in its words, but with one tmux process and no libtmux,
    whose import alone costs more than the rest of `send`."""
    import subprocess

    argv = ["tmux", *tmux.cli_args(), "list-panes", "-t", target, "-F", "#{pane_id}", ";"]
    argv += ["display-message", "-p", "-t", target, "#{pane_id}"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, encoding="utf-8", errors="backslashreplace")
    except OSError as exc:
        raise PaneNotFound(
            f"no tmux pane for target '{target}' (cannot run tmux: {exc.strerror})",
            key="target",
            fix="install tmux, or pass --no-check to queue anyway",
        ) from None
    if done.returncode != 0:
        why = " ".join(filter(None, done.stderr.split("\n"))) or "tmux list-panes failed"
        raise PaneNotFound(
            f"no tmux pane for target '{target}' ({why})",
            key="target",
            fix="create the pane or fix the session's target in agent-config.yaml",
        )
    *listed, shown = done.stdout.splitlines() or [""]
    if not shown.startswith("%") or shown.strip() not in {line.strip() for line in listed}:
        raise PaneNotFound(
            f"no tmux pane for target '{target}'", key="target", fix="create the pane or fix the session's target"
        )


def ring_orchestrator(state_db: Path) -> None:
    """After a commit the orchestrator acts on: wake it now rather than at its next poll (one
    sendto; nothing when no orchestrator listens — the poll still finds the change)."""
    from orchestrator.state.wake import ring

    ring(state_db)


def cmd_send(args: argparse.Namespace) -> int:
    from orchestrator.cli.status import _open, warn_unsupervised

    config, store, audit = _open(args)
    session = config.session(args.session)
    command = words_to_text(args.command, what="command", example="tmux-agent send weather/bot -- make test")
    if not args.no_check and session.host == config.host:  # another host's pane is on its tmux server
        check_pane(config.tmux, session.target)
    # a refused queue write is a StateDBError: one line (which file, why, the fix), exit 1
    store.ensure_session(session.name, session.target)
    command_id = store.enqueue(session.name, command, source="cli")  # committed with synchronous=FULL
    depth = store.queue_depths().get(session.name, 0)
    audit_errors: list[OSError] = []
    audit.on_write_error = audit_errors.append
    audit.record("command_queued", session.name, command_id=command_id, command=command, queue_depth=depth)
    ring_orchestrator(config.state_db)  # after the line, so the log reads queued before dispatched
    print(command_id, flush=True)  # queued whatever the audit line's fate: the id is the user's handle on it
    if not audit.flush():
        reason = audit_errors[-1].strerror if audit_errors else "not written"
        error = UserError(
            f"command {command_id} is queued and will run, but its command_queued audit line was not written "
            f"({reason})",
            file=str(config.audit_log),
            fix="free space (or fix permissions) under the log_dir",
        )
        error.exit_code = 1
        raise error
    warn_unsupervised(store, session.name, "the command")
    return 0


def cmd_reply(args: argparse.Namespace) -> int:
    from orchestrator.cli.status import _open, _text, warn_unsupervised
    from orchestrator.clock import iso_utc

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
    ring_orchestrator(config.state_db)
    print(f"reply queued for {session.name}")
    if isinstance(earlier, dict):
        print(
            f"tmux-agent: warning: replaced the reply queued at {_text(earlier.get('queued_at')) or '?'} "
            "that was not typed yet",
            file=sys.stderr,
        )
    warn_unsupervised(store, session.name, "the reply")
    return 0


def cmd_meta_set(args: argparse.Namespace) -> int:
    import json

    from orchestrator.cli.status import _open
    from orchestrator.metadata import check_metadata

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
    check_metadata(args.key, value)
    store.ensure_session(session.name, session.target)
    store.update_metadata(session.name, {args.key: value})
    audit.record("metadata_set", session.name, detail=args.key)
    ring_orchestrator(config.state_db)
    return 0


def cmd_unblock(args: argparse.Namespace) -> int:
    from orchestrator.cli.status import _open

    config, store, audit = _open(args)
    session = config.session(args.session)
    store.update_metadata(session.name, {"blocked": False, "failure_streak": 0})
    audit.record("session_unblocked", session.name)
    ring_orchestrator(config.state_db)
    print(f"{session.name} unblocked")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from orchestrator.cli.answers import answer_tool_request
    from orchestrator.cli.status import _open, _text, warn_unsupervised

    config, store, audit = _open(args)
    session = config.session(args.session)
    if args.id is None:
        pending = answer_tool_request(store, audit, session.name, "approved", None)
        ring_orchestrator(config.state_db)
        print(
            f"approval queued for {session.name}: {_text(pending.get('tool'))} {_text(pending.get('command'))}".rstrip()
        )
        warn_unsupervised(store, session.name, "the approval")
        return 0
    if args.id == "plan":
        from orchestrator.assist.plan_executor import approve_plan

        plan, started = approve_plan(store, audit, session.name)
        ring_orchestrator(config.state_db)
        print(f"plan of {session.name} {'approved' if started else 'already approved'}: {plan.get('source')}")
        warn_unsupervised(store, session.name, "the plan")
        return 0
    from orchestrator.assist.decision import approve

    command_id, command = approve(config, store, audit, session.name, args.id)
    ring_orchestrator(config.state_db)
    print(f"{command_id}\t{command}")
    return 0


def cmd_deny(args: argparse.Namespace) -> int:
    from orchestrator.cli.answers import answer_tool_request, refuse_suggestion
    from orchestrator.cli.status import _open, _text, warn_unsupervised

    config, store, audit = _open(args)
    session = config.session(args.session)
    if args.id is None:
        pending = answer_tool_request(store, audit, session.name, "denied", args.reason)
        ring_orchestrator(config.state_db)
        print(
            f"denial queued for {session.name}: {_text(pending.get('tool'))} {_text(pending.get('command'))}".rstrip()
        )
        warn_unsupervised(store, session.name, "the denial")
        return 0
    command = refuse_suggestion(store, audit, session.name, args.id)
    print(f"refused {args.id}\t{command}".rstrip())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from orchestrator.cli.status import cmd_status as status

    return status(args)


def cmd_validate(args: argparse.Namespace) -> int:
    from orchestrator.cli.validate import run_validation

    return run_validation(args)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole `tmux-agent` parser; with `only` one of OWN (the subcommand about to run), without
    the subcommands other modules register, so their modules are not imported for it."""
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

    p = sub.add_parser(
        "approve", help="approve the agent's pending tool request; with ID, queue a suggestion from next_actions"
    )
    add_config_flags(p)
    p.add_argument("session")
    p.add_argument(
        "id", nargs="?", default=None, help="a suggestion's id, as `tmux-agent status` shows it; `plan`: start the plan"
    )
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser("deny", help="refuse the agent's pending tool request; with ID, refuse a suggestion")
    add_config_flags(p)
    p.add_argument("session")
    p.add_argument("id", nargs="?", default=None, help="a suggestion's id, as `tmux-agent status` shows it")
    p.add_argument("--reason", default=None, help="what the agent is told (default: denied by a person)")
    p.set_defaults(func=cmd_deny)

    p = sub.add_parser("validate", help="run the A–G playbook through pytest and write the report")
    p.add_argument("--live", action="store_true")
    p.add_argument("-m", dest="markexpr", default=None)
    p.add_argument("--scenario", action="append", default=[], help="letter a–g; repeatable")
    p.add_argument("-n", dest="workers", default=None)
    p.add_argument("--report", default=None)
    p.add_argument("--allure", default=None)
    p.add_argument("--scenarios-dir", default=None, help="run scenario tests from another folder")
    p.add_argument("--soak", nargs="?", const="10m", default=None, metavar="DURATION", help="soak + Prometheus export")
    p.set_defaults(func=cmd_validate)

    if only in OWN:
        return parser
    from orchestrator.cli import dashboard as dashboard_cli
    from orchestrator.cli import doctor, run_stack

    doctor.register(sub, add_config_flags)
    run_stack.register(sub, add_config_flags)
    dashboard_cli.register(sub)
    return parser


# the subcommands build_parser defines itself (doctor, run and dashboard come from their modules)
OWN = frozenset({"init", "send", "reply", "status", "meta", "unblock", "approve", "deny", "validate"})


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(only=words[0] if words else None).parse_args(words)
    return run_cli("tmux-agent", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
