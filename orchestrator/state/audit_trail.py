"""The engine's events as lines of the audit log `orchestrator-actions.jsonl`.

One subscriber turns each engine event into its audit event (names and fields are the audit
schema's contract, read by replay and the dashboard). Guards and decision assist write their own
decisions (`failure_streak`, `cooldown_started`, `decision_made`, …) where they make them.
"""

from __future__ import annotations

from orchestrator.events import (
    ApprovalAnswered,
    ApprovalRequested,
    CommandDispatched,
    CommandFinished,
    CommandRecovered,
    DispatchFailed,
    DryRunDispatch,
    EventBus,
    InputRequested,
    OrchestratorStarted,
    OrchestratorStopped,
    ReplySent,
    SessionStateChanged,
    StallDetected,
    StallInterrupted,
    StallRetried,
)
from orchestrator.state.audit import AuditLog

# Transitions every command makes; the audit log records the others (pane_missing, unsupported,
# waiting_input, exited, …) so a reader sees why a session did not run its queue.
ROUTINE = {"idle", "working"}


class AuditTrail:
    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(OrchestratorStarted, self._started)
        bus.subscribe(OrchestratorStopped, self._stopped)
        bus.subscribe(CommandRecovered, self._recovered)
        bus.subscribe(DryRunDispatch, self._dry_run)
        bus.subscribe(CommandDispatched, self._dispatched)
        bus.subscribe(DispatchFailed, self._dispatch_failed)
        bus.subscribe(CommandFinished, self._finished)
        bus.subscribe(StallDetected, self._stall_detected)
        bus.subscribe(StallInterrupted, self._stall_interrupted)
        bus.subscribe(StallRetried, self._stall_retried)
        bus.subscribe(SessionStateChanged, self._state)
        bus.subscribe(InputRequested, self._input)
        bus.subscribe(ReplySent, self._reply)
        bus.subscribe(ApprovalRequested, self._approval_requested)
        bus.subscribe(ApprovalAnswered, self._approval_answered)

    def _started(self, e: OrchestratorStarted) -> None:
        self.audit.record("orchestrator_started", None, dry_run=e.dry_run, detail=f"{e.sessions} sessions")

    def _stopped(self, e: OrchestratorStopped) -> None:
        self.audit.record("orchestrator_stopped", None)
        self.audit.close()  # write what is kept and fsync; later lines (the notifier's last) sync at once

    def _recovered(self, e: CommandRecovered) -> None:
        self.audit.record("command_recovered", e.session, command_id=e.row.id, command=e.row.command, detail=e.detail)

    def _dry_run(self, e: DryRunDispatch) -> None:
        self.audit.record("dry_run_dispatch", e.session, command_id=e.row.id, command=e.row.command, dry_run=True)

    def _dispatched(self, e: CommandDispatched) -> None:
        self.audit.record(
            "command_dispatched", e.session, command_id=e.row.id, command=e.row.command, queue_depth=e.queue_depth
        )

    def _dispatch_failed(self, e: DispatchFailed) -> None:
        if e.first:
            self.audit.record("dispatch_failed", e.session, detail=f"{e.reason}: {e.detail}")

    def _finished(self, e: CommandFinished) -> None:
        r = e.result
        self.audit.record(
            "command_result",
            e.session,
            command_id=e.row.id,
            command=e.row.command,
            status=r.status,
            exit_code=r.exit_code,
            duration_s=r.duration_s,
            output_tail=r.output_tail,
            reply=r.reply,
            tools=list(r.tools) if r.tools is not None else None,
            approvals=list(r.approvals) or None,
            detail=e.detail,
        )

    def _stall_detected(self, e: StallDetected) -> None:
        self.audit.record(
            "stall_detected",
            e.session,
            command_id=e.row.id,
            command=e.row.command,
            detail=f"no output for {e.idle_s:.1f}s",
            output_tail=e.output_tail,
        )

    def _stall_interrupted(self, e: StallInterrupted) -> None:
        self.audit.record(
            "stall_interrupt", e.session, command_id=e.row.id, command=e.row.command, detail=f"sent {' '.join(e.keys)}"
        )

    def _stall_retried(self, e: StallRetried) -> None:
        self.audit.record(
            "stall_retry",
            e.session,
            command_id=e.row.id,
            command=e.row.command,
            detail=f"retry {e.attempt} of {e.retries}",
        )

    def _state(self, e: SessionStateChanged) -> None:
        if e.state in ROUTINE and e.previous in ROUTINE:
            return
        if e.state in ("waiting_input", "waiting_approval") or (
            e.previous in ("waiting_input", "waiting_approval") and e.state == "working"
        ):
            return  # input_requested / reply_sent and approval_requested / approval_answered say it
        self.audit.record("session_state", e.session, state=e.state, detail=e.detail or f"from {e.previous}")

    def _input(self, e: InputRequested) -> None:
        self.audit.record(
            "input_requested", e.session, command_id=e.row.id, command=e.row.command, detail=e.question or "(none)"
        )

    def _reply(self, e: ReplySent) -> None:
        self.audit.record(
            "reply_sent",
            e.session,
            command_id=e.row.id if e.row else None,
            command=e.row.command if e.row else None,
            detail=("typed into the pane" if e.delivered else f"not delivered: {e.detail}"),
        )

    def _approval_requested(self, e: ApprovalRequested) -> None:
        self.audit.record(
            "approval_requested",
            e.session,
            command_id=e.row.id,
            command=e.row.command,
            tool=e.request.tool,
            tool_command=e.request.command,
            verdict=e.ruling.verdict,
            source=e.request.source,
            detail=e.ruling.reason,
        )

    def _approval_answered(self, e: ApprovalAnswered) -> None:
        self.audit.record(
            "approval_answered",
            e.session,
            command_id=e.row.id,
            command=e.row.command,
            tool=e.request.tool,
            tool_command=e.request.command,
            decision=e.decision,
            by=e.by,
            waited_s=e.waited_s,
            detail=e.reason if e.delivered else f"keys not delivered: {e.detail}",
        )
