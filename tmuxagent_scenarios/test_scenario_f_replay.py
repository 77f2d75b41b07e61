"""Scenario F, step 3 (`tmux-agent-orchestrator-replay` 复盘 JSONL 日志) on its own, without
Prometheus: the audit log of a mixed run (successes, failures, a blocking streak) replays to the
state DB exactly, and a DB that disagrees is caught. It decides "Replay 审计完整" even on a
machine without Debian's `prometheus`. A run with every result status (a stall and a cancel
among failures) replays to the DB too, and so does that log damaged as a crash or a disk fault
leaves it; the rates replay prints are the DB's.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from contextlib import closing
from typing import Any

import pytest

from orchestrator.model import TERMINAL_STATUSES
from pytest_tmuxagent.waiting import wait_until
from tmuxagent_scenarios.common import replay_cli, replay_matching, replay_verified

pytestmark = pytest.mark.scenario_f

BOT, OPS = "weather/bot", "ops/deploy"


@pytest.mark.tmuxagent_each_store
def test_replay_verifies_the_audit_log_of_a_mixed_run(agent_pane, orchestrator_service, tmuxagent_evidence) -> None:
    service = orchestrator_service([agent_pane(BOT), agent_pane(OPS)], settings={"failure_alert_threshold": 3})
    ok = [service.send(BOT, c) for c in ("echo one", "false", "true", "(exit 4)", "echo two")]
    streak = [service.send(OPS, f"echo boom {i}; (exit {11 + i})") for i in range(3)]
    held = service.send(OPS, "echo held")
    statuses = [service.wait_result(i).status for i in [*ok, *streak]]
    assert statuses == ["succeeded", "failed", "succeeded", "failed", "succeeded", "failed", "failed", "failed"]
    service.metrics.wait_until_value("orchestrator_session_blocked", 1.0, session=OPS)
    summary = replay_verified(service)
    assert summary["commands"]["results"] == {"succeeded": 3, "failed": 5}
    assert summary["sessions"][OPS]["queued"] == [held] and summary["sessions"][OPS]["blocked"] is True

    tampered = tampered_state(service, "UPDATE commands SET status='queued' WHERE id=? RETURNING id", (ok[0],))
    verdict = replay_cli("--log", str(service.audit_log), *tampered)
    assert verdict.returncode == 1 and f"{BOT}: queued commands: log [], DB [{ok[0]}]" in verdict.stdout

    events = sum(1 for _ in service.audit_log.open(encoding="utf-8"))
    tmuxagent_evidence.decide(
        f"`tmux-agent-orchestrator-replay --verify-db` replayed {events} schema-valid audit lines of a mixed run "
        f"(3 succeeded, 5 failed, {OPS} blocked with 1 queued) to a state identical to the DB, and named the "
        "difference in a tampered copy (exit 1)",
        headline=True,
    )


EVERY_STATUS = {
    "stall_timeout_seconds": 2,
    "stall_retries_before_notify": 1,
    "cooldown_seconds": 1,
    "interrupt_grace_seconds": 0.5,
    "failure_alert_threshold": 5,  # no block: the streak itself is what replay must get right
}
CHATTY = "while :; do echo tick; sleep 0.2; done"  # never a stall; it ends only when its pane goes


def run_with_every_status(agent_pane, orchestrator_service):  # type: ignore[no-untyped-def]
    """A run whose DB holds all four results, the stall and the cancel each after a failure:
    BOT succeeded, failed, stalled (a silent `sleep`), failed -> streak 2 (a stall leaves it);
    OPS failed, cancelled (its pane closed mid-command)      -> streak 1 (a cancel leaves it).
    Returns the service (still running) and the stalled command's id."""
    bot, ops = agent_pane(BOT), agent_pane(OPS)
    service = orchestrator_service([bot, ops], settings=EVERY_STATUS)
    bot_ids = [service.send(BOT, c) for c in ("echo one", "false", "echo quiet; sleep 600", "(exit 3)")]
    ops_ids = [service.send(OPS, c) for c in ("(exit 2)", CHATTY)]
    wait_until(lambda: "tick" in ops.capture(10), timeout=15, message=f"{CHATTY!r} printing in {OPS}")
    ops.kill()
    bot_rows = [service.wait_result(i, timeout=20) for i in bot_ids]
    ops_rows = [service.wait_result(i) for i in ops_ids]
    assert [r.status for r in bot_rows] == ["succeeded", "failed", "stalled", "failed"]
    assert [r.status for r in ops_rows] == ["failed", "cancelled"]

    def streaks() -> tuple[Any, Any]:
        return service.metadata(BOT).get("failure_streak"), service.metadata(OPS).get("failure_streak")

    # the guard writes the streak just after the result's row lands (the row is what wait_result saw)
    wait_until(lambda: streaks() == (2, 1), timeout=10, message=f"failure streaks (2, 1); now {streaks()}")
    return service, bot_ids[2]


