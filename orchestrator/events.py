"""Typed events and the per-instance, synchronous event bus they travel on.

Data flows one way: the engine dispatches work and publishes what happened; the audit trail,
the metrics, the guards and decision assist subscribe, in the order the composition root
subscribes them, and run on the engine's thread before `publish` returns. Nothing subscribed
reaches back into the engine: a subscriber that wants work done says so through its own port
(the queue in the store, a gate, a verdict).

>>> bus = EventBus()
>>> seen: list[str] = []
>>> bus.subscribe(HeartbeatTick, lambda e: seen.append(f"tick {e.now:g}"))
>>> bus.publish(HeartbeatTick(now=5.0, queue_depths={}))
>>> seen
['tick 5']
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from orchestrator.model import (
    ApprovalDecider,
    ApprovalDecision,
    ApprovalRequest,
    ApprovalRuling,
    CommandResult,
    CommandRow,
    SessionStateName,
)

log = logging.getLogger("orchestrator.events")


@dataclass(frozen=True)
class Event:
    """Base of every event; `session` is None for orchestrator-wide ones."""


@dataclass(frozen=True)
class OrchestratorStarted(Event):
    sessions: int
    dry_run: bool


@dataclass(frozen=True)
class OrchestratorStopped(Event):
    pass


@dataclass(frozen=True)
class SessionAttached(Event):
    """The engine found the session's pane (at start, or again after it was missing)."""

    session: str
    pane_id: str
    kind: str = "shell"
    provider: str = ""


@dataclass(frozen=True)
class CommandDispatched(Event):
    session: str
    row: CommandRow
    queue_depth: int


@dataclass(frozen=True)
class DryRunDispatch(Event):
    session: str
    row: CommandRow


@dataclass(frozen=True)
class DispatchFailed(Event):
    """A command could not be delivered and stays queued; `first` is False for a repeat."""

    session: str
    reason: str
    detail: str
    first: bool


@dataclass(frozen=True)
class CommandRecovered(Event):
    session: str
    row: CommandRow
    detail: str


@dataclass(frozen=True)
class CommandFinished(Event):
    """A command's result was recorded, exactly once."""

    session: str
    row: CommandRow
    result: CommandResult
    detail: str | None = None
    feedback_latency_s: float | None = None


@dataclass(frozen=True)
class StallDetected(Event):
    session: str
    row: CommandRow
    idle_s: float
    output_tail: str


@dataclass(frozen=True)
class StallInterrupted(Event):
    session: str
    row: CommandRow
    keys: tuple[str, ...]


@dataclass(frozen=True)
class StallRetried(Event):
    session: str
    row: CommandRow
    attempt: int
    retries: int


@dataclass(frozen=True)
class StallGaveUp(Event):
    """The command ended `stalled` (its CommandFinished was published just before)."""

    session: str
    row: CommandRow
    attempts: int
    waited_s: float
    output_tail: str


@dataclass(frozen=True)
class HeartbeatTick(Event):
    """Once per loop round: the time and the queue depth of every supervised session."""

    now: float
    queue_depths: dict[str, int]


@dataclass(frozen=True)
class SessionStateChanged(Event):
    """A session's state (DESIGN's vocabulary) changed; `detail` says why in one line."""

    session: str
    state: SessionStateName
    previous: SessionStateName
    detail: str = ""


@dataclass(frozen=True)
class RunningProgress(Event):
    """Once a liveness round while a command runs: what `tmux-agent status` shows of it."""

    session: str
    row: CommandRow
    output_tail: str


@dataclass(frozen=True)
class InputRequested(Event):
    """A running command waits for an answer from a person (a process blocked reading the pane)."""

    session: str
    row: CommandRow
    question: str


@dataclass(frozen=True)
class ReplySent(Event):
    session: str
    row: CommandRow | None
    text: str
    delivered: bool
    detail: str = ""


@dataclass(frozen=True)
class ApprovalRequested(Event):
    """An agent waits for a tool to be approved; `ruling` is the safety policy's verdict
    (`escalate`: a person must answer, `tmux-agent approve/deny SESSION`)."""

    session: str
    row: CommandRow
    request: ApprovalRequest
    ruling: ApprovalRuling


@dataclass(frozen=True)
class ApprovalAnswered(Event):
    """The request was answered (keys sent, or the person answered in the pane); `delivered`
    False when the keys could not be typed (the request stays pending)."""

    session: str
    row: CommandRow
    request: ApprovalRequest
    decision: ApprovalDecision
    by: ApprovalDecider
    reason: str
    waited_s: float
    delivered: bool = True
    detail: str = ""


E = TypeVar("E", bound=Event)
Handler = Callable[[Any], None]


class EventBus:
    """Synchronous publish/subscribe, one instance per orchestrator (no global registry).

    A handler that raises is logged with its event and the next handler still runs: one
    subscriber's bug must not stop the audit trail or the engine.
    """

    def __init__(self, *, raise_errors: bool = False) -> None:
        self._handlers: dict[type[Event], list[Handler]] = {}
        self.raise_errors = raise_errors  # unit tests want a subscriber's bug to fail them

    def subscribe(self, kind: type[E], handler: Callable[[E], None]) -> None:
        self._handlers.setdefault(kind, []).append(handler)

    def publish(self, event: Event) -> None:
        for handler in self._handlers.get(type(event), ()):
            try:
                handler(event)
            except Exception as exc:
                if self.raise_errors:
                    raise
                if not getattr(exc, "counted_fault", False):  # a state DB fault: its store logged it
                    log.exception("subscriber %r failed on %s", handler, type(event).__name__)

    def subscribers(self, kind: type[Event]) -> int:
        return len(self._handlers.get(kind, ()))
