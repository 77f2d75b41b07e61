"""Watching a running command: its end, its activity, a person it waits for, a stall.

Part of the engine (it acts through the supervisor that owns it). Each running command is looked
at every loop round; the cheaper facts (end record, activity) every round, the costlier ones
(is a process blocked reading the terminal? is the pane alive?) once a liveness round.

A command blocked on a question is `waiting_input`: never interrupted, retried or counted as a
stall, whatever the stall timeout; a person answers with `tmux-agent reply`, which the engine
types into the pane. The stall clock starts again after the answer.
"""

from __future__ import annotations

import logging
from typing import Protocol

from orchestrator.clock import Clock, iso_utc
from orchestrator.config import OrchestratorSettings
from orchestrator.engine.approvals import ApprovalWatch
from orchestrator.errors import TmuxUnavailable
from orchestrator.events import (
    EventBus,
    InputRequested,
    ReplySent,
    RunningProgress,
    StallDetected,
    StallGaveUp,
    StallInterrupted,
    StallRetried,
)
from orchestrator.model import CommandResult, ExitRecord, ResultStatus, SessionState, SessionStateName, StallVerdict
from orchestrator.ports import ApprovalPolicy, Driver, PaneIO, StallPolicy
from orchestrator.redact import redact
from orchestrator.state.port import Store

log = logging.getLogger("orchestrator")

NEVER_STARTED_GRACE_SECONDS = 2.0
INPUT_CHECK_AFTER_SECONDS = 0.3


class Engine(Protocol):
    """What the watch uses of the supervisor that owns it."""

    settings: OrchestratorSettings
    store: Store
    panes: PaneIO
    bus: EventBus
    clock: Clock

    def set_state(self, state: SessionState, new: SessionStateName, detail: str = "") -> None: ...

    def driver_for(self, session: str) -> Driver: ...

    def record(
        self, state: SessionState, result: CommandResult, detail: str | None = None, latency: float | None = None
    ) -> None: ...

    def release(self, state: SessionState) -> None: ...


