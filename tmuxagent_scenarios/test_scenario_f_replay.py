"""Scenario F, step 3 (`tmux-agent-orchestrator-replay` 复盘 JSONL 日志) on its own, without
Prometheus: the audit log of a mixed run (successes, failures, a blocking streak) replays to the
state DB exactly, and a DB that disagrees is caught. It decides "Replay 审计完整" even on a
machine without Debian's `prometheus`.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from tmuxagent_scenarios.common import replay_cli, replay_verified

pytestmark = pytest.mark.scenario_f

BOT, OPS = "weather/bot", "ops/deploy"


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

    tampered = service.root / "tampered.db"
    with closing(sqlite3.connect(service.state_db)) as source, closing(sqlite3.connect(tampered)) as db:
        source.backup(db)
        db.execute("UPDATE commands SET status='queued' WHERE id=?", (ok[0],))
        db.commit()
    verdict = replay_cli("--log", str(service.audit_log), "--verify-db", str(tampered))
    assert verdict.returncode == 1 and f"{BOT}: queued commands: log [], DB [{ok[0]}]" in verdict.stdout

    events = sum(1 for _ in service.audit_log.open(encoding="utf-8"))
    tmuxagent_evidence.decide(
        f"`tmux-agent-orchestrator-replay --verify-db` replayed {events} schema-valid audit lines of a mixed run "
        f"(3 succeeded, 5 failed, {OPS} blocked with 1 queued) to a state identical to the DB, and named the "
        "difference in a tampered copy (exit 1)",
        headline=True,
    )
