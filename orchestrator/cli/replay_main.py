"""`tmux-agent-orchestrator-replay`: replay the JSONL audit log.

Prints event counts by type and session, the time span, the last command and its
result, max queue depth, success/failure rates, and stall and streak episodes; for agent
sessions the turns and tool calls, and every tool request with the policy's verdict, the
decision, who made it (policy or person) and how long the agent waited; for every session the
questions asked and the time spent waiting for a person (escalated approvals a person answered,
questions a reply answered). `--verify-db DB` also checks the replayed state against the state DB.

Exit codes: 0 done (and, with --verify-db, identical); 1 the DB differs from the
log; 2 bad input (a missing log or DB, a bad flag).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from orchestrator.cli.common import run_cli
from orchestrator.errors import UserError
from orchestrator.state.audit_read import read_events
from orchestrator.state.replay import replay, select
from orchestrator.state.replay_report import render_text
from orchestrator.state.replay_verify import verify_db
from orchestrator.state.snapshot import SnapshotError, existing_db


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tmux-agent-orchestrator-replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--log", required=True, help="the audit log (.tmuxagent/logs/orchestrator-actions.jsonl)")
    parser.add_argument("--session", default=None, help="only this session's events (applied before --limit)")
    parser.add_argument("--limit", type=int, default=None, help="only the last N events")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--verify-db",
        default=None,
        metavar="DB",
        help="compare the replayed state with this state DB; exit 1 on any difference",
    )
    return parser


def _replay(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    log = Path(args.log).expanduser()
    if not log.is_file():
        raise UserError(
            "audit log not found",
            file=str(log),
            key="--log",
            fix="pass the orchestrator-actions.jsonl under your log_dir",
        )
    if args.limit is not None and args.limit < 1:
        raise UserError(f"must be at least 1, got {args.limit}", key="--limit", fix="pass a positive number")
    if args.limit and args.verify_db:
        raise UserError(
            "a partial replay cannot be compared with the DB", key="--limit", fix="drop --limit when using --verify-db"
        )
    snapshot = existing_db(Path(args.verify_db), "--verify-db") if args.verify_db else None

    read = read_events(log, validate=True)
    result = replay(select(read.events, args.session, args.limit))
    summary = result.as_dict()
    summary["log"] = str(log)
    summary["problems"] = read.problems
    differences: list[str] = []
    if snapshot is not None:
        try:
            differences = verify_db(result, snapshot, args.session)
        except SnapshotError as exc:  # not a SQLite DB, corrupt, or locked for too long: bad input, not a traceback
            raise UserError(
                f"cannot read the state DB ({exc})",
                file=str(snapshot.path),
                key="--verify-db",
                fix="pass the state_db of your agent-config.yaml",
            ) from None
        summary["verify"] = {"db": str(snapshot.path), "ok": not differences, "differences": differences}

    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        print(render_text(summary, read.problems, str(log)))
        if snapshot is not None:
            verdict = "OK, the log accounts for the DB" if not differences else f"{len(differences)} difference(s)"
            print(f"verify-db {snapshot.path}: {verdict}")
            for line in differences:
                print(f"  - {line}")
    for problem in read.problems:
        print(f"tmux-agent-orchestrator-replay: warning: {problem}", file=sys.stderr)
    return 1 if differences else 0


def main(argv: list[str] | None = None) -> int:
    return run_cli("tmux-agent-orchestrator-replay", lambda: _replay(argv))


if __name__ == "__main__":
    sys.exit(main())