class RunningWatch:
    def __init__(self, supervisor: Engine, stall: StallPolicy | None, approvals: ApprovalPolicy | None = None) -> None:
        self.sup = supervisor
        self.stall = stall
        self.approvals = ApprovalWatch(supervisor, approvals)
        self.first_sent: dict[int, float] = {}
        self._alive: set[str] | None = None

    def new_liveness_round(self) -> None:
        """Which panes are alive is asked of tmux once per liveness round, for every running
        command at once (one `list-panes -a`), and only when a command is running."""
        self._alive = None

    def _pane_alive(self, pane_id: str) -> bool:
        if self._alive is None:
            self._alive = {pane for pane, info in self.sup.panes.all_pane_info().items() if not info.dead}
        return pane_id in self._alive

    def _driver(self, state: SessionState) -> Driver:
        return self.sup.driver_for(state.config.name)

    def settled(self, state: SessionState) -> bool:
        """A shell command that started and waits on nothing but its end: no question, no
        approval, no interrupt under way, out of its first seconds. Its end wakes the loop (the
        exit record's watch), a reply or a `send` rings the doorbell, and what else it has (a
        stall's timeout, the liveness look) counts in seconds, so the loop need not look at it ten
        times a second. An agent turn is never settled: its screen is looked at for dialogs."""
        running = state.running
        return (
            running is not None
            and self._driver(state).kind == "shell"
            and running.waiting_since is None
            and running.approval is None
            and running.interrupt_sent_at is None
            and self.sup.clock.monotonic() - running.sent_at > NEVER_STARTED_GRACE_SECONDS
            and self._driver(state).started(running.row.id)
        )

    def check(self, state: SessionState, check_liveness: bool) -> None:
        running = state.running
        assert running is not None
        sup, command_id = self.sup, running.row.id
        mono = sup.clock.monotonic()
        marker = self._driver(state).activity_marker(command_id)
        if marker != running.last_activity_marker:
            running.last_activity_marker = marker
            running.last_activity = mono
        if self.complete_if_ended(state):
            return
        started = self._driver(state).started(command_id)
        if self.approvals.check(state):
            pass  # waiting for a tool to be approved: never a question, never a stall
        elif started and check_liveness and mono - running.last_activity >= INPUT_CHECK_AFTER_SECONDS:
            self._check_input(state)
        elif running.waiting_since is not None and running.last_activity > running.waiting_since:
            self._input_answered(state)
        if running.approval is not None:
            pass
        elif running.waiting_since is not None:
            self._deliver_reply(state)
        elif started and self.stall is not None and running.interrupt_sent_at is None:
            verdict = self.stall.verdict(running, mono)
            if verdict.action == "interrupt":
                self._check_input(state)  # a question is never a stall, whenever the rounds fall
            if running.waiting_since is None:
                self._carry_out(state, verdict)
        elif self.stall is not None and running.interrupt_sent_at is not None:
            self._carry_out(state, self.stall.verdict(running, mono))
        if state.running is None or not check_liveness:
            return
        self._liveness(state, started, mono)

    def _liveness(self, state: SessionState, started: bool, mono: float) -> None:
        running = state.running
        assert running is not None
        sup, command_id = self.sup, running.row.id
        if not self._driver(state).watching(command_id) and self._driver(state).end_record(command_id) is None:
            self._driver(state).watch(command_id)
        if not running.pane_id or not self._pane_alive(running.pane_id):
            why = "pane closed before the command started" if not started else "pane closed or tmux server gone"
            self.finish_without_exit(state, why)
            return
        if (
            not started
            and mono - running.sent_at > NEVER_STARTED_GRACE_SECONDS
            and self._driver(state).shell_idle(running.pane_id)
        ):
            self.finish_without_exit(
                state, "the typed line did not start the command (the shell is back at its prompt); not typed again"
            )
            return
        if running.last_activity_marker != running.progress_marker:
            running.progress_marker = running.last_activity_marker
            sup.bus.publish(RunningProgress(state.config.name, running.row, self.output_tail(state, command_id, 0)))

    # a person is needed ------------------------------------------------------------------
    def _check_input(self, state: SessionState) -> None:
        running = state.running
        assert running is not None
        waiting = self._driver(state).waiting_for_input(running.row.id)
        if waiting and running.waiting_since is None:
            running.waiting_since = self.sup.clock.monotonic()
            question = redact(self._driver(state).question(running.row.id))
            # the question first (metadata `running.question`), then the state a reader acts on
            self.sup.bus.publish(InputRequested(state.config.name, running.row, question))
            self.sup.set_state(state, "waiting_input", question)
        elif not waiting and running.waiting_since is not None:
            self._input_answered(state)

    def _input_answered(self, state: SessionState) -> None:
        running = state.running
        assert running is not None
        running.waiting_since = None
        running.last_activity = self.sup.clock.monotonic()  # the stall clock starts again
        self.sup.set_state(state, "working")

    def _deliver_reply(self, state: SessionState) -> None:
        running = state.running
        assert running is not None
        pending = self.sup.store.metadata(state.config.name).get("pending_reply")
        if not isinstance(pending, dict) or not isinstance(pending.get("text"), str):
            return
        text = pending["text"]
        self.sup.store.update_metadata(state.config.name, {"pending_reply": None})
        try:
            self._driver(state).type_reply(running.pane_id, text)
        except TmuxUnavailable as exc:
            self.sup.bus.publish(ReplySent(state.config.name, running.row, text, False, str(exc)))
            return
        self.sup.bus.publish(ReplySent(state.config.name, running.row, text, True))
        self._input_answered(state)

    # stalls ---------------------------------------------------------------------------------
    def _carry_out(self, state: SessionState, verdict: StallVerdict) -> None:
        running = state.running
        assert running is not None
        sup, name, row = self.sup, state.config.name, running.row
        if verdict.action == "interrupt":
            running.stalled_for = sup.clock.monotonic() - running.sent_at
            running.interrupt_marker = self._driver(state).activity_marker(row.id)
            sup.bus.publish(StallDetected(name, row, verdict.idle_s, self.output_tail(state, row.id, 0)))
            keys = state.config.interrupt_keys
            try:
                self._driver(state).interrupt(row.id, running.pane_id, keys)
            except TmuxUnavailable as exc:
                log.warning("could not interrupt %s: %s", name, exc)
            running.interrupt_sent_at = sup.clock.monotonic()
            sup.bus.publish(StallInterrupted(name, row, keys))
            sup.set_state(state, "stalled", f"no output for {verdict.idle_s:.1f}s; interrupted")
        elif verdict.action in ("retry", "give_up"):
            self._end_stalled(state, None, retry=verdict.action == "retry")

    def _end_stalled(self, state: SessionState, record: ExitRecord | None, *, retry: bool) -> None:
        """The interrupted command is over: queue it again, or give up (the guard alerts)."""
        running = state.running
        assert running is not None
        sup, name, row = self.sup, state.config.name, running.row
        if retry:
            sup.release(state)
            sup.store.revert_to_queued(row.id)
            sup.bus.publish(StallRetried(name, row, row.attempts, sup.settings.stall_retries_before_notify))
            sup.set_state(state, "idle")
            return
        now = sup.clock.now()
        tail = self.output_tail(state, row.id, until=None if record else running.interrupt_marker)
        waited = sup.clock.monotonic() - self.first_sent.get(row.id, running.sent_at)
        result = CommandResult(
            exit_code=record.exit_code if record else None,
            status="stalled",
            started_at=iso_utc(record.started) if record else (row.started_at or iso_utc(now)),
            finished_at=iso_utc(record.finished if record else now),
            duration_s=round(record.finished - record.started if record else running.stalled_for, 6),
            output_tail=tail,
        )
        sup.record(state, result, detail=f"stalled after {row.attempts} attempt(s)")
        sup.bus.publish(StallGaveUp(name, row, row.attempts, waited, tail))

    # endings ----------------------------------------------------------------------------------
    def complete_if_ended(self, state: SessionState) -> bool:
        running = state.running
        if running is None:
            return False
        sup = self.sup
        record = self._driver(state).end_record(running.row.id)
        if record is None:
            return False
        if running.interrupt_sent_at is not None and self.stall is not None:
            self._end_stalled(state, record, retry=self.stall.after_interrupt(running).action == "retry")
            return True
        status: ResultStatus = record.status or ("succeeded" if record.exit_code == 0 else "failed")
        result = CommandResult(
            exit_code=record.exit_code,
            status=status,
            started_at=iso_utc(record.started),
            finished_at=iso_utc(record.finished),
            duration_s=round(max(0.0, record.finished - record.started), 6),
            output_tail=self.output_tail(state, running.row.id),
            reply=redact(record.reply) if record.reply is not None else None,
            tools=record.tools,
            approvals=tuple(running.approvals),
        )
        sup.record(state, result, latency=max(0.0, sup.clock.now() - record.finished))
        return True

    def finish_without_exit(self, state: SessionState, why: str) -> None:
        running = state.running
        assert running is not None
        sup = self.sup
        now = sup.clock.now()
        result = CommandResult(
            exit_code=None,
            status="cancelled",
            started_at=running.row.started_at or iso_utc(now),
            finished_at=iso_utc(now),
            duration_s=round(max(0.0, sup.clock.monotonic() - running.sent_at), 6),
            output_tail=self.output_tail(state, running.row.id, grace_seconds=0),
        )
        log.warning("command %s in %s ended cancelled: %s", running.row.id, state.config.name, why)
        sup.record(state, result, detail=why)

    def output_tail(
        self, state: SessionState, command_id: int, grace_seconds: float = 0.5, until: int | None = None
    ) -> str:
        lines = self.sup.settings.output_tail_lines
        return redact(self._driver(state).output_tail(command_id, lines, grace_seconds, until))
