"""The supervisor loop: take each session's next queued command, deliver it through the
session's driver, and record its exact result when the driver's channel reports it.

One command at a time per pane, FIFO per session, and only into a pane the driver says is ready
(its shell at an empty prompt). The loop wakes on completion signals and on the queue's doorbell
(`tmux-agent send` rings it after its commit, `orchestrator.state.wake`), and otherwise checks
every poll interval, so a lost ring costs one poll, never a command. A round reads the DB once
(`Store.round`): an idle round is one statement whatever the number of sessions, and the
queue depths come from a table the store's triggers keep, not a count of the queue. Everything that happens is published as a typed event (`orchestrator.events`);
the audit trail, metrics, guards and decision assist subscribe. The engine asks questions and
acts on the answers itself: gates (may this session dispatch now?), the stall policy's verdict
(wait, interrupt, retry, give up), the driver's readiness and input probes, and the background's
busy flag (for `--once`). It imports no guard, assist, driver or adapter module.

Sessions are independent: a missing pane makes that session `pane_missing` while the others
run, and it is found again when the pane appears (a restarted tmux server included: its pane ids
are not trusted, the targets are looked up again).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace

from orchestrator.clock import Clock, SystemClock, iso_utc, next_beat
from orchestrator.config import OrchestratorSettings, SessionConfig
from orchestrator.engine.watch import RunningWatch
from orchestrator.errors import PaneNotFound, TmuxUnavailable
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
    SessionStateChanged,
)
from orchestrator.model import CommandResult, Running, SessionState, SessionStateName
from orchestrator.ports import ApprovalPolicy, Background, Driver, Gate, PaneIO, PaneLocator, StallPolicy, Ticker
from orchestrator.state.db_faults import StateDBError
from orchestrator.state.port import Store
from orchestrator.state.wake import WAKE, Doorbell

log = logging.getLogger("orchestrator")

LIVENESS_CHECK_SECONDS = 1.0
HEARTBEAT_WRITE_SECONDS = 2.0
DB_RETRY_MAX_SECONDS = 2.0  # the longest wait between rounds while the state DB refuses
IDLE_WAIT_SECONDS = 0.5  # the longest sleep between rounds of a quiet loop (see _next_wait)
# The next looks at a pane that is ready in a moment (see Readiness.soon): a shell draws its
# prompt a fraction of a millisecond to a few milliseconds after a command's end, so the looks
# start close and spread out (a failed look costs a few /proc reads).
SOON_SECONDS = (0.0005, 0.001, 0.002, 0.003)


class Supervisor:
    def __init__(
        self,
        sessions: Sequence[SessionConfig],
        settings: OrchestratorSettings,
        *,
        store: Store,
        driver: Driver,
        drivers: Mapping[str, Driver] | None = None,
        completions: queue.Queue[int] | None = None,
        panes: PaneIO,
        locator: PaneLocator,
        bus: EventBus,
        stall: StallPolicy | None = None,
        approvals: ApprovalPolicy | None = None,
        gates: Sequence[Gate] = (),
        tickers: Sequence[Ticker] = (),
        late_tickers: Sequence[Ticker] = (),
        background: Sequence[Background] = (),
        clock: Clock | None = None,
        dry_run: bool = False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.driver = driver
        self.drivers = dict(drivers or {})
        self.completions = completions if completions is not None else driver.completions
        self.panes = panes
        self.locator = locator
        self.bus = bus
        self.gates = tuple(gates)
        self.tickers = tuple(tickers)  # before the round's dispatches (a cooldown's end is logged first)
        # after them: work that never decides whether a command may go now (gauges, decision
        # assist), so a send is typed without waiting for a fleet-wide look
        self.late_tickers = tuple(late_tickers)
        self.background = tuple(background)
        self.clock = clock or SystemClock()
        self.dry_run = dry_run
        self.sessions = {s.name: SessionState(s) for s in sessions}
        self.watch = RunningWatch(self, stall, approvals)
        self.stop_event = threading.Event()
        self._last_liveness = float("-inf")
        self._last_heartbeat_write = float("-inf")
        self._next_probe: dict[str, float] = {}
        self._dry_run_seen: set[int] = set()
        self._db_failures = 0
        self._soon = False  # a session with work queued will be ready in a moment: look again soon
        self._soon_looks = 0  # looks in a row that found it not ready yet (see SOON_SECONDS)
        self._rung = False  # the doorbell rang during a round, after the round read the queue
        self._quiet = False  # the last round found nothing running, queued or in the background
        self._settled = False  # … nothing queued or in the background, and what runs is settled
        self.doorbell = Doorbell(store.path, self.completions)

    # lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        """Find the sessions' panes, then resume whatever the DB says was running.

        A session whose pane is missing is `pane_missing` and the others run; when no session's
        pane exists at all the configuration names the wrong server or targets: PaneNotFound
        (one line, exit 2) before the loop starts.
        """
        missing: list[PaneNotFound] = []
        for name, state in self.sessions.items():
            self.store.ensure_session(name, state.config.target)
            self.store.update_metadata(name, {"kind": state.config.kind, "provider": state.config.provider})
            try:
                self.panes.resolve(state.config.target)
            except PaneNotFound as exc:
                missing.append(exc)
                self.set_state(state, "pane_missing", exc.detail)
                continue
            pane_id = self.locator.pane_id(name) or ""
            self.bus.publish(SessionAttached(name, pane_id, state.config.kind, state.config.provider or ""))
            self.bus.publish(SessionStateChanged(name, state.state, state.state, "attached"))
            log.info("session %s → pane %s", name, pane_id)
        if missing and len(missing) == len(self.sessions):
            raise missing[0]
        self.bus.publish(OrchestratorStarted(len(self.sessions), self.dry_run))
        self._recover()

    def _recover(self) -> None:
        """A command that started is waited on; one that was typed but never started is waited on
        too — its line may still sit in the shell's input — and never typed again; one that was
        never typed goes back to the queue."""
        for row in self.store.running():
            state = self.sessions.get(row.session)
            if state is None:
                continue
            pane_id = self.locator.pane_id(row.session) or ""
            driver = self.driver_for(row.session)
            if not driver.adopt(row, pane_id):
                self.store.revert_to_queued(row.id)
                self.bus.publish(CommandRecovered(row.session, row, "never typed; re-queued"))
                continue
            started = driver.started(row.id) or driver.end_record(row.id) is not None
            mono = self.clock.monotonic()
            state.running = Running(row, pane_id, mono, driver.activity_marker(row.id), mono)
            driver.watch(row.id)
            self.watch.first_sent.setdefault(row.id, mono)
            detail = "resumed waiting for result" if started else "typed before a restart; waiting, not re-typed"
            self.bus.publish(CommandRecovered(row.session, row, detail))
            self.set_state(state, "working")
            self.watch.complete_if_ended(state)

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        for driver in {id(d): d for d in (self.driver, *self.drivers.values())}.values():
            driver.close()
        self.bus.publish(OrchestratorStopped())

    def run(self, once: bool = False) -> None:
        """The loop, with the doorbell listening while it runs (what a ring finds queued before
        it listens, the first round finds anyway)."""
        self.doorbell.open()
        try:
            while not self.stop_event.is_set():
                try:
                    self.step()
                    if once and self.idle():
                        break
                    self._wait_for_signal(self._next_wait())
                except StateDBError as exc:
                    self._db_fault(exc)
                else:
                    self._db_failures = 0
        finally:
            self.doorbell.close()

    def _db_fault(self, exc: StateDBError) -> None:
        """The loop's one boundary for state DB faults (a full disk, a lock held past the busy
        timeout, an I/O error). The store has counted it and logged it once for the episode; a
        broken file stops the service (one line, exit 2); anything else is waited out and the
        round done again. A write that failed was rolled back whole and its cause is still there
        (the command still queued, the exit record still on disk), so the retry does it once."""
        if exc.fatal:
            raise exc
        self._db_failures += 1
        backoff = self.settings.poll_interval_seconds * 2 ** min(self._db_failures, 8)
        self.stop_event.wait(min(DB_RETRY_MAX_SECONDS, backoff))

    def _next_wait(self) -> float:
        """How long the loop may sleep when nothing signals: milliseconds when a pane is ready in
        a moment, the poll interval while anything runs, is queued or is being worked on in the
        background, and longer when all is quiet — a `send` rings the doorbell and a command's
        end is its own signal, so a quiet fleet costs a round every IDLE_WAIT_SECONDS, not ten
        a second. A fleet whose running commands are all settled (see `RunningWatch.settled`)
        waits as long: what it waits for wakes the loop itself, and its slow clocks (a stall's
        timeout, the once-a-second liveness look) need no tenth of a second."""
        if self._rung:  # what the ring announced is in no snapshot this round read: look now
            self._rung = False
            return 0.0
        if self._soon:
            self._soon_looks += 1
            return SOON_SECONDS[min(self._soon_looks, len(SOON_SECONDS)) - 1]
        self._soon_looks = 0
        poll = self.settings.poll_interval_seconds
        if not (self._quiet or self._settled):
            return poll
        return max(poll, min(IDLE_WAIT_SECONDS, self.settings.idle_probe_seconds))

    # one turn of the loop ----------------------------------------------------
    def _wait_for_signal(self, timeout: float) -> None:
        try:
            command_id = self.completions.get(timeout=timeout)
        except queue.Empty:
            return
        self._on_signal(command_id)

    def _on_signal(self, command_id: int) -> None:
        if command_id == WAKE:  # the doorbell: the round that follows looks at the queue
            return
        for state in self.sessions.values():
            if state.running and state.running.row.id == command_id:
                self.watch.complete_if_ended(state)

    def _drain_signals(self) -> None:
        """Inside a round: results are recorded at once; a ring (a `send` committed meanwhile,
        perhaps after this round read the queue) earns the loop another round right away."""
        while True:
            try:
                command_id = self.completions.get_nowait()
            except queue.Empty:
                return
            self._rung = self._rung or command_id == WAKE
            self._on_signal(command_id)

    def step(self) -> None:
        with self.store.round():
            self._step()

    def _step(self) -> None:
        self._soon = False
        now = self.clock.now()
        self._drain_signals()
        mono = self.clock.monotonic()
        check_liveness = mono - self._last_liveness >= LIVENESS_CHECK_SECONDS
        if check_liveness:
            self._last_liveness = mono
            self.watch.new_liveness_round()
            if self.locator.refresh():
                self._server_changed()
        for state in self.sessions.values():
            if state.running:
                self.watch.check(state, check_liveness)
        for ticker in self.tickers:
            ticker.tick()
        # sessions with work queued first (config order within each group): what a ring woke
        # the loop for is typed before the round probes the idle panes
        queued = self.store.queue_depths()  # one read for the round (a dispatch changes only its own)
        for state in sorted(self.sessions.values(), key=lambda s: queued.get(s.config.name, 0) == 0):
            if state.running is None:
                self._consider(state, mono, queued.get(state.config.name, 0) > 0)
                self._drain_signals()  # a result never waits behind a round of sends
        for ticker in self.late_tickers:
            ticker.tick()
        depths = {n: d for n, d in self.store.queue_depths().items() if n in self.sessions}
        calm = not any(d > 0 for d in depths.values()) and not any(b.busy() for b in self.background)
        running = [s for s in self.sessions.values() if s.running]
        self._quiet = calm and not running
        self._settled = calm and all(self.watch.settled(s) for s in running)
        self.bus.publish(HeartbeatTick(now, depths))
        if now - self._last_heartbeat_write >= HEARTBEAT_WRITE_SECONDS:
            self._last_heartbeat_write = now
            self.store.write_heartbeat(list(self.sessions), iso_utc(now))

    def _server_changed(self) -> None:
        log.warning("the tmux server was restarted: looking every session's pane up again")
        for state in self.sessions.values():
            if state.running and state.running.pane_id:
                self.driver_for(state.config.name).forget_pane(state.running.pane_id)
        for name in self.sessions:
            pane = self.locator.pane_id(name)
            if pane:
                self.driver_for(name).forget_pane(pane)

    def _consider(self, state: SessionState, mono: float, queued: bool) -> None:
        """An idle session: dispatch its next command if every gate and the pane agree; otherwise
        keep its state current (probing a quiet pane only every `idle_probe_seconds`)."""
        name = state.config.name
        closed = next((g for g in self.gates if not g.may_dispatch(name)), None)
        if closed is not None:
            self.set_state(state, closed.closed_state)
            return
        if not queued and mono < self._next_probe.get(name, float("-inf")):
            return
        self._next_probe[name] = next_beat(mono, self.settings.idle_probe_seconds)  # every idle pane at once
        if queued and self.dry_run:
            self._dispatch_next(state, "")
            return
        pane_id = self._pane_for(state, report=queued)
        if pane_id is None:
            return
        driver = self.driver_for(name)
        readiness = driver.probe(pane_id, dispatch=queued)
        if readiness.state == "pane_missing":
            self.locator.forget(name)
            driver.forget_pane(pane_id)
        self.set_state(state, readiness.state, readiness.detail)
        if queued and readiness.soon:
            self._soon = True
            self._next_probe.pop(name, None)
        if readiness.ready and queued and self._still_the_target(state, pane_id):
            self._dispatch_next(state, pane_id)

    def _still_the_target(self, state: SessionState, pane_id: str) -> bool:
        """Right before typing, ask tmux again which pane the target names. A cached id is not
        proof: a tmux server restarted since the last liveness round numbers its panes from %0
        again, so the id may now be another session's pane. If it moved, look again next round."""
        name = state.config.name
        try:
            current: str | None = self.panes.resolve(state.config.target).pane_id
        except PaneNotFound:
            current = None
        if current == pane_id:
            return True
        log.warning(
            "%s: target %s now names pane %s, not %s; looking again", name, state.config.target, current, pane_id
        )
        self.locator.forget(name)
        self.driver_for(name).forget_pane(pane_id)
        self._next_probe.pop(name, None)
        return False

    def driver_for(self, session: str) -> Driver:
        """The session's driver: its kind's (an agent session has its own), else the default."""
        return self.drivers.get(session, self.driver)

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
        depths = self.store.queue_depths()
        return not any(
            depths.get(name, 0) > 0
            and self.may_dispatch(name)
            and s.state not in ("pane_missing", "unsupported", "exited")
            for name, s in self.sessions.items()
        )

    def set_state(self, state: SessionState, new: SessionStateName, detail: str = "") -> None:
        if (state.state, state.state_detail) == (new, detail):
            return
        previous = state.state
        state.state, state.state_detail = new, detail
        if previous == "pane_missing" and new != "pane_missing":
            pane = self.locator.pane_id(state.config.name)
            if pane:
                self.bus.publish(
                    SessionAttached(state.config.name, pane, state.config.kind, state.config.provider or "")
                )
        self.bus.publish(SessionStateChanged(state.config.name, new, previous, detail))

    # dispatch ----------------------------------------------------------------
    def _dispatch_next(self, state: SessionState, pane_id: str) -> None:
        name = state.config.name
        row = self.store.next_queued(name)
        if row is None:
            return
        if self.dry_run:
            if row.id not in self._dry_run_seen:
                self._dry_run_seen.add(row.id)
                self.bus.publish(DryRunDispatch(name, row))
            return
        # read before the line is typed: once it is, nothing may stop its dispatch being told (a
        # DB that fails from then on must not lose the command_dispatched line, nor the command)
        depth_after = max(self.store.queue_depth(name) - 1, 0)
        started_at = iso_utc(self.clock.now())
        if not self.store.mark_running(row.id, started_at):
            return
        row = replace(row, status="running", started_at=started_at, attempts=row.attempts + 1)  # what it wrote
        driver = self.driver_for(name)
        try:
            driver.deliver(row, pane_id)
        except TmuxUnavailable as exc:
            self.store.revert_to_queued(row.id)
            self.locator.forget(name)
            driver.forget_pane(pane_id)
            self._dispatch_failed(state, "tmux_unavailable", str(exc))
            return
        state.dispatch_error = None
        mono = self.clock.monotonic()
        state.running = Running(row, pane_id, mono, driver.activity_marker(row.id), mono)
        self.watch.first_sent.setdefault(row.id, mono)
        with self.store.batch():  # what the subscribers write about the dispatch: one commit
            self.bus.publish(CommandDispatched(name, row, depth_after))
            self.set_state(state, "working")

    def _pane_for(self, state: SessionState, report: bool) -> str | None:
        pane_id = self.locator.pane_id(state.config.name)
        if pane_id is None:
            detail = f"no tmux pane for target '{state.config.target}'"
            self.set_state(state, "pane_missing", detail)
            if report:
                self._dispatch_failed(state, "pane_not_found", detail)
        return pane_id

    def _dispatch_failed(self, state: SessionState, reason: str, detail: str) -> None:
        """Keep the command queued; say so once per distinct problem, not every poll."""
        first = state.dispatch_error != detail
        state.dispatch_error = detail
        if first:
            log.warning("dispatch to %s failed (%s): %s; command stays queued", state.config.name, reason, detail)
        self.bus.publish(DispatchFailed(state.config.name, reason, detail, first))

    # results -------------------------------------------------------------------
    def record(
        self, state: SessionState, result: CommandResult, detail: str | None = None, latency: float | None = None
    ) -> None:
        """Write the result exactly once, then tell the subscribers."""
        running = state.running
        assert running is not None
        first = self.store.finish(running.row.id, result)  # committed on its own: the result is kept
        state.running = None
        self.driver_for(state.config.name).discard(running.row.id)
        self.watch.first_sent.pop(running.row.id, None)
        with self.store.batch():  # what the subscribers write about the result: one commit
            if first:
                self.bus.publish(CommandFinished(state.config.name, running.row, result, detail, latency))
            self.set_state(state, "idle")
        self._next_probe.pop(state.config.name, None)
        self._soon = True  # its session's next command may go now, not after a poll interval

    def release(self, state: SessionState) -> None:
        """Stop tracking the running command without recording a result."""
        if state.running is not None:
            self.driver_for(state.config.name).discard(state.running.row.id)
            self._soon = True
        state.running = None
