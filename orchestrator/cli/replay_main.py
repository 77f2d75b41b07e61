"""`tmux-agent-orchestrator-replay`: replay the JSONL audit log.

Prints event counts by type and session, the time span, the last command and its
result, max queue depth, success/failure rates, and stall and streak episodes; for agent
sessions the turns and tool calls, and every tool request with the policy's verdict, the
decision, who made it (policy or person) and how long the agent waited; for every session the
questions asked and the time spent waiting for a person (escalated approvals a person answered,
questions a reply answered). `--verify-db DB` also checks the replayed state against the state DB.
A fleet on PostgreSQL: `--log` once per host's audit log and `--dsn DSN` for the shared
database replay the whole fleet as one and check it the same way.

Exit codes: 0 done (and, with --verify-db, identical); 1 the DB differs from the
log; 2 bad input (a missing log or DB, a bad flag).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from orchestrator.cli.common import run_cli
from orchestrator.errors import UserError
from orchestrator.state.audit_read import read_events
from orchestrator.state.replay import replay, select
from orchestrator.state.replay_report import render_text
from orchestrator.state.replay_verify import verify_db
from orchestrator.state.snapshot import Snapshot, SnapshotError, existing_db


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tmux-agent-orchestrator-replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--log",
        required=True,
        action="append",
        help="the audit log (.tmuxagent/logs/orchestrator-actions.jsonl); on a fleet, once per host's log: "
        "their events are replayed as one, in time order",
    )
    parser.add_argument("--session", default=None, help="only this session's events (applied before --limit)")
    parser.add_argument("--limit", type=int, default=None, help="only the last N events")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--verify-db",
        default=None,
        metavar="DB",
        help="compare the replayed state with this state DB; exit 1 on any difference",
    )
    parser.add_argument(
        "--dsn",
        default=None,
        help="a fleet's PostgreSQL database (a libpq DSN): compare the replayed state with it, as --verify-db does",
    )
    return parser


def _replay(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logs = [Path(log).expanduser() for log in args.log]
    for log in logs:
        if not log.is_file():
            raise UserError(
                "audit log not found",
                file=str(log),
                key="--log",
                fix="pass the orchestrator-actions.jsonl under your log_dir",
            )
    if args.limit is not None and args.limit < 1:
        raise UserError(f"must be at least 1, got {args.limit}", key="--limit", fix="pass a positive number")
    flag = "--dsn" if args.dsn else "--verify-db"
    if args.dsn and args.verify_db:
        raise UserError("--verify-db and --dsn both name a state DB", key="--dsn", fix="pass one of them")
    if args.limit and (args.verify_db or args.dsn):
        raise UserError(
            "a partial replay cannot be compared with the DB", key="--limit", fix=f"drop --limit when using {flag}"
        )
    snapshot = _snapshot(args)

    problems: list[str] = []
    events: list[dict[str, Any]] = []
    for log in logs:
        read = read_events(log, validate=True)
        problems += read.problems
        events += read.events
    if len(logs) > 1:  # several hosts' logs: one fleet, in time order (each log's own order kept on ties)
        events.sort(key=lambda event: str(event.get("ts", "")))
    result = replay(select(events, args.session, args.limit))
    summary = result.as_dict()
    summary["log"] = str(logs[0]) if len(logs) == 1 else [str(log) for log in logs]
    summary["problems"] = problems
    differences: list[str] = []
    if snapshot is not None:
        try:
            differences = verify_db(result, snapshot, args.session)
        except SnapshotError as exc:  # not a SQLite DB, corrupt, or locked for too long: bad input, not a traceback
            raise UserError(
                f"cannot read the state DB ({exc})",
                file=snapshot.where,
                key=flag,
                fix="pass the state_db (or state_dsn) of your agent-config.yaml",
            ) from None
        summary["verify"] = {"db": snapshot.where, "ok": not differences, "differences": differences}

    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        print(render_text(summary, problems, ", ".join(str(log) for log in logs)))
        if snapshot is not None:
            verdict = "OK, the log accounts for the DB" if not differences else f"{len(differences)} difference(s)"
            print(f"{flag.removeprefix('--')} {snapshot.where}: {verdict}")
            for line in differences:
                print(f"  - {line}")
    for problem in problems:
        print(f"tmux-agent-orchestrator-replay: warning: {problem}", file=sys.stderr)
    return 1 if differences else 0


def _snapshot(args: argparse.Namespace) -> Snapshot | None:
    if args.dsn:  # psycopg only for a fleet's database
        from orchestrator.state.pg_snapshot import PgSnapshot

        return PgSnapshot(args.dsn)
    return existing_db(Path(args.verify_db), "--verify-db") if args.verify_db else None


def main(argv: list[str] | None = None) -> int:
    return run_cli("tmux-agent-orchestrator-replay", lambda: _replay(argv))


if __name__ == "__main__":
    sys.exit(main())
