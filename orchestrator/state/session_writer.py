"""The engine's view of each session, kept in its metadata for `tmux-agent status`, the dashboard,
`tmux-agent reply` and `tmux-agent approve/deny`: `state` and `state_detail`, while a command runs
`running` ({command_id, command, started_at, output_tail, question?}), and while an agent waits
on a tool request `pending_approval` ({key, command_id, tool, command, detail, source, verdict,
reason, requested_at})."""

from __future__ import annotations

from orchestrator.clock import iso_utc
from orchestrator.events import (
    ApprovalAnswered,
    ApprovalRequested,
    CommandFinished,
    EventBus,
    InputRequested,
    RunningProgress,
    SessionStateChanged,
)
from orchestrator.redact import redact
from orchestrator.state.port import Store


class SessionStateWriter:
    def __init__(self, store: Store) -> None:
        self.store = store

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(SessionStateChanged, self._state)
        bus.subscribe(RunningProgress, self._progress)
        bus.subscribe(InputRequested, self._input)
        bus.subscribe(CommandFinished, self._finished)
        bus.subscribe(ApprovalRequested, self._approval_requested)
        bus.subscribe(ApprovalAnswered, self._approval_answered)

    def _state(self, e: SessionStateChanged) -> None:
        changes: dict[str, object] = {"state": e.state, "state_detail": e.detail}
        if e.state == "working":
            changes["pending_reply"] = None
        self.store.update_metadata(e.session, changes)

    def _progress(self, e: RunningProgress) -> None:
        previous = self.store.metadata(e.session).get("running")
        question = previous.get("question") if isinstance(previous, dict) else None
        running: dict[str, object] = {
            "command_id": e.row.id,
            "command": redact(e.row.command),  # shown by status and the dashboard; the queue row keeps it exact
            "started_at": e.row.started_at,
            "output_tail": redact(e.output_tail),
        }
        if question and isinstance(previous, dict) and previous.get("command_id") == e.row.id:
            running["question"] = question
        self.store.update_metadata(e.session, {"running": running})

    def _input(self, e: InputRequested) -> None:
        self.store.update_metadata(
            e.session,
            {
                "running": {
                    "command_id": e.row.id,
                    "command": redact(e.row.command),
                    "started_at": e.row.started_at,
                    "question": redact(e.question),
                }
            },
        )

    def _finished(self, e: CommandFinished) -> None:
        self.store.update_metadata(e.session, {"running": None, "pending_approval": None})

    def _approval_requested(self, e: ApprovalRequested) -> None:
        pending = {
            "key": e.request.key,
            "command_id": e.row.id,
            "tool": e.request.tool,
            "command": redact(e.request.command),
            "detail": redact(e.request.detail),
            "source": e.request.source,
            "verdict": e.ruling.verdict,
            "reason": e.ruling.reason,
            "requested_at": iso_utc(self.store.clock.now()),
        }
        self.store.update_metadata(e.session, {"pending_approval": pending})

    def _approval_answered(self, e: ApprovalAnswered) -> None:
        if e.delivered:
            self.store.update_metadata(e.session, {"pending_approval": None})
