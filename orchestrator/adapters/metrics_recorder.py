"""The engine's events as Prometheus series on the orchestrator's own registry."""

from __future__ import annotations

from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.events import (
    ApprovalAnswered,
    ApprovalRequested,
    CommandDispatched,
    CommandFinished,
    DispatchFailed,
    EventBus,
    HeartbeatTick,
    InputRequested,
    SessionAttached,
    SessionStateChanged,
    StallDetected,
)


class MetricsRecorder:
    def __init__(self, metrics: OrchestratorMetrics) -> None:
        self.metrics = metrics
        self._depths: dict[str, int] = {}  # what the queue-depth gauges show

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(SessionAttached, self._attached)
        bus.subscribe(CommandDispatched, self._dispatched)
        bus.subscribe(DispatchFailed, self._dispatch_failed)
        bus.subscribe(CommandFinished, self._finished)
        bus.subscribe(StallDetected, self._stall)
        bus.subscribe(HeartbeatTick, self._tick)
        bus.subscribe(SessionStateChanged, self._state)
        bus.subscribe(InputRequested, self._input)
        bus.subscribe(ApprovalRequested, self._approval_requested)
        bus.subscribe(ApprovalAnswered, self._approval_answered)

    def _attached(self, e: SessionAttached) -> None:
        self.metrics.register_session(e.session, e.kind, e.provider)

    def _dispatched(self, e: CommandDispatched) -> None:
        self.metrics.dispatched.labels(session=e.session).inc()

    def _dispatch_failed(self, e: DispatchFailed) -> None:
        self.metrics.dispatch_errors.labels(session=e.session, reason=e.reason).inc()

    def _finished(self, e: CommandFinished) -> None:
        self.metrics.commands.labels(session=e.session, result=e.result.status).inc()
        if e.feedback_latency_s is not None:  # the command's own exit was seen: it has a real duration
            self.metrics.duration.labels(session=e.session).observe(e.result.duration_s)
            self.metrics.feedback_latency.observe(e.feedback_latency_s)

    def _stall(self, e: StallDetected) -> None:
        self.metrics.stall_count.labels(session=e.session).inc()

    def _tick(self, e: HeartbeatTick) -> None:
        self.metrics.heartbeat.set(e.now)
        for name, depth in e.queue_depths.items():
            if self._depths.get(name) != depth:  # a round changes few sessions' depths, if any
                self._depths[name] = depth
                self.metrics.queue_depth.labels(session=name).set(depth)

    def _state(self, e: SessionStateChanged) -> None:
        self.metrics.set_session_state(e.session, e.state)

    def _input(self, e: InputRequested) -> None:
        self.metrics.input_requests.labels(session=e.session).inc()

    def _approval_requested(self, e: ApprovalRequested) -> None:
        self.metrics.approval_requests.labels(session=e.session, verdict=e.ruling.verdict).inc()

    def _approval_answered(self, e: ApprovalAnswered) -> None:
        if not e.delivered:
            return
        self.metrics.approvals.labels(session=e.session, decision=e.decision, by=e.by).inc()
        self.metrics.approval_wait.labels(session=e.session, by=e.by).observe(e.waited_s)
