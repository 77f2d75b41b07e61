"""The supervisor in-process: a fake pane port and driver, the manual clock, a real SQLite store,
the real audit trail, metrics recorder, stall guard and failure streak wired as the composition
root wires them (decision assist left out: it has its own tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.adapters.metrics_recorder import MetricsRecorder
from orchestrator.adapters.panes import PaneDirectory
from orchestrator.clock import ManualClock
from orchestrator.config import OrchestratorSettings, SessionConfig
from orchestrator.engine.supervisor import Supervisor
from orchestrator.events import (
    CommandDispatched,
    CommandFinished,
    DispatchFailed,
    EventBus,
    StallDetected,
    StallGaveUp,
    StallRetried,
)
from orchestrator.guards.attention import AttentionGuard
from orchestrator.guards.stall import StallGuard
from orchestrator.guards.streak import FailureStreak
from orchestrator.ports import ApprovalPolicy, Ticker
from orchestrator.state.audit import AuditLog
from orchestrator.state.audit_read import read_events
from orchestrator.state.audit_trail import AuditTrail
from orchestrator.state.session_writer import SessionStateWriter
from orchestrator.state.store import StateStore

from .engine_fakes import EventLog, FakeDriver, FakePanes, RecordingNotify, session, settings

S = "weather/bot"


@dataclass
class Rig:
    sup: Supervisor
    store: StateStore
    driver: FakeDriver
    panes: FakePanes
    clock: ManualClock
    notify: RecordingNotify
    metrics: OrchestratorMetrics
    audit_path: Path
    log: EventLog

    def send(self, command: str, name: str = S) -> int:
        return self.store.enqueue(name, command)

    def status(self, command_id: int) -> str:
        row = self.store.command(command_id)
        assert row is not None
        return row.status

    def audit(self) -> list[str]:
        return [e["event"] for e in read_events(self.audit_path).events]

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.sup.step()


def make_rig(
    tmp_path: Path,
    sessions: list[SessionConfig] | None = None,
    cfg: OrchestratorSettings | None = None,
    started: frozenset[int] = frozenset(),
    missing: frozenset[str] = frozenset(),
    typed: frozenset[int] = frozenset(),
    approvals: ApprovalPolicy | None = None,
    late_tickers: tuple[Ticker, ...] = (),
) -> Rig:
    """`started`: commands whose start record the (restarted) pane already holds; `missing`:
    targets whose pane does not exist yet."""
    sessions = sessions or [session()]
    cfg = cfg or settings()
    clock = ManualClock()
    store = StateStore(tmp_path / "state.db", clock=clock)
    audit_path = tmp_path / "audit.jsonl"
    audit = AuditLog(audit_path, clock=clock)
    metrics = OrchestratorMetrics()
    notify = RecordingNotify()
    panes = FakePanes({s.target: f"%{i}" for i, s in enumerate(sessions)})
    panes.alive -= {panes.targets[t] for t in missing}
    driver = FakeDriver(panes, clock)
    driver._started.update(started)
    driver.typed.update(typed)
    bus = EventBus(raise_errors=True)
    stall = StallGuard(cfg, store=store, audit=audit, notify=notify, clock=clock, sessions=sessions)
    streak = FailureStreak(
        [s.name for s in sessions],
        cfg.failure_alert_threshold,
        store=store,
        audit=audit,
        metrics=metrics,
        notify=notify,
    )
    AuditTrail(audit).subscribe(bus)
    MetricsRecorder(metrics).subscribe(bus)
    SessionStateWriter(store).subscribe(bus)
    AttentionGuard(notify).subscribe(bus)
    stall.subscribe(bus)
    streak.subscribe(bus)
    log = EventLog(bus, CommandDispatched, CommandFinished, DispatchFailed, StallDetected, StallRetried, StallGaveUp)
    sup = Supervisor(
        sessions,
        cfg,
        store=store,
        driver=driver,
        panes=panes,
        locator=PaneDirectory(panes, sessions),
        bus=bus,
        stall=stall,
        approvals=approvals,
        gates=(stall, streak),
        tickers=(stall,),
        late_tickers=(streak, *late_tickers),
        clock=clock,
    )
    sup.start()
    return Rig(sup, store, driver, panes, clock, notify, metrics, audit_path, log)


def test_a_queued_command_is_delivered_and_its_exit_recorded_once(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    cid = rig.send("make test")
    rig.sup.step()
    assert rig.driver.delivered == [(cid, "%0")] and rig.status(cid) == "running"

    rig.driver.emit(cid, "ok")
    rig.driver.end(cid, 0, duration=0.25)
    rig.driver.completions.put(cid)  # a second signal for the same end changes nothing
    rig.sup.step()
    rig.sup.step()

    row = rig.store.command(cid)
    assert row is not None and (row.status, row.exit_code, row.output_tail) == ("succeeded", 0, "ok")
    assert row.duration_s == pytest.approx(0.25)
    last = rig.store.metadata(S)["last_command_result"]
    assert (last["command_id"], last["status"], last["exit_code"]) == (cid, "succeeded", 0)
    assert len(rig.log.of(CommandFinished)) == 1
    assert rig.audit().count("command_result") == 1
    assert rig.metrics.commands.labels(session=S, result="succeeded")._value.get() == 1


def test_non_zero_exit_is_failed_with_its_code(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    cid = rig.send("(exit 7)")
    rig.sup.step()
    rig.driver.end(cid, 7)
    rig.sup.step()
    row = rig.store.command(cid)
    assert row is not None and (row.status, row.exit_code) == ("failed", 7)


def test_one_command_at_a_time_in_fifo_order(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    first, second = rig.send("one"), rig.send("two")
    rig.sup.step()
    rig.sup.step()
    assert [cid for cid, _ in rig.driver.delivered] == [first]
    rig.driver.end(first, 0)
    rig.sup.step()
    assert [cid for cid, _ in rig.driver.delivered] == [first, second]
    depths = [e.queue_depth for e in rig.log.of(CommandDispatched)]  # type: ignore[attr-defined]
    assert depths == [1, 0]


def test_sessions_are_dispatched_independently(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, [session(), session("weather/api", "weather:api")])
    a, b = rig.send("a"), rig.send("b", "weather/api")
    rig.sup.step()
    assert sorted(rig.driver.delivered) == sorted([(a, "%0"), (b, "%1")])


def test_a_pane_closed_mid_command_ends_it_cancelled(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    cid = rig.send("sleep 60")
    rig.sup.step()
    rig.panes.alive.clear()
    rig.advance(1.5)
    row = rig.store.command(cid)
    assert row is not None and (row.status, row.exit_code) == ("cancelled", None)


def test_a_missing_pane_keeps_the_command_queued_and_says_so_once(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.panes.alive.clear()
    rig.sup.locator.forget(S)
    cid = rig.send("echo hi")
    for _ in range(3):
        rig.sup.step()
    assert rig.status(cid) == "queued"
    firsts = [e.first for e in rig.log.of(DispatchFailed)]  # type: ignore[attr-defined]
    assert firsts == [True, False, False]
    assert rig.audit().count("dispatch_failed") == 1


def test_a_failed_send_keeps_the_command_queued_and_looks_the_target_up_again(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.panes.fail_sends = 1
    rig.panes.targets["weather:bot"] = "%0"
    cid = rig.send("echo hi")
    rig.sup.step()
    assert rig.status(cid) == "queued" and rig.driver.forgotten == ["%0"]
    rig.sup.step()
    assert rig.status(cid) == "running" and rig.driver.delivered == [(cid, "%0")]
    assert rig.store.command(cid).attempts == 2  # type: ignore[union-attr]


def test_stall_interrupts_retries_then_alerts_and_cools_down(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, [session(retry_safe=True)])
    stuck, after = rig.send("sleep 600"), rig.send("echo recovered")
    rig.sup.step()
    rig.driver.emit(stuck, "waiting-for-weather-api")
    rig.advance(0.1)
    rig.advance(9.0)
    assert rig.driver.interrupts == []  # 9 s without output: not yet

    rig.advance(1.5)  # past the 10 s stall timeout
    assert rig.driver.interrupts == [(stuck, ("C-c",))]
    rig.advance(1.0)  # the grace runs out without an exit record: retry
    assert rig.status(stuck) == "running" and [c for c, _ in rig.driver.delivered] == [stuck, stuck]
    assert [e.attempt for e in rig.log.of(StallRetried)] == [1]  # type: ignore[attr-defined]

    rig.advance(10.5)
    rig.driver.end(stuck, 130)  # this time the interrupted command reports its end
    rig.sup.step()
    row = rig.store.command(stuck)
    assert row is not None and (row.status, row.exit_code, row.attempts) == ("stalled", 130, 2)
    [gave_up] = rig.log.of(StallGaveUp)
    assert gave_up.waited_s == pytest.approx(22.2, abs=0.2)  # type: ignore[attr-defined]  # both attempts
    [alert] = rig.notify.sent
    assert alert["title"] == f"命令卡顿 · {S}" and "sleep 600" in alert["body"] and "waited" in alert["body"]
    assert rig.store.metadata(S)["stall_count"] == 2

    rig.advance(4.0)  # inside the 5 s cooldown: the next command waits
    assert rig.status(after) == "queued"
    rig.advance(1.5)
    assert rig.status(after) == "running"
    assert rig.store.metadata(S)["cooldown_until"] is None
    events = rig.audit()
    assert events.index("cooldown_started") < events.index("cooldown_ended")


def test_output_keeps_a_long_command_from_stalling(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    cid = rig.send("make build")
    rig.sup.step()
    for i in range(30):
        rig.driver.emit(cid, f"step {i}")
        rig.advance(2.0)
    assert rig.driver.interrupts == [] and rig.status(cid) == "running"


def test_without_retries_a_stall_gives_up_after_the_first_interrupt(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, cfg=settings(stall_retries_before_notify=0))
    cid = rig.send("sleep 600")
    rig.sup.step()
    rig.advance(10.5)
    rig.advance(1.0)
    row = rig.store.command(cid)
    assert row is not None and (row.status, row.exit_code) == ("stalled", None)
    assert len(rig.notify.sent) == 1


def test_a_cooldown_survives_a_restart(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, cfg=settings(stall_retries_before_notify=0))
    cid = rig.send("sleep 600")
    rig.sup.step()
    rig.advance(10.5)
    rig.advance(1.0)
    assert rig.status(cid) == "stalled"
    until = rig.store.metadata(S)["cooldown_until"]
    assert until

    again = make_rig(tmp_path, cfg=settings(stall_retries_before_notify=0))
    again.clock.advance(rig.clock.now() - again.clock.now())  # the same wall clock as the first run
    nxt = again.send("echo next")
    again.sup.step()
    assert again.status(nxt) == "queued"
    again.advance(5.0)
    assert again.status(nxt) == "running"


def test_gates_and_idle_have_no_side_effects(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, cfg=settings(stall_retries_before_notify=0))
    rig.send("sleep 600")
    rig.sup.step()
    rig.advance(10.5)
    rig.advance(1.0)  # a cooldown is running now
    rig.send("echo later")
    before = (rig.store.metadata(S), rig.audit())
    rig.clock.advance(100)  # the cooldown is over, but only tick() may record that
    for _ in range(3):
        assert rig.sup.may_dispatch(S)
        assert not rig.sup.idle()
    assert (rig.store.metadata(S), rig.audit()) == before


def test_a_failure_streak_blocks_alerts_once_and_unblock_resumes(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, cfg=settings(failure_alert_threshold=2))
    ids = [rig.send("false") for _ in range(3)]
    for cid in ids[:2]:
        rig.sup.step()
        rig.driver.end(cid, 1)
        rig.sup.step()
    assert rig.store.metadata(S)["blocked"] is True
    assert rig.store.metadata(S)["failure_streak"] == 2
    rig.sup.step()
    assert rig.status(ids[2]) == "queued"  # blocked: waits, is not lost
    assert [n["title"] for n in rig.notify.sent] == [f"命令连续失败 · {S}"]
    assert rig.metrics.blocked.labels(session=S)._value.get() == 1

    rig.store.update_metadata(S, {"blocked": False, "failure_streak": 0})  # what `tmux-agent unblock` writes
    rig.sup.step()
    assert rig.status(ids[2]) == "running"
    assert rig.metrics.blocked.labels(session=S)._value.get() == 0


def test_a_success_resets_the_streak(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, cfg=settings(failure_alert_threshold=2))
    for code in (1, 0, 1):
        cid = rig.send("x")
        rig.sup.step()
        rig.driver.end(cid, code)
        rig.sup.step()
    assert rig.store.metadata(S)["failure_streak"] == 1 and not rig.store.metadata(S).get("blocked")
    assert rig.notify.sent == []


def test_a_bad_stored_streak_is_counted_from_zero(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, cfg=settings(failure_alert_threshold=2))
    rig.store.update_metadata(S, {"failure_streak": "abc", "blocked": "no"})
    cid = rig.send("false")
    rig.sup.step()
    assert rig.status(cid) == "running"  # "no" is not a block
    rig.driver.end(cid, 1)
    rig.sup.step()
    assert rig.store.metadata(S)["failure_streak"] == 1


def test_recovery_resumes_a_started_command_and_never_retypes_one_that_did_not_start(tmp_path: Path) -> None:
    two = [session(), session("weather/api", "weather:api")]
    rig = make_rig(tmp_path, two)
    started, lost = rig.send("sleep 5"), rig.send("sleep 5", "weather/api")
    rig.driver.starts_on_delivery = False
    rig.sup.step()

    again = make_rig(tmp_path, two, started=frozenset({started}), typed=frozenset({lost}))
    assert again.driver.delivered == []  # nothing typed again
    assert again.status(lost) == "running"  # its line may still sit in a busy shell's input
    again.advance(3.0)
    assert again.status(lost) == "running"  # the shell is still busy: keep waiting
    again.driver.shell_is_idle = True
    again.advance(1.0)
    row = again.store.command(lost)
    assert row is not None and row.status == "cancelled" and again.driver.delivered == []
    again.driver.end(started, 0)
    again.sup.step()
    assert again.status(started) == "succeeded"


def test_a_command_whose_line_was_never_typed_is_queued_again_after_a_restart(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    cid = rig.send("echo once")
    rig.store.mark_running(cid, "2026-01-01T00:00:00.000000Z")  # the previous run died right here
    again = make_rig(tmp_path)
    assert again.status(cid) == "queued"
    again.sup.step()
    assert again.driver.delivered == [(cid, "%0")]


def test_a_line_that_did_not_start_its_command_is_cancelled_not_accepted(tmp_path: Path) -> None:
    """A result needs the attempt's own start record: a typed line that ran something else (text
    already on the prompt) ends cancelled once the shell is back at its prompt."""
    rig = make_rig(tmp_path)
    rig.driver.starts_on_delivery = False
    cid = rig.send("echo from-orchestrator")
    rig.sup.step()
    rig.driver.end(cid, 0)  # an exit without a start record is not a result
    rig.sup.step()
    assert rig.status(cid) == "running"
    rig.driver.shell_is_idle = True
    rig.advance(2.5)
    row = rig.store.command(cid)
    assert row is not None and (row.status, row.exit_code) == ("cancelled", None)


def test_without_retry_safe_a_stall_is_not_run_again(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)  # retry_safe defaults to false
    cid = rig.send("deploy --once")
    rig.sup.step()
    rig.advance(10.5)
    rig.advance(1.0)
    row = rig.store.command(cid)
    assert row is not None and (row.status, row.attempts) == ("stalled", 1)
    assert [c for c, _ in rig.driver.delivered] == [cid]


def test_a_question_is_not_a_stall_and_a_reply_is_typed(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    cid = rig.send("read -p 'continue? [y/N] ' ans")
    rig.sup.step()
    rig.driver.asking.add(cid)
    for _ in range(40):  # 40 s: four stall timeouts
        rig.advance(1.0)
    assert rig.driver.interrupts == [] and rig.status(cid) == "running"
    meta = rig.store.metadata(S)
    assert meta["state"] == "waiting_input" and meta["running"]["question"] == "continue? [y/N]"
    assert [n["title"] for n in rig.notify.sent] == [f"需要输入 · {S}"]
    assert rig.audit().count("input_requested") == 1

    rig.store.update_metadata(S, {"pending_reply": {"text": "y", "queued_at": "x"}})
    rig.driver.asking.discard(cid)
    rig.sup.step()
    assert rig.driver.replies == [("%0", "y")]
    assert rig.store.metadata(S)["pending_reply"] is None
    assert rig.store.metadata(S)["state"] == "working"
    rig.advance(9.0)
    assert rig.driver.interrupts == []  # the stall clock started again at the answer
    rig.advance(1.5)
    assert rig.driver.interrupts == [(cid, ("C-c",))]


def test_a_missing_pane_at_start_leaves_the_other_sessions_running(tmp_path: Path) -> None:
    two = [session(), session("weather/api", "weather:api")]
    rig = make_rig(tmp_path, two, missing=frozenset({"weather:api"}))
    assert rig.store.metadata("weather/api")["state"] == "pane_missing"
    a, b = rig.send("echo a"), rig.send("echo b", "weather/api")
    rig.sup.step()
    assert rig.status(a) == "running" and rig.status(b) == "queued"
    assert rig.metrics.session_state.labels(session="weather/api", state="pane_missing")._value.get() == 1
    rig.panes.alive.add("%1")  # the pane appears
    rig.advance(2.5)
    assert rig.status(b) == "running"
    assert rig.store.metadata("weather/api")["state"] == "working"
    assert rig.audit().count("session_state") >= 1


def test_a_restarted_tmux_server_is_never_taken_for_the_old_one(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.sup.step()
    rig.advance(1.1)  # a liveness round learns the server's identity
    rig.panes.identity = "200 2"  # a new server; its %0 may be another session's pane
    rig.panes.targets["weather:bot"] = "%7"
    rig.panes.alive.add("%7")
    rig.advance(1.1)
    cid = rig.send("echo hi")
    rig.sup.step()
    assert rig.driver.delivered == [(cid, "%7")]


def test_a_server_restarted_between_liveness_rounds_is_caught_before_typing(tmp_path: Path) -> None:
    """No liveness round has run since the restart: the cached %0 is another session's pane now,
    and the target is looked up again right before anything is typed."""
    rig = make_rig(tmp_path)
    rig.sup.step()
    rig.panes.identity = "200 2"
    rig.panes.targets["weather:bot"] = "%7"
    rig.panes.alive.add("%7")  # %0 still answers: on the new server it is someone else's pane
    cid = rig.send("echo hi")
    rig.sup.step()
    rig.sup.step()
    assert rig.driver.delivered == [(cid, "%7")]
    assert "%0" in rig.driver.forgotten


def test_once_mode_is_idle_when_the_queues_are_drained(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    cid = rig.send("true")
    assert not rig.sup.idle()
    rig.sup.step()
    assert not rig.sup.idle()
    rig.driver.end(cid, 0)
    rig.sup.step()
    assert rig.sup.idle()


def test_a_question_that_starts_between_liveness_rounds_is_still_not_a_stall(tmp_path: Path) -> None:
    """The stall timeout may run out between two liveness rounds: the engine asks the driver about
    input before it interrupts, not only once a round."""
    rig = make_rig(tmp_path)
    cid = rig.send("read -p 'continue? [y/N] ' ans")
    rig.sup.step()
    for _ in range(14):  # 0.7 s steps: a liveness round every other step, the last at 9.8 s
        rig.advance(0.7)
    rig.driver.asking.add(cid)  # the question appears right after that round
    rig.advance(0.7)  # 10.5 s without output: past the timeout, not a liveness round
    assert rig.driver.interrupts == []
    assert rig.store.metadata(S)["state"] == "waiting_input"


def test_the_question_is_in_metadata_before_the_state_says_waiting_input(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    seen: list[object] = []
    original = rig.store.update_metadata

    def spy(name: str, changes: dict[str, object]) -> None:
        original(name, changes)
        if changes.get("state") == "waiting_input":
            running = rig.store.metadata(name).get("running")
            seen.append(running.get("question") if isinstance(running, dict) else None)

    rig.store.update_metadata = spy  # type: ignore[method-assign]
    cid = rig.send("read -p 'continue? [y/N] ' ans")
    rig.sup.step()
    rig.driver.asking.add(cid)
    rig.advance(1.0)
    assert seen == ["continue? [y/N]"]


def test_a_pane_ready_in_a_moment_is_looked_at_again_soon_then_less_often(tmp_path: Path) -> None:
    """A probe that says "ready in a moment" (a prompt being drawn) makes the loop look again
    after half a millisecond, then 1, 2 and 3 ms while it still is not ready; a round with
    nothing soon goes back to the poll interval, and the next "soon" starts close again."""
    from orchestrator.engine.supervisor import SOON_SECONDS
    from orchestrator.model import Readiness

    rig = make_rig(tmp_path)
    rig.send("echo queued")
    rig.driver.readiness = Readiness(False, "idle", "the shell is busy drawing its prompt", soon=True)
    waits = []
    for _ in range(5):
        rig.sup.step()
        waits.append(rig.sup._next_wait())
    assert waits == [*SOON_SECONDS, SOON_SECONDS[-1]] == [0.0005, 0.001, 0.002, 0.003, 0.003]
    rig.driver.readiness = Readiness(False, "idle", "the command line holds typed text")
    rig.sup.step()
    assert rig.sup._next_wait() == rig.sup.settings.poll_interval_seconds
    rig.driver.readiness = Readiness(False, "idle", "the shell is busy drawing its prompt", soon=True)
    rig.sup.step()
    assert rig.sup._next_wait() == SOON_SECONDS[0]


def test_a_fleet_of_settled_shell_commands_is_looked_at_twice_a_second_and_ends_at_once(tmp_path: Path) -> None:
    """While every running command is a started shell command waiting on nothing but its end
    (past its first seconds), the loop waits up to IDLE_WAIT_SECONDS between rounds instead of the
    poll interval: the end is its own signal (the completion queue), a `send` rings. Something
    queued, or a question the command asks, brings the poll interval back."""
    from orchestrator.engine.supervisor import IDLE_WAIT_SECONDS
    from orchestrator.engine.watch import NEVER_STARTED_GRACE_SECONDS

    rig = make_rig(tmp_path, sessions=[session(S), session("b/two")])
    poll = rig.sup.settings.poll_interval_seconds
    first = rig.send("sleep 3600")
    rig.sup.step()
    assert rig.status(first) == "running" and rig.sup._next_wait() == poll  # in its first seconds
    rig.advance(NEVER_STARTED_GRACE_SECONDS + 0.1)
    settled = min(IDLE_WAIT_SECONDS, rig.sup.settings.idle_probe_seconds)
    assert settled > poll and rig.sup._next_wait() == settled
    queued = rig.send("echo next", name="b/two")
    rig.sup.step()  # b/two's command is typed now: in its first seconds again
    assert rig.status(queued) == "running" and rig.sup._next_wait() == poll
    rig.advance(NEVER_STARTED_GRACE_SECONDS + 0.1)
    assert rig.sup._next_wait() == settled
    running = rig.sup.sessions[S].running
    assert running is not None
    running.waiting_since = rig.clock.monotonic()  # the command asks a question
    rig.sup.step()
    assert rig.sup._next_wait() == poll


def test_a_queued_command_is_typed_before_the_rounds_fleet_wide_looks(tmp_path: Path) -> None:
    """The round dispatches what is queued before the work that never decides whether a command
    may go (the streak gauges, decision assist, which re-reads every session after any commit):
    a `send` into a large fleet is typed without waiting for those looks."""
    seen: list[list[int]] = []

    class Look:
        def tick(self) -> None:
            seen.append([command_id for command_id, _ in rig.driver.delivered])

    rig = make_rig(tmp_path, late_tickers=(Look(),))
    command_id = rig.send("echo hi")
    rig.sup.step()
    assert seen == [[command_id]]


def test_a_ring_that_lands_during_a_round_gets_a_round_of_its_own(tmp_path: Path) -> None:
    """A `send` from another process commits and rings while a round is under way, after the
    round read the queue: the round drains the ring (it drains the signal queue between sessions
    so a result never waits) but cannot see the command. The loop must go round again at once,
    not sleep the quiet wait (it did: half a second for that send)."""
    from orchestrator.model import Readiness
    from orchestrator.state.wake import WAKE

    rig = make_rig(tmp_path, sessions=[session(S), session("b/two", "b:two")])
    rig.advance(5.0)
    other = StateStore(rig.store.path)  # the CLI's own connection
    queued: list[int] = []
    probe = rig.driver.probe

    def probe_then_send(pane_id: str, *, dispatch: bool = True) -> Readiness:
        if not queued:  # the first idle probe of the round: the send lands now
            queued.append(other.enqueue(S, "echo late"))
            rig.driver.completions.put(WAKE)
        return probe(pane_id, dispatch=dispatch)

    rig.driver.probe = probe_then_send  # type: ignore[method-assign]
    rig.clock.advance(rig.sup.settings.idle_probe_seconds)  # a beat: the round probes the idle panes
    rig.sup.step()
    assert queued and rig.status(queued[0]) == "queued"  # this round read the queue before the send
    assert rig.sup._next_wait() == 0.0
    rig.sup.step()
    assert rig.status(queued[0]) == "running"
