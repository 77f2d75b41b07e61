"""The supervisor loop: take each session's next queued command, send it into the
session's pane, and record its exact result when the pane's shell reports it.

One command at a time per pane, FIFO per session. The loop wakes on completion
events (tmux wait-for) and otherwise checks the queue every poll interval.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.adapters.tmux import TmuxAdapter, TmuxUnavailable
from orchestrator.assist.coordinator import Assist
from orchestrator.clock import Clock, SystemClock, iso_utc
from orchestrator.config import Config, SessionConfig
from orchestrator.drivers.shell_files import CommandFiles
from orchestrator.drivers.waiters import CompletionWaiters
from orchestrator.errors import PaneNotFound
from orchestrator.guards.stall import StallGuard
from orchestrator.guards.streak import FailureStreak
from orchestrator.model import CommandResult, CommandRow
from orchestrator.redact import redact
from orchestrator.state.audit import AuditLog
from orchestrator.state.store import StateStore

if TYPE_CHECKING:
    from orchestrator.notify.notifier import Notifier

log = logging.getLogger("orchestrator")

LIVENESS_CHECK_SECONDS = 1.0
HEARTBEAT_WRITE_SECONDS = 2.0
NEVER_STARTED_GRACE_SECONDS = 2.0


@dataclass
class Running:
    """A command the supervisor has sent and is waiting on."""

    row: CommandRow
    files: CommandFiles
    pane_id: str
    sent_at: float
    last_output_size: int = 0
    last_activity: float = 0.0
    interrupt_sent_at: float | None = None
    stalled_for: float = 0.0


@dataclass
class SessionState:
    config: SessionConfig
    running: Running | None = None
    dispatch_error: str | None = None
    cooldown_until: float | None = None
    pane_id: str | None = None


def channel_token(config: Config, command_id: int) -> str:
    """Unique per state DB, so two orchestrators on one tmux server never share a channel."""
    digest = hashlib.sha1(str(config.state_db).encode()).hexdigest()[:8]
    return f"{digest}-{command_id}"


class Supervisor:
    def __init__(
        self,
        config: Config,
        *,
        store: StateStore,
        tmux: TmuxAdapter,
        audit: AuditLog,
        metrics: OrchestratorMetrics,
        clock: Clock | None = None,
        dry_run: bool = False,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.tmux = tmux
        self.audit = audit
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self.dry_run = dry_run
        self.notifier = notifier
        self.stall = StallGuard(self)
        self.streak = FailureStreak(self)
        self.assist = Assist(self)  # decision assist and requirements plans; AI calls off this thread
        self.sessions = {s.name: SessionState(s) for s in config.sessions}
        self.waiters = CompletionWaiters(tmux.wait_for_argv)
        self.stop_event = threading.Event()
        self._socket_path = ""
        self._last_liveness = 0.0
        self._last_heartbeat_write = 0.0
        self._dry_run_seen: set[int] = set()

    # lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        """Check every pane exists, then resume whatever the DB says was running."""
        for name, state in self.sessions.items():
            pane = self.tmux.resolve(state.config.target)  # PaneNotFound → exit 2 before we start
            state.pane_id = pane.pane_id
            self.store.ensure_session(name, state.config.target)
            self.metrics.register_session(name)
            self.stall.load(state, self.store.metadata(name))
            log.info("session %s → pane %s", name, pane.pane_id)
        self._socket_path = self.tmux.socket_path()
        self.audit.record("orchestrator_started", None, dry_run=self.dry_run, detail=f"{len(self.sessions)} sessions")
        self._recover()

    def _recover(self) -> None:
        for row in self.store.running():
            state = self.sessions.get(row.session)
            if state is None:
                continue
            files = CommandFiles(self.config.runtime_dir, channel_token(self.config, row.id))
            if files.read_exit() is not None or files.started():
                pane_id = self._pane_id_or_empty(state)
                state.running = Running(
                    row, files, pane_id, self.clock.monotonic(), files.output_size(), self.clock.monotonic()
                )
                self.waiters.watch(row.id, files.channel)
                self.audit.record(
                    "command_recovered",
                    row.session,
                    command_id=row.id,
                    command=row.command,
                    detail="resumed waiting for result",
                )
                self._complete_if_exited(state)
            else:
                self.store.revert_to_queued(row.id)
                files.remove()
                self.audit.record(
                    "command_recovered",
                    row.session,
                    command_id=row.id,
                    command=row.command,
                    detail="never started; re-queued",
                )

    def _pane_id_or_empty(self, state: SessionState) -> str:
        try:
            return self.tmux.resolve(state.config.target).pane_id
        except PaneNotFound:
            return ""

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        self.assist.close()
        self.waiters.close()
        self.audit.record("orchestrator_stopped", None)
        self.audit.flush()

    def run(self, once: bool = False) -> None:
        while not self.stop_event.is_set():
            self.step()
            if once and self.idle():
                break
            self._wait_for_event(self.config.settings.poll_interval_seconds)

    # one turn of the loop ----------------------------------------------------
    def _wait_for_event(self, timeout: float) -> None:
        try:
            command_id = self.waiters.events.get(timeout=timeout)
        except queue.Empty:
            return
        self._on_signal(command_id)

    def _on_signal(self, command_id: int) -> None:
        for state in self.sessions.values():
            if state.running and state.running.row.id == command_id:
                self._complete_if_exited(state)

    def step(self) -> None:
        now = self.clock.now()
        self.metrics.heartbeat.set(now)
        self._drain_signals()
        check_liveness = self.clock.monotonic() - self._last_liveness >= LIVENESS_CHECK_SECONDS
        if check_liveness:
            self._last_liveness = self.clock.monotonic()
        for state in self.sessions.values():
            if state.running:
                self._check_running(state, check_liveness)
        self.assist.tick()
        for state in self.sessions.values():
            if state.running is None and self.store.next_queued(state.config.name) and self.may_dispatch(state):
                self._dispatch_next(state)
                self._drain_signals()  # a result never waits behind a round of sends
        for name, depth in self.store.queue_depths().items():
            if name in self.sessions:
                self.metrics.queue_depth.labels(session=name).set(depth)
        if now - self._last_heartbeat_write >= HEARTBEAT_WRITE_SECONDS:
            self._last_heartbeat_write = now
            for name in self.sessions:
                self.store.update_metadata(name, {"orchestrator_heartbeat": iso_utc(now)})

    def _drain_signals(self) -> None:
        while True:
            try:
                self._on_signal(self.waiters.events.get_nowait())
            except queue.Empty:
                return

    def idle(self) -> bool:
        if any(s.running for s in self.sessions.values()):
            return False
        if self.dry_run:
            return True
        if self.assist.busy():
            return False
        return not any(self.may_dispatch(s) and self.store.next_queued(name) for name, s in self.sessions.items())

    def may_dispatch(self, state: SessionState) -> bool:
        """Gates: a stall's cooldown, a failure streak's block."""
        return self.stall.may_dispatch(state) and self.streak.may_dispatch(state)

    # dispatch ----------------------------------------------------------------
    def _dispatch_next(self, state: SessionState) -> None:
        name = state.config.name
        row = self.store.next_queued(name)
        if row is None:
            return
        if self.dry_run:
            if row.id not in self._dry_run_seen:
                self._dry_run_seen.add(row.id)
                self.audit.record("dry_run_dispatch", name, command_id=row.id, command=row.command, dry_run=True)
            return
        pane_id = self._pane_for(state)
        if pane_id is None:
            return
        files = CommandFiles(self.config.runtime_dir, channel_token(self.config, row.id))
        line = files.write_scripts(row.command, self._socket_path)
        started_at = iso_utc(self.clock.now())
        if not self.store.mark_running(row.id, started_at):
            return
        self.waiters.watch(row.id, files.channel)
        sent = self._send_line(state, pane_id, line)
        if sent is None:
            self.waiters.forget(row.id)
            self.store.revert_to_queued(row.id)
            files.remove()
            return
        pane_id = sent
        state.dispatch_error = None
        mono = self.clock.monotonic()
        state.running = Running(self.store.command(row.id) or row, files, pane_id, mono, 0, mono)
        self.metrics.dispatched.labels(session=name).inc()
        self.audit.record(
            "command_dispatched",
            name,
            command_id=row.id,
            command=row.command,
            queue_depth=max(0, self.store.queue_depths().get(name, 1)),
        )

    def _send_line(self, state: SessionState, pane_id: str, line: str) -> str | None:
        """Type the line; if the cached pane is gone, look the target up once more."""
        try:
            self.tmux.send_text(pane_id, line)
            return pane_id
        except TmuxUnavailable:
            state.pane_id = None
        fresh = self._pane_for(state)
        if fresh is None:
            return None
        try:
            self.tmux.send_text(fresh, line)
            return fresh
        except TmuxUnavailable as exc:
            self._dispatch_failed(state, "tmux_unavailable", str(exc))
            return None

    def _pane_for(self, state: SessionState) -> str | None:
        """The session's pane id, looked up once and kept until a send to it fails."""
        if state.pane_id is None:
            try:
                state.pane_id = self.tmux.resolve(state.config.target).pane_id
            except PaneNotFound as exc:
                self._dispatch_failed(state, "pane_not_found", exc.detail)
                return None
        return state.pane_id

    def _dispatch_failed(self, state: SessionState, reason: str, detail: str) -> None:
        """Keep the command queued; say so once per distinct problem, not every poll."""
        self.metrics.dispatch_errors.labels(session=state.config.name, reason=reason).inc()
        if state.dispatch_error != detail:
            state.dispatch_error = detail
            log.warning("dispatch to %s failed (%s): %s; command stays queued", state.config.name, reason, detail)
            self.audit.record("dispatch_failed", state.config.name, detail=f"{reason}: {detail}")

    # completion ----------------------------------------------------------------
    def _check_running(self, state: SessionState, check_liveness: bool) -> None:
        running = state.running
        assert running is not None
        size = running.files.output_size()
        if size != running.last_output_size:
            running.last_output_size = size
            running.last_activity = self.clock.monotonic()
        if self._complete_if_exited(state):
            return
        self.stall.check(state)
        if state.running is None or not check_liveness:
            return
        if not self.waiters.watching(running.row.id) and running.files.read_exit() is None:
            self.waiters.watch(running.row.id, running.files.channel)
        if not running.files.started() and self.clock.monotonic() - running.sent_at > NEVER_STARTED_GRACE_SECONDS:
            if not self.tmux.pane_alive(running.pane_id):
                self._finish_without_exit(state, "pane closed before the command started")
            return
        if running.pane_id and not self.tmux.pane_alive(running.pane_id):
            self._finish_without_exit(state, "pane closed or tmux server gone")

    def _complete_if_exited(self, state: SessionState) -> bool:
        running = state.running
        if running is None:
            return False
        record = running.files.read_exit()
        if record is None:
            return False
        if running.interrupt_sent_at is not None:
            self.stall.resolve(state, record)
            return True
        tail = self.output_tail(running)
        result = CommandResult(
            exit_code=record.exit_code,
            status="succeeded" if record.exit_code == 0 else "failed",
            started_at=iso_utc(record.started),
            finished_at=iso_utc(record.finished),
            duration_s=round(max(0.0, record.finished - record.started), 6),
            output_tail=tail,
        )
        self.record(state, result)
        self.metrics.duration.labels(session=state.config.name).observe(result.duration_s)
        self.metrics.feedback_latency.observe(max(0.0, self.clock.now() - record.finished))
        return True

    def _finish_without_exit(self, state: SessionState, why: str, status: str = "cancelled") -> None:
        running = state.running
        assert running is not None
        now = self.clock.now()
        started = running.row.started_at or iso_utc(now)
        tail = self.output_tail(running, tee_grace_seconds=0)
        result = CommandResult(
            exit_code=None,
            status=status,
            started_at=started,
            finished_at=iso_utc(now),
            duration_s=round(max(0.0, self.clock.monotonic() - running.sent_at), 6),
            output_tail=tail,
        )
        log.warning("command %s in %s ended %s: %s", running.row.id, state.config.name, status, why)
        self.record(state, result, detail=why)

    def output_tail(self, running: Running, tee_grace_seconds: float = 0.5) -> str:
        return redact(running.files.read_tail(self.config.settings.output_tail_lines, tee_grace_seconds))

    def release(self, state: SessionState) -> None:
        """Stop tracking the running command without recording a result."""
        running = state.running
        if running is not None:
            self.waiters.forget(running.row.id)
            running.files.remove()
        state.running = None

    def notify(self, *, kind: str, session: str, title: str, body: str, dedupe_key: str) -> None:
        if self.notifier is None:
            log.warning("%s (no notifier): %s", title, body)
            return
        self.notifier.notify(kind=kind, session=session, title=title, body=body, dedupe_key=dedupe_key)

    def record(self, state: SessionState, result: CommandResult, detail: str | None = None) -> None:
        running = state.running
        assert running is not None
        name = state.config.name
        first = self.store.finish(running.row.id, result)
        self.waiters.forget(running.row.id)
        state.running = None
        if first:
            self.metrics.commands.labels(session=name, result=result.status).inc()
            self.audit.record(
                "command_result",
                name,
                command_id=running.row.id,
                command=running.row.command,
                status=result.status,
                exit_code=result.exit_code,
                duration_s=result.duration_s,
                output_tail=result.output_tail,
                detail=detail,
            )
            self.streak.on_result(state, running.row, result)
            self.assist.on_result(state, running.row, result)
        running.files.remove()
