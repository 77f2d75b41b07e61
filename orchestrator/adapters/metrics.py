"""Prometheus metrics on a per-instance CollectorRegistry (no global state), served
over HTTP on metrics_host:metrics_port.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from orchestrator.adapters.metrics_host import host_registry
from orchestrator.errors import UserError
from orchestrator.model import SESSION_STATES, SessionStateName

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
AI_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


@dataclass
class OrchestratorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    host: str = ""
    """This orchestrator's fleet host: served on every series as `host` (see metrics_host)."""

    def __post_init__(self) -> None:
        r = self.registry
        # The standard process_* (CPU, memory, open fds, start time) and python_info series: the
        # registry is our own, so prometheus_client's default one (which has them) is not served.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.commands = Counter(
            "orchestrator_commands", "Commands that ended, by session and result.", ["session", "result"], registry=r
        )
        self.dispatched = Counter(
            "orchestrator_commands_dispatched", "Commands sent into a pane.", ["session"], registry=r
        )
        self.duration = Histogram(
            "orchestrator_command_duration_seconds",
            "Command run time measured by the pane's shell.",
            ["session"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.feedback_latency = Histogram(
            "orchestrator_feedback_latency_seconds",
            "From a command's exit to its result in the state DB.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.queue_depth = Gauge("orchestrator_queue_depth", "Commands waiting per session.", ["session"], registry=r)
        self.heartbeat = Gauge(
            "orchestrator_heartbeat_timestamp_seconds", "Last time the supervisor loop ran (Unix seconds).", registry=r
        )
        self.dispatch_errors = Counter(
            "orchestrator_dispatch_errors", "Dispatch attempts that failed.", ["session", "reason"], registry=r
        )
        self.audit_write_errors = Counter(
            "orchestrator_audit_write_errors", "Audit lines the disk refused (kept in memory and retried).", registry=r
        )
        self.state_db_errors = Counter(
            "orchestrator_state_db_errors",
            "State DB operations that failed, by kind (disk_full|locked|corrupt|readonly|cantopen|io|other); "
            "each was retried.",
            ["kind"],
            registry=r,
        )
        self.stall_count = Counter("orchestrator_stall_count", "Stalls detected per session.", ["session"], registry=r)
        self.session_state = Gauge(
            "orchestrator_session_state",
            "1 for the session's current state, 0 for the others.",
            ["session", "state"],
            registry=r,
        )
        self.input_requests = Counter(
            "orchestrator_input_requests", "Times a session waited for a person's answer.", ["session"], registry=r
        )
        self.session_info = Gauge(
            "orchestrator_session_info",
            "1 per session, labelled with its kind (shell|agent) and provider (claude|codex|'').",
            ["session", "kind", "provider"],
            registry=r,
        )
        self.approval_requests = Counter(
            "orchestrator_approval_requests",
            "Agent tool requests, by the safety policy's verdict (approve|deny|escalate).",
            ["session", "verdict"],
            registry=r,
        )
        self.approvals = Counter(
            "orchestrator_approvals",
            "Agent tool requests answered, by decision (approved|denied|unknown) and by whom (policy|person).",
            ["session", "decision", "by"],
            registry=r,
        )
        self.approval_wait = Histogram(
            "orchestrator_approval_wait_seconds",
            "How long an agent waited for its tool request to be answered, by whom answered it.",
            ["session", "by"],
            buckets=(0.05, 0.25, 1, 5, 15, 60, 300, 900, 3600),
            registry=r,
        )
        self.failure_streak = Gauge(
            "orchestrator_failure_streak", "Consecutive failures per session.", ["session"], registry=r
        )
        self.blocked = Gauge(
            "orchestrator_session_blocked", "1 when a session is blocked by a failure streak.", ["session"], registry=r
        )
        self.failure_alert_threshold = Gauge(
            "orchestrator_failure_alert_threshold",
            "Configured failure_alert_threshold (alert rules compare streaks with it).",
            registry=r,
        )

        self.notifications = Counter(
            "orchestrator_notifications",
            "Notification send attempts by channel and result.",
            ["channel", "result"],
            registry=r,
        )
        self.notifications_pending = Gauge(
            "orchestrator_notifications_pending", "Notifications waiting in the outbox.", registry=r
        )
        self.notifications_degraded = Gauge(
            "orchestrator_notifications_degraded", "1 while no notification channel works.", registry=r
        )
        self.notifications_degraded_episodes = Counter(
            "orchestrator_notifications_degraded_episodes", "Times notifications became degraded.", registry=r
        )
        self.notifications_dead = Counter(
            "orchestrator_notifications_dead",
            "Notifications WeCom refused for good (not retried), by channel and errcode.",
            ["channel", "errcode"],
            registry=r,
        )

        # decision assist and requirements plans
        self.ai_calls = Counter(
            "orchestrator_decision_assist_calls",
            "AI calls by session, backend and task.",
            ["session", "backend", "task"],
            registry=r,
        )
        self.ai_errors = Counter(
            "orchestrator_decision_assist_errors",
            "AI calls that failed by error kind (each fell back to rules).",
            ["session", "backend", "kind"],
            registry=r,
        )
        self.ai_latency = Histogram(
            "orchestrator_decision_assist_latency_seconds",
            "Time one AI call took.",
            ["session", "backend"],
            buckets=AI_BUCKETS,
            registry=r,
        )
        self.decision_duration = Histogram(
            "orchestrator_decision_duration_seconds",
            "From a blocker change seen to next_actions written.",
            ["session"],
            buckets=AI_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "orchestrator_decisions",
            "next_actions written, by source (codex|openai|rules).",
            ["session", "source"],
            registry=r,
        )
        self.suggestions = Counter(
            "orchestrator_suggestions",
            "Suggested commands by safety-policy verdict.",
            ["session", "policy"],
            registry=r,
        )
        self.plan_steps = Counter(
            "orchestrator_plan_steps", "Plan steps that ended, by status.", ["session", "status"], registry=r
        )

        # a fleet on PostgreSQL: every live host reports every host's heartbeat from the DB, so a
        # host that is down (and exports nothing itself) still has series that say so
        self.fleet_host_down = Gauge(
            "orchestrator_fleet_host_down",
            "1 while a fleet host's heartbeat is older than host_down_seconds (by peer_host).",
            ["peer_host"],
            registry=r,
        )
        self.fleet_heartbeat_age = Gauge(
            "orchestrator_fleet_heartbeat_age_seconds",
            "Seconds since a fleet host's last heartbeat, by the state DB's clock (by peer_host).",
            ["peer_host"],
            registry=r,
        )

    def report_hosts(self, hosts: Mapping[str, tuple[float, bool]]) -> None:
        """{host: (heartbeat age in seconds, down)} for every host of the fleet."""
        for name, (age_s, down) in hosts.items():
            self.fleet_heartbeat_age.labels(peer_host=name).set(age_s)
            self.fleet_host_down.labels(peer_host=name).set(1 if down else 0)

    def register_session(self, session: str, kind: str = "shell", provider: str = "") -> None:
        """Create each per-session series at zero so dashboards see them before any event."""
        self.session_info.labels(session=session, kind=kind, provider=provider).set(1)
        if kind == "agent":
            for verdict in ("approve", "deny", "escalate"):
                self.approval_requests.labels(session=session, verdict=verdict)
            for decision, by in (
                ("approved", "policy"),
                ("denied", "policy"),
                ("approved", "person"),
                ("denied", "person"),
            ):
                self.approvals.labels(session=session, decision=decision, by=by)
        for result in ("succeeded", "failed", "stalled", "cancelled"):
            self.commands.labels(session=session, result=result)
        self.dispatched.labels(session=session)
        # a new child gauge reads 0; an existing one keeps what its owner set (a session attached
        # again later must not lose its queue depth, streak or block until they change)
        self.queue_depth.labels(session=session)
        self.stall_count.labels(session=session)
        self.failure_streak.labels(session=session)
        self.blocked.labels(session=session)
        self.input_requests.labels(session=session)
        self.set_session_state(session, "idle")

    def set_session_state(self, session: str, current: SessionStateName) -> None:
        for state in SESSION_STATES:
            self.session_state.labels(session=session, state=state).set(1 if state == current else 0)


def serve(metrics: OrchestratorMetrics, host: str, port: int, source: str = "metrics_port") -> WSGIServer:
    """Start the /metrics HTTP server; a port in use is a user error, not a traceback."""
    if not 0 <= port <= 65535:
        raise UserError(f"port {port} is out of range", key=source, fix="use 0 to 65535 (0 = any free port)")
    try:
        server, _thread = start_http_server(port, addr=host, registry=host_registry(metrics.registry, metrics.host))
    except socket.gaierror as exc:  # the host, not the port (`source` names metrics_port's file)
        raise UserError(
            f"cannot resolve {host!r} ({exc.strerror})",
            key=source.replace("metrics_port", "metrics_host") if "metrics_port" in source else "metrics_host",
            fix="set metrics_host to an address such as 127.0.0.1 or a name this machine resolves",
        ) from None
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise UserError(
                f"cannot listen on {host}:{port} ({exc.strerror})",
                key=source,
                fix="pick a free port with --metrics-port N or stop the other process",
            ) from None
        raise
    return server
