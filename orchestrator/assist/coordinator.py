"""Decision assist and requirements plans, as one policy object in the supervisor loop.

`tick()` runs on the supervisor thread every `CHECK_SECONDS`: it hands back finished AI jobs,
syncs blockers (pane output, failure streaks), starts decisions and decompositions as
background jobs, and advances plans. Nothing here waits on an AI: a hanging codex only delays
its own answer, never dispatch or feedback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.adapters.ai_client import AIClient
from orchestrator.assist.blockers import BlockerWatch
from orchestrator.assist.decision import DecisionAssist
from orchestrator.assist.jobs import Jobs
from orchestrator.assist.plan_executor import PlanRunner
from orchestrator.envfile import EnvSource
from orchestrator.model import CommandResult, CommandRow

if TYPE_CHECKING:
    from orchestrator.engine.supervisor import SessionState, Supervisor

CHECK_SECONDS = 0.1


class Assist:
    def __init__(self, supervisor: Supervisor, ai: AIClient | None = None) -> None:
        settings = supervisor.config.settings
        self.sup = supervisor
        self.ai = ai or AIClient(settings, EnvSource(settings.env_file).current, supervisor.metrics)
        self.jobs = Jobs(settings.ai.max_concurrency)
        self.blockers = BlockerWatch(supervisor)
        self.decisions = DecisionAssist(supervisor, self.ai, self.jobs) if settings.decision.enabled else None
        self.plans = PlanRunner(supervisor, self.ai, self.jobs, self.blockers) if settings.plan.enabled else None
        self._last_check = float("-inf")

    def tick(self) -> None:
        self.jobs.drain()
        now = self.sup.clock.monotonic()
        if now - self._last_check < CHECK_SECONDS:
            return
        self._last_check = now
        for state in self.sup.sessions.values():
            self.check(state)

    def check(self, state: SessionState) -> None:
        name = state.config.name
        if self.decisions is not None:
            self.blockers.scan_pane(state)
        metadata = self.sup.store.metadata(name)
        if self.decisions is not None:
            metadata = self.blockers.sync_streak(name, metadata)
            self.decisions.check(state, metadata)
        if self.plans is not None:
            self.plans.check(state, metadata)

    def on_result(self, state: SessionState, row: CommandRow, result: CommandResult) -> None:
        if self.decisions is not None and result.output_tail:
            self.blockers.from_output(state.config.name, result.output_tail)

    def busy(self) -> bool:
        """AI work in flight, or a plan that will queue more (what `--once` waits for)."""
        return self.jobs.busy() or (
            self.plans is not None and any(self.plans.active(name) for name in self.sup.sessions)
        )

    def close(self) -> None:
        self.ai.close()
        self.jobs.close()


def status_lines(session: str, metadata: dict) -> list[str]:
    """What `tmux-agent status` prints about plans and suggestions."""
    from orchestrator.assist.decision import policy_hint
    from orchestrator.assist.plan_executor import plan_progress

    lines = []
    plan = metadata.get("task_decomposition")
    progress = plan_progress(plan)
    if progress is not None:
        extra = f", running {progress['running']}" if progress["running"] else ""
        extra += f", failed {', '.join(progress['failed'])}" if progress["failed"] else ""
        lines.append(
            f"  plan: {progress['done']}/{progress['total']} done ({progress['state']}{extra}) "
            f"from {plan.get('source')} by {plan.get('generated_by')}"
        )
        if plan.get("stopped_reason"):
            lines.append(f"    stopped: {plan['stopped_reason']}")
    next_actions = metadata.get("next_actions")
    if isinstance(next_actions, dict) and next_actions.get("recommendations"):
        lines.append(f"  next actions ({next_actions.get('source')}, {next_actions.get('generated_at')}):")
        for rec in next_actions["recommendations"]:
            lines.append(f"    [{rec.get('priority')}] {rec.get('id')} {rec.get('title')}")
            if rec.get("command"):
                lines.append(f"        `{rec['command']}` · {policy_hint(session, rec)}")
    return lines
