"""Failure streaks: consecutive failed commands per session.

At `failure_alert_threshold` the session is blocked — queued commands stay queued, neither lost
nor dispatched — and one "命令连续失败" notification goes out for the streak. A success resets
the streak; `tmux-agent unblock` lifts the block (it writes the DB, which `may_dispatch` reads
before each dispatch). The gate only reads; `tick()` mirrors the DB's streak and block into the
gauges, so an unblock from the CLI shows on /metrics within a round.
"""

from __future__ import annotations

from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.events import CommandFinished, EventBus
from orchestrator.model import SessionStateName
from orchestrator.notify.notifier import alert_markdown
from orchestrator.ports import Notify
from orchestrator.state.audit import AuditLog
from orchestrator.state.port import Store

STREAK_TITLE = "命令连续失败"


def streak_value(value: object) -> int:
    """Metadata `failure_streak` as an int; anything else (`"abc"`, `true`, `-1`) counts as 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    return 0


class FailureStreak:
    closed_state: SessionStateName = "blocked"

    def __init__(
        self,
        sessions: list[str],
        threshold: int,
        *,
        store: Store,
        audit: AuditLog,
        metrics: OrchestratorMetrics,
        notify: Notify,
    ) -> None:
        self.sessions = list(sessions)
        self.threshold = threshold
        self.store = store
        self.audit = audit
        self.metrics = metrics
        self.notify = notify
        self._synced_generation = -1

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(CommandFinished, self.on_result)

    def may_dispatch(self, session: str) -> bool:
        return self.store.metadata_view(session).get("blocked") is not True  # only a real `true` blocks

    def tick(self) -> None:
        """Mirror the DB into the gauges — only when something in the DB changed since the last
        look (the store's snapshot generation), so an idle round costs nothing per session."""
        if self.store.generation == self._synced_generation:
            return
        self._synced_generation = self.store.generation
        for name in self.sessions:
            metadata = self.store.metadata_view(name)  # cleaned: a value that does not fit is absent
            self.metrics.blocked.labels(session=name).set(1 if metadata.get("blocked") is True else 0)
            self.metrics.failure_streak.labels(session=name).set(streak_value(metadata.get("failure_streak")))

    def on_result(self, event: CommandFinished) -> None:
        name, row, result = event.session, event.row, event.result
        if result.status == "succeeded":
            if self.store.metadata_view(name).get("failure_streak") != 0:  # a commit only when it changes
                self.store.update_metadata(name, {"failure_streak": 0})
            self.metrics.failure_streak.labels(session=name).set(0)
            return
        if result.status != "failed":
            return
        streak = self.store.modify_metadata(name, "failure_streak", lambda value: streak_value(value) + 1)
        self.metrics.failure_streak.labels(session=name).set(streak)
        if streak < self.threshold or self.store.metadata(name).get("blocked") is True:
            return
        self.store.update_metadata(name, {"blocked": True})
        self.metrics.blocked.labels(session=name).set(1)
        self.audit.record(
            "failure_streak",
            name,
            command_id=row.id,
            command=row.command,
            detail=f"{streak} consecutive failures (threshold {self.threshold})",
        )
        self.audit.record("session_blocked", name, detail="queued commands wait for `tmux-agent unblock`")
        body = alert_markdown(
            name,
            [
                ("连续失败 consecutive failures", f"{streak} (threshold {self.threshold})"),
                ("最后命令 last command", f"`{row.command}` → exit {result.exit_code}"),
                ("已阻断 blocked", f"run `tmux-agent unblock {name}` to resume"),
            ],
            result.output_tail,
        )
        self.notify.notify(
            kind="failure_streak",
            session=name,
            title=f"{STREAK_TITLE} · {name}",
            body=body,
            dedupe_key=f"streak:{name}:{row.id}",
        )