def tampered_state(service, statement: str, params: tuple[Any, ...]) -> list[str]:  # type: ignore[no-untyped-def]
    """The (stopped) service's state with `statement` applied, as replay's arguments: a changed
    copy of the SQLite file, or the PostgreSQL database itself (the service is done with it)."""
    if service.state_dsn:
        store = service.store()
        try:
            store.query(statement, params)
        finally:
            store.close()
        return list(service.verify_args)
    tampered = service.root / "tampered.db"
    with closing(sqlite3.connect(service.state_db)) as source, closing(sqlite3.connect(tampered)) as db:
        source.backup(db)
        db.execute(statement, params)
        db.commit()
    return ["--verify-db", str(tampered)]


def db_results(service) -> dict[str, Counter[str]]:  # type: ignore[no-untyped-def]
    """{session: Counter(status)} of the finished commands, read from the DB with SQL alone."""
    out: dict[str, Counter[str]] = {}
    store = service.store()
    try:
        rows = store.query("SELECT session, status, COUNT(*) AS n FROM commands GROUP BY session, status")
    finally:
        store.close()
    for row in rows:
        if row["status"] in TERMINAL_STATUSES:
            out.setdefault(row["session"], Counter())[row["status"]] = int(row["n"])
    return out


def assert_rates_are_the_dbs(summary: dict[str, Any], service) -> None:  # type: ignore[no-untyped-def]
    """success_rate and failure_rate, overall and per session, are the DB's: each status's share
    of ALL finished commands (stalled and cancelled count in the denominator)."""
    by_session = db_results(service)
    overall = sum(by_session.values(), Counter())
    for scope, replayed, counts in [
        ("all sessions", summary["commands"], overall),
        *((name, summary["sessions"][name], c) for name, c in by_session.items()),
    ]:
        total = sum(counts.values())
        expected = {"success_rate": counts["succeeded"] / total, "failure_rate": counts["failed"] / total}
        got = {k: replayed[k] for k in expected}
        assert got == pytest.approx(expected), f"{scope}: replay's rates {got}, the DB's {expected} ({dict(counts)})"


@pytest.mark.tmuxagent_each_store
def test_replay_of_stalled_and_cancelled_results_matches_the_db(agent_pane, orchestrator_service) -> None:
    """A stall and a cancel leave the failure streak where it was: a replay that reset it (or
    counted them as failures) would disagree with the DB here, where each follows a failure."""
    service, stuck = run_with_every_status(agent_pane, orchestrator_service)
    summary = replay_verified(service)
    assert set(sum(db_results(service).values(), Counter())) == set(TERMINAL_STATUSES)
    assert summary["commands"]["results"] == {"succeeded": 1, "failed": 3, "stalled": 1, "cancelled": 1}
    bot, ops = summary["sessions"][BOT], summary["sessions"][OPS]
    assert (bot["results"], bot["failure_streak"], bot["stall_count"]) == (
        {"succeeded": 1, "failed": 2, "stalled": 1},
        2,
        1,
    )
    assert (ops["results"], ops["failure_streak"]) == ({"failed": 1, "cancelled": 1}, 1)
    assert [(e["command_id"], e["stalls"], e["outcome"]) for e in summary["stall_episodes"]] == [(stuck, 1, "stalled")]
    assert_rates_are_the_dbs(summary, service)


GARBAGE = b"\x00\x00\x00\x00\x00\x00\x00\x00 disk fault \xff\xfe\n"  # a block of NULs and noise


def test_replay_survives_a_damaged_log_names_its_bad_lines_and_keeps_the_numbers(
    agent_pane, orchestrator_service
) -> None:
    """The log as a crash or a disk fault leaves it: a garbage line in the middle and a last line
    cut short (no newline). Replay still verifies the DB, names both lines, and every number is
    the clean log's — the rates, too, are the DB's."""
    service, _ = run_with_every_status(agent_pane, orchestrator_service)
    clean = replay_verified(service)
    lines = service.audit_log.read_bytes().splitlines(keepends=True)
    assert json.loads(lines[0])["event"] == "orchestrator_started"  # no session's state rides on it
    middle = len(lines) // 2
    damaged = service.root / "damaged.jsonl"
    damaged.write_bytes(b"".join([*lines[:middle], GARBAGE, *lines[middle:], lines[0][: len(lines[0]) // 2]]))

    summary, warnings = replay_matching(damaged, service)
    garbage_at, cut_at = middle + 1, len(lines) + 2
    problems = summary["problems"]
    assert [p.split(": ", 1)[0] for p in problems] == [f"{damaged}:{garbage_at}", f"{damaged}:{cut_at}"], problems
    assert "cut short at the end of the file" in problems[1]
    assert all(f"warning: {p}" in warnings for p in problems)
    for key in ("events", "by_event", "commands", "sessions", "stall_episodes", "streak_episodes"):
        assert summary[key] == clean[key], f"{key} differs from the clean log's replay"
    assert_rates_are_the_dbs(summary, service)
