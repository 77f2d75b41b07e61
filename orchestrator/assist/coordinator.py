"""Decision assist and requirements plans, as one policy object on the engine's loop.

`tick()` runs on the engine thread every `CHECK_SECONDS`: it hands back finished AI jobs,
syncs blockers (pane output, failure streaks), starts decisions and decompositions as
background jobs, and advances plans. Nothing here waits on an AI: a hanging codex only delays
its own answer, never dispatch or feedback.

It knows nothing of the engine: it reads and writes the state store (metadata, the command
queue), the audit log and the metrics, reads panes through a `PaneReader`, alerts through
`Notify`, and hears of finished commands on the event bus (`subscribe`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.adapters.ai_client import AIClient
from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.assist.blockers import BlockerWatch
from orchestrator.assist.decision import DecisionAssist, policy_hint, shown
from orchestrator.assist.jobs import Jobs
from orchestrator.assist.plan_executor import PlanRunner, plan_progress
from orchestrator.assist.safety import SafetyPolicy
from orchestrator.clock import Clock
from orchestrator.config import OrchestratorSettings, SessionConfig
from orchestrator.envfile import EnvSource
from orchestrator.events import CommandDispatched, CommandFinished, EventBus, SessionStateChanged
from orchestrator.ports import Notify, PaneReader
from orchestrator.state.audit import AuditLog
from orchestrator.state.port import Store

CHECK_SECONDS = 0.1
# a session whose state nothing changed (the store's snapshot generation) is looked at again this
# often anyway: what no commit announces (its requirements document edited on disk) is seen then
RECHECK_SECONDS = 1.0


class Assist:
    def __init__(
        self,
        *,
        settings: OrchestratorSettings,
        sessions: Sequence[SessionConfig],
        store: Store,
        audit: AuditLog,
        metrics: OrchestratorMetrics,
        clock: Clock,
        notify: Notify,
        panes: PaneReader,
        ai: AIClient | None = None,
    ) -> None:
        self.sessions = tuple(sessions)
        self.store = store
        self.clock = clock
        self.ai = ai if ai is not None else AIClient(settings, EnvSource(settings.env_file).current, metrics)
        self.jobs = Jobs(settings.ai.max_concurrency)
        policy = SafetyPolicy(settings.decision)
        self.blockers = BlockerWatch(
            settings=settings.decision, sessions=self.sessions, store=store, audit=audit, clock=clock, panes=panes
        )
        self.decisions = (
            DecisionAssist(
                settings=settings.decision,
                policy=policy,
                ai=self.ai,
                jobs=self.jobs,
                store=store,
                audit=audit,
                metrics=metrics,
                clock=clock,
                notify=notify,
            )
            if settings.decision.enabled
            else None
        )
        self.plans = (
            PlanRunner(
                settings=settings.plan,
                sessions=self.sessions,
                policy=policy,
                ai=self.ai,
                jobs=self.jobs,
                blockers=self.blockers,
                store=store,
                audit=audit,
                metrics=metrics,
                clock=clock,
            )
            if settings.plan.enabled
            else None
        )
        self._last_check = float("-inf")
        self._checked: dict[str, tuple[int, int]] = {}  # session -> (store generation, recheck bucket) of its last look

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(CommandDispatched, self.on_command_dispatched)
        bus.subscribe(CommandFinished, self.on_command_finished)
        bus.subscribe(SessionStateChanged, self.on_state_changed)

    def on_command_dispatched(self, event: CommandDispatched) -> None:
        if self.decisions is not None:
            self.blockers.command_started(event.session)

    def on_state_changed(self, event: SessionStateChanged) -> None:
        """Idle again — after a result, or a stalled command put back in the queue: the pane is
        the session's own again."""
        if event.state == "idle":
            self.blockers.command_ended(event.session, "")

    def on_command_finished(self, event: CommandFinished) -> None:
        """Blockers in the finished command's output tail; for an agent's turn, in how it ended and its reply."""
        if self.decisions is None:
            return
        result = event.result
        if event.session in self.blockers.agents:
            reply = result.reply if result.reply is not None else result.output_tail
            self.blockers.from_turn(event.session, result.status, event.row.command, reply)
        else:
            self.blockers.command_ended(event.session, result.output_tail)

    def tick(self) -> None:
        self.jobs.drain()
        now = self.clock.monotonic()
        if now - self._last_check < CHECK_SECONDS:
            return
        self._last_check = now
        for session in self.sessions:
            self.check(session)

    def check(self, session: SessionConfig) -> None:
        """One look at one session: its pane, its blockers, its decision and its plan. Its
        metadata is read and judged again only when the store changed since the last look, or
        RECHECK_SECONDS later: an idle fleet's round costs no JSON parse per session."""
        name = session.name
        if self.decisions is not None:
            self.blockers.scan_pane(name)
        stamp = (self.store.generation, int(self.clock.monotonic() // RECHECK_SECONDS))
        if self._checked.get(name) == stamp:
            return
        self._checked[name] = stamp
        metadata = self.store.metadata(name)
        if self.decisions is not None:
            metadata = self.blockers.sync_streak(name, metadata)
            self.decisions.check(session, metadata)
        if self.plans is not None:
            self.plans.check(session, metadata)

    def busy(self) -> bool:
        """AI work in flight, or a plan that will queue more (what `--once` waits for)."""
        return self.jobs.busy() or (
            self.plans is not None and any(self.plans.active(session.name) for session in self.sessions)
        )

    def close(self) -> None:
        self.ai.close()
        self.jobs.close()


def status_lines(session: str, metadata: Mapping[str, Any]) -> list[str]:
    """What `tmux-agent status` prints about plans and suggestions."""
    lines: list[str] = []
    plan = metadata.get("task_decomposition")
    progress = plan_progress(plan)
    if progress is not None and isinstance(plan, dict):
        extra = f", running {progress['running']}" if progress["running"] else ""
        extra += f", failed {', '.join(map(str, progress['failed']))}" if progress["failed"] else ""
        lines.append(
            f"  plan: {progress['done']}/{progress['total']} done ({progress['state']}{extra}) "
            f"from {plan.get('source')} by {plan.get('generated_by')}"
        )
        if plan.get("stopped_reason"):
            lines.append(f"    stopped: {plan['stopped_reason']}")
        if plan.get("state") == "waiting_approval":
            lines.append(f"    answer: tmux-agent approve {session} plan")
    next_actions = metadata.get("next_actions")
    if isinstance(next_actions, dict) and next_actions.get("recommendations"):
        lines.append(f"  next actions ({next_actions.get('source')}, {next_actions.get('generated_at')}):")
        for rec in next_actions["recommendations"]:
            lines.append(f"    [{rec.get('priority')}] {rec.get('id')} {rec.get('title')}")
            if rec.get("command"):
                lines.append(f"        {shown(rec)} · {policy_hint(session, rec)}")
    return lines
