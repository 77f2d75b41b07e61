"""The supervisor loop: take each session's next queued command, deliver it through the
session's driver, and record its exact result when the driver's channel reports it.

One command at a time per pane, FIFO per session. The loop wakes on completion signals and
otherwise checks the queue every poll interval. Everything that happens is published as a typed
event (`orchestrator.events`); the audit trail, metrics, guards and decision assist subscribe.
The engine asks three kinds of questions and acts on the answers itself: gates (may this session
dispatch now?), the stall policy's verdict (wait, interrupt, retry, give up) and the
background's busy flag (for `--once`). It imports no guard, assist or adapter module.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence

from orchestrator.clock import Clock, SystemClock, iso_utc
from orchestrator.config import OrchestratorSettings, SessionConfig
from orchestrator.errors import TmuxUnavailable
from orchestrator.events import (
    CommandDispatched,
    CommandFinished,
    CommandRecovered,
    DispatchFailed,
    DryRunDispatch,
    EventBus,
    HeartbeatTick,
    OrchestratorStarted,
    OrchestratorStopped,
    SessionAttached,
    StallDetected,
    StallGaveUp,
    StallInterrupted,
    StallRetried,
)
from orchestrator.model import CommandResult, ExitRecord, ResultStatus, Running, SessionState, StallVerdict
from orchestrator.ports import Background, Driver, Gate, PaneIO, PaneLocator, StallPolicy, Ticker
from orchestrator.redact import redact
from orchestrator.state.store import StateStore

log = logging.getLogger("orchestrator")

LIVENESS_CHECK_SECONDS = 1.0
HEARTBEAT_WRITE_SECONDS = 2.0
NEVER_STARTED_GRACE_SECONDS = 2.0


class Supervisor:
    def __init__(
        self,
        sessions: Sequence[SessionConfig],
        settings: OrchestratorSettings,
        *,
        store: StateStore,
        driver: Driver,
        panes: PaneIO,
        locator: PaneLocator,
        bus: EventBus,
        stall: StallPolicy | None = None,
        gates: Sequence[Gate] = (),
        tickers: Sequence[Ticker] = (),
        background: Sequence[Background] = (),
        clock: Clock | None = None,
        dry_run: bool = False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.driver = driver
        self.panes = panes
        self.locator = locator
        self.bus = bus
        self.stall = stall
        self.gates = tuple(gates)
        self.tickers = tuple(tickers)
        self.background = tuple(background)
        self.clock = clock or SystemClock()
        self.dry_run = dry_run
        self.sessions = {s.name: SessionState(s) for s in sessions}
        self.stop_event = threading.Event()
        self._last_liveness = float("-inf")
        self._last_heartbeat_write = float("-inf")
        self._dry_run_seen: set[int] = set()

    # lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        """Find every session's pane, then resume whatever the DB says was running.

        A pane that does not exist is a user error (PaneNotFound, exit 2) raised before the
        loop starts.
        """
        for name, state in self.sessions.items():
            self.panes.resolve(state.config.target)  # PaneNotFound here is the user's error, exit 2
            pane_id = self.locator.pane_id(name) or ""
            self.store.ensure_session(name, state.config.target)
            self.bus.publish(SessionAttached(name, pane_id))
            log.info("session %s → pane %s", name, pane_id)
        self.bus.publish(OrchestratorStarted(len(self.sessions), self.dry_run))
        self._recover()

    def _recover(self) -> None:
        for row in self.store.running():
            state = self.sessions.get(row.session)
            if state is None:
                continue
            if self.driver.end_record(row.id) is not None or self.driver.started(row.id):
                mono = self.clock.monotonic()
                pane_id = self.locator.pane_id(row.session) or ""
                state.running = Running(row, pane_id, mono, self.driver.activity_marker(row.id), mono)
                self.driver.watch(row.id)
                self.bus.publish(CommandRecovered(row.session, row, "resumed waiting for result"))
                self._complete_if_ended(state)
            else:
                self.store.revert_to_queued(row.id)
                self.driver.discard(row.id)
                self.bus.publish(CommandRecovered(row.session, row, "never started; re-queued"))

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        self.driver.close()
        self.bus.publish(OrchestratorStopped())

    def run(self, once: bool = False) -> None:
        while not self.stop_event.is_set():
            self.step()
            if once and self.idle():
                break
            self._wait_for_signal(self.settings.poll_interval_seconds)

    # one turn of the loop ----------------------------------------------------
    def _wait_for_signal(self, timeout: float) -> None:
        try:
            command_id = self.driver.completions.get(timeout=timeout)
        except queue.Empty:
            return
        self._on_signal(command_id)

    def _on_signal(self, command_id: int) -> None:
        for state in self.sessions.values():
            if state.running and state.running.row.id == command_id:
                self._complete_if_ended(state)

    def _drain_signals(self) -> None:
        while True:
            try:
                self._on_signal(self.driver.completions.get_nowait())
            except queue.Empty:
                return

    def step(self) -> None:
        now = self.clock.now()
        self._drain_signals()
        mono = self.clock.monotonic()
        check_liveness = mono - self._last_liveness >= LIVENESS_CHECK_SECONDS
        if check_liveness:
            self._last_liveness = mono
        for state in self.sessions.values():
            if state.running:
                self._check_running(state, check_liveness)
        for ticker in self.tickers:
            ticker.tick()
        for state in self.sessions.values():
            name = state.config.name
            if state.running is None and self.may_dispatch(name) and self.store.next_queued(name):
                self._dispatch_next(state)
                self._drain_signals()  # a result never waits behind a round of sends
        depths = {n: d for n, d in self.store.queue_depths().items() if n in self.sessions}
        self.bus.publish(HeartbeatTick(now, depths))
        if now - self._last_heartbeat_write >= HEARTBEAT_WRITE_SECONDS:
            self._last_heartbeat_write = now
            for name in self.sessions:
                self.store.update_metadata(name, {"orchestrator_heartbeat": iso_utc(now)})

    def may_dispatch(self, session: str) -> bool:
        """Every gate agrees (a stall's cooldown, a failure streak's block). Gates only read."""
        return all(gate.may_dispatch(session) for gate in self.gates)

    def idle(self) -> bool:
        """Nothing runs and nothing more will be dispatched by itself (what `--once` waits for)."""
        if any(s.running for s in self.sessions.values()):
            return False
        if self.dry_run:
            return True
        if any(b.busy() for b in self.background):
            return False
        return not any(self.may_dispatch(name) and self.store.next_queued(name) for name in self.sessions)

    # dispatch ----------------------------------------------------------------
    def _dispatch_next(self, state: SessionState) -> None:
        name = state.config.name
        row = self.store.next_queued(name)
        if row is None:
            return
        if self.dry_run:
            if row.id not in self._dry_run_seen:
                self._dry_run_seen.add(row.id)
                self.bus.publish(DryRunDispatch(name, row))
            return
        pane_id = self._pane_for(state)
        if pane_id is None:
            return
        if not self.store.mark_running(row.id, iso_utc(self.clock.now())):
            return
        row = self.store.command(row.id) or row
        sent = self._deliver(state, row.id, pane_id)
        if sent is None:
            self.store.revert_to_queued(row.id)
            return
        state.dispatch_error = None
        mono = self.clock.monotonic()
        state.running = Running(row, sent, mono, 0, mono)
        depth = max(0, self.store.queue_depths().get(name, 1))
        self.bus.publish(CommandDispatched(name, row, depth))

    def _deliver(self, state: SessionState, command_id: int, pane_id: str) -> str | None:
        """Deliver; if the cached pane is gone, look the target up once more."""
        row = self.store.command(command_id)
        assert row is not None
        try:
            self.driver.deliver(row, pane_id)
            return pane_id
        except TmuxUnavailable:
            self.locator.forget(state.config.name)
        fresh = self._pane_for(state)
        if fresh is None:
            return None
        try:
            self.driver.deliver(row, fresh)
            return fresh
        except TmuxUnavailable as exc:
            self._dispatch_failed(state, "tmux_unavailable", str(exc))
            return None

    def _pane_for(self, state: SessionState) -> str | None:
        pane_id = self.locator.pane_id(state.config.name)
        if pane_id is None:
            self._dispatch_failed(state, "pane_not_found", f"no tmux pane for target '{state.config.target}'")
        return pane_id

    def _dispatch_failed(self, state: SessionState, reason: str, detail: str) -> None:
        """Keep the command queued; say so once per distinct problem, not every poll."""
        first = state.dispatch_error != detail
        state.dispatch_error = detail
        if first:
            log.warning("dispatch to %s failed (%s): %s; command stays queued", state.config.name, reason, detail)
        self.bus.publish(DispatchFailed(state.config.name, reason, detail, first))

    # watching a running command ----------------------------------------------
    def _check_running(self, state: SessionState, check_liveness: bool) -> None:
        running = state.running
        assert running is not None
        command_id = running.row.id
        marker = self.driver.activity_marker(command_id)
        if marker != running.last_activity_marker:
            running.last_activity_marker = marker
            running.last_activity = self.clock.monotonic()
        if self._complete_if_ended(state):
            return
        if self.stall is not None:
            self._carry_out(state, self.stall.verdict(running, self.clock.monotonic()))
        if state.running is None or not check_liveness:
            return
        if not self.driver.watching(command_id) and self.driver.end_record(command_id) is None:
            self.driver.watch(command_id)
        never_started = not self.driver.started(command_id)
        if never_started and self.clock.monotonic() - running.sent_at <= NEVER_STARTED_GRACE_SECONDS:
            return
        if not running.pane_id or not self.panes.pane_alive(running.pane_id):
            why = "pane closed before the command started" if never_started else "pane closed or tmux server gone"
            self._finish_without_exit(state, why)

    def _carry_out(self, state: SessionState, verdict: StallVerdict) -> None:
        running = state.running
        assert running is not None
        name, row = state.config.name, running.row
        if verdict.action == "interrupt":
            running.stalled_for = self.clock.monotonic() - running.sent_at
            self.bus.publish(StallDetected(name, row, verdict.idle_s, self.output_tail(running.row.id)))
            keys = state.config.interrupt_keys
            try:
                self.driver.interrupt(row.id, running.pane_id, keys)
            except TmuxUnavailable as exc:
                log.warning("could not interrupt %s: %s", name, exc)
            running.interrupt_sent_at = self.clock.monotonic()
            self.bus.publish(StallInterrupted(name, row, keys))
        elif verdict.action in ("retry", "give_up"):
            self._end_stalled(state, None, retry=verdict.action == "retry")

    def _end_stalled(self, state: SessionState, record: ExitRecord | None, *, retry: bool) -> None:
        """The interrupted command is over: queue it again, or give up (the guard alerts)."""
        running = state.running
        assert running is not None
        name, row = state.config.name, running.row
        if retry:
            self.release(state)
            self.store.revert_to_queued(row.id)
            self.bus.publish(StallRetried(name, row, row.attempts, self.settings.stall_retries_before_notify))
            return
        now = self.clock.now()
        tail = self.output_tail(row.id)
        waited = running.stalled_for
        result = CommandResult(
            exit_code=record.exit_code if record else None,
            status="stalled",
            started_at=iso_utc(record.started) if record else (row.started_at or iso_utc(now)),
            finished_at=iso_utc(record.finished if record else now),
            duration_s=round(record.finished - record.started if record else waited, 6),
            output_tail=tail,
        )
        self.record(state, result, detail=f"stalled after {row.attempts} attempt(s)")
        self.bus.publish(StallGaveUp(name, row, row.attempts, waited, tail))

    # completion ----------------------------------------------------------------
    def _complete_if_ended(self, state: SessionState) -> bool:
        running = state.running
        if running is None:
            return False
        record = self.driver.end_record(running.row.id)
        if record is None:
            return False
        if running.interrupt_sent_at is not None:
            assert self.stall is not None  # only the stall policy interrupts
            self._end_stalled(state, record, retry=self.stall.after_interrupt(running).action == "retry")
            return True
        status: ResultStatus = "succeeded" if record.exit_code == 0 else "failed"
        result = CommandResult(
            exit_code=record.exit_code,
            status=status,
            started_at=iso_utc(record.started),
            finished_at=iso_utc(record.finished),
            duration_s=round(max(0.0, record.finished - record.started), 6),
            output_tail=self.output_tail(running.row.id),
        )
        self.record(state, result, latency=max(0.0, self.clock.now() - record.finished))
        return True

    def _finish_without_exit(self, state: SessionState, why: str) -> None:
        running = state.running
        assert running is not None
        now = self.clock.now()
        result = CommandResult(
            exit_code=None,
            status="cancelled",
            started_at=running.row.started_at or iso_utc(now),
            finished_at=iso_utc(now),
            duration_s=round(max(0.0, self.clock.monotonic() - running.sent_at), 6),
            output_tail=self.output_tail(running.row.id, grace_seconds=0),
        )
        log.warning("command %s in %s ended cancelled: %s", running.row.id, state.config.name, why)
        self.record(state, result, detail=why)

    def output_tail(self, command_id: int, grace_seconds: float = 0.5) -> str:
        return redact(self.driver.output_tail(command_id, self.settings.output_tail_lines, grace_seconds))

    def release(self, state: SessionState) -> None:
        """Stop tracking the running command without recording a result."""
        if state.running is not None:
            self.driver.discard(state.running.row.id)
        state.running = None

    def record(
        self, state: SessionState, result: CommandResult, detail: str | None = None, latency: float | None = None
    ) -> None:
        """Write the result exactly once, then tell the subscribers."""
        running = state.running
        assert running is not None
        first = self.store.finish(running.row.id, result)
        state.running = None
        self.driver.discard(running.row.id)
        if first:
            self.bus.publish(CommandFinished(state.config.name, running.row, result, detail, latency))
