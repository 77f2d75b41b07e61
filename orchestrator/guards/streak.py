"""Failure streaks: consecutive failed commands per session.

At `failure_alert_threshold` the session is blocked — queued commands stay
queued, neither lost nor dispatched — and one "命令连续失败" notification goes
out for the streak. A success resets the streak; `tmux-agent unblock` lifts the
block (it writes the DB, which the supervisor reads before each dispatch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.model import CommandResult, CommandRow
from orchestrator.notify.notifier import alert_markdown

if TYPE_CHECKING:
    from orchestrator.engine.supervisor import SessionState, Supervisor

STREAK_TITLE = "命令连续失败"


class FailureStreak:
    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self.threshold = supervisor.config.settings.failure_alert_threshold

    def may_dispatch(self, state: SessionState) -> bool:
        name = state.config.name
        metadata = self.sup.store.metadata(name)
        blocked = bool(metadata.get("blocked"))
        streak = int(metadata.get("failure_streak") or 0)
        self.sup.metrics.blocked.labels(session=name).set(1 if blocked else 0)
        self.sup.metrics.failure_streak.labels(session=name).set(streak)
        return not blocked

    def on_result(self, state: SessionState, row: CommandRow, result: CommandResult) -> None:
        name = state.config.name
        if result.status == "succeeded":
            self.sup.store.update_metadata(name, {"failure_streak": 0})
            self.sup.metrics.failure_streak.labels(session=name).set(0)
            return
        if result.status != "failed":
            return
        streak = self.sup.store.increment_metadata(name, "failure_streak")
        self.sup.metrics.failure_streak.labels(session=name).set(streak)
        if streak < self.threshold or self.sup.store.metadata(name).get("blocked"):
            return
        self.sup.store.update_metadata(name, {"blocked": True})
        self.sup.metrics.blocked.labels(session=name).set(1)
        self.sup.audit.record(
            "failure_streak",
            name,
            command_id=row.id,
            command=row.command,
            detail=f"{streak} consecutive failures (threshold {self.threshold})",
        )
        self.sup.audit.record("session_blocked", name, detail="queued commands wait for `tmux-agent unblock`")
        body = alert_markdown(
            name,
            [
                ("连续失败 consecutive failures", f"{streak} (threshold {self.threshold})"),
                ("最后命令 last command", f"`{row.command}` → exit {result.exit_code}"),
                ("已阻断 blocked", f"run `tmux-agent unblock {name}` to resume"),
            ],
            result.output_tail,
        )
        self.sup.notify(
            kind="failure_streak",
            session=name,
            title=f"{STREAK_TITLE} · {name}",
            body=body,
            dedupe_key=f"streak:{name}:{row.id}",
        )
