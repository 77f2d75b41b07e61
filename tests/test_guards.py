"""The stall guard and the failure streak on their own: verdicts, gates and subscribers, with the
manual clock, a real SQLite store and audit log, and a recording notifier — no engine, no tmux.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.clock import ManualClock, iso_utc
from orchestrator.events import CommandFinished, EventBus, SessionAttached, StallDetected, StallGaveUp
from orchestrator.guards.stall import StallGuard
from orchestrator.guards.streak import FailureStreak
from orchestrator.model import CommandResult, CommandRow, ResultStatus, Running
from orchestrator.state.audit import AuditLog
from orchestrator.state.audit_read import read_events
from orchestrator.state.store import StateStore

from .engine_fakes import RecordingNotify, session, settings

S = "weather/bot"


def row(command_id: int = 1, attempts: int = 1, command: str = "sleep 600") -> CommandRow:
    return CommandRow(command_id, S, command, "running", "cli", "t", None, None, None, None, None, attempts, None)


def result(status: ResultStatus, exit_code: int | None) -> CommandResult:
    return CommandResult(exit_code, status, "a", "b", 0.1, "tail line")


Parts = tuple[ManualClock, StateStore, AuditLog, RecordingNotify]


@pytest.fixture
def parts(tmp_path: Path) -> Parts:
    clock = ManualClock()
    return (
        clock,
        StateStore(tmp_path / "s.db", clock=clock),
        AuditLog(tmp_path / "a.jsonl", clock=clock),
        RecordingNotify(),
    )


def test_stall_verdicts_follow_the_timeout_the_grace_and_the_retries(parts: Parts) -> None:
    clock, store, audit, notify = parts
    guard = StallGuard(
        settings(), store=store, audit=audit, notify=notify, clock=clock, sessions=[session(retry_safe=True)]
    )
    running = Running(row(attempts=1), "%0", sent_at=0.0, last_activity=0.0)
    assert guard.verdict(running, 9.9).action == "wait"
    verdict = guard.verdict(running, 10.0)
    assert (verdict.action, verdict.idle_s) == ("interrupt", 10.0)
    running.interrupt_sent_at = 10.0
    assert guard.verdict(running, 10.5).action == "wait"  # inside interrupt_grace_seconds
    assert guard.verdict(running, 11.0).action == "retry"  # attempt 1 of 1 retry
    last = Running(row(attempts=2), "%0", sent_at=0.0, last_activity=0.0, interrupt_sent_at=10.0)
    assert guard.verdict(last, 11.0).action == "give_up"
    assert guard.after_interrupt(last).action == "give_up"


def test_giving_up_alerts_with_the_time_waited_and_starts_a_cooldown(parts: Parts) -> None:
    clock, store, audit, notify = parts
    guard = StallGuard(settings(cooldown_seconds=5), store=store, audit=audit, notify=notify, clock=clock)
    bus = EventBus(raise_errors=True)
    guard.subscribe(bus)
    store.ensure_session(S, "weather:bot")
    bus.publish(StallDetected(S, row(), 10.0, ""))
    bus.publish(StallGaveUp(S, row(attempts=2), 2, 42.5, "waiting-for-weather-api"))
    [alert] = notify.sent
    assert (
        alert["title"] == f"命令卡顿 · {S}" and "42.5s" in alert["body"] and "waiting-for-weather-api" in alert["body"]
    )
    assert store.metadata(S)["stall_count"] == 1
    assert not guard.may_dispatch(S)
    assert store.metadata(S)["cooldown_until"] == iso_utc(clock.now() + 5)
    clock.advance(5)
    assert guard.may_dispatch(S)
    assert store.metadata(S)["cooldown_until"] is not None  # the gate only reads
    guard.tick()
    assert store.metadata(S)["cooldown_until"] is None
    assert [e["event"] for e in read_events(audit.path).events] == ["cooldown_started", "cooldown_ended"]


def test_a_stored_cooldown_is_honoured_and_a_bad_one_ignored(parts: Parts) -> None:
    clock, store, audit, notify = parts
    store.update_metadata(S, {"cooldown_until": iso_utc(clock.now() + 30)})
    store.update_metadata("other", {"cooldown_until": "tomorrow"})
    guard = StallGuard(settings(), store=store, audit=audit, notify=notify, clock=clock)
    bus = EventBus(raise_errors=True)
    guard.subscribe(bus)
    bus.publish(SessionAttached(S, "%0"))
    bus.publish(SessionAttached("other", "%1"))
    assert not guard.may_dispatch(S) and guard.may_dispatch("other")


def test_the_streak_counts_failures_only_and_alerts_once_per_streak(parts: Parts) -> None:
    _clock, store, audit, notify = parts
    metrics = OrchestratorMetrics()
    streak = FailureStreak([S], 2, store=store, audit=audit, metrics=metrics, notify=notify)
    bus = EventBus(raise_errors=True)
    streak.subscribe(bus)
    for status, code in (("failed", 1), ("stalled", None), ("cancelled", None)):
        bus.publish(CommandFinished(S, row(), result(status, code)))  # type: ignore[arg-type]
    assert store.metadata(S)["failure_streak"] == 1 and streak.may_dispatch(S)
    bus.publish(CommandFinished(S, row(2, command="false"), result("failed", 1)))
    bus.publish(CommandFinished(S, row(3), result("failed", 1)))
    assert store.metadata(S)["failure_streak"] == 3
    assert not streak.may_dispatch(S)
    [alert] = notify.sent
    assert alert["title"] == f"命令连续失败 · {S}" and "`false` → exit 1" in alert["body"]
    assert metrics.failure_streak.labels(session=S)._value.get() == 3
    events = [e["event"] for e in read_events(audit.path).events]
    assert events == ["failure_streak", "session_blocked"]


def test_the_streak_gauges_follow_the_db(parts: Parts) -> None:
    _clock, store, audit, notify = parts
    metrics = OrchestratorMetrics()
    streak = FailureStreak([S], 2, store=store, audit=audit, metrics=metrics, notify=notify)
    store.update_metadata(S, {"blocked": True, "failure_streak": 4})
    assert not streak.may_dispatch(S)
    assert metrics.blocked.labels(session=S)._value.get() == 0  # may_dispatch wrote nothing
    streak.tick()
    assert metrics.blocked.labels(session=S)._value.get() == 1
    assert metrics.failure_streak.labels(session=S)._value.get() == 4


def test_a_session_not_marked_retry_safe_gives_up_at_the_first_interrupt(parts: Parts) -> None:
    clock, store, audit, notify = parts
    guard = StallGuard(settings(), store=store, audit=audit, notify=notify, clock=clock, sessions=[session()])
    running = Running(row(attempts=1), "%0", sent_at=0.0, last_activity=0.0, interrupt_sent_at=10.0)
    assert guard.after_interrupt(running).action == "give_up"
