"""Stall detection and self-healing, as a policy: verdicts, a cooldown gate, an alert.

A running command whose output has not grown for `stall_timeout_seconds` is stalled (a command
that keeps printing, a progress bar or a build log, is not). The guard's verdict is `interrupt`;
the engine sends the session's interrupt keys. After the interrupt, the command is queued again
(`retry`) up to `stall_retries_before_notify` times — only when the session is marked
`retry_safe: true`, since a command is not always safe to run twice; then it ends `stalled` (`give_up`), the guard
sends "命令卡顿" and the session cools down for `cooldown_seconds`.

Why the guard decides after a grace: an interactive shell that sees its foreground job die of
SIGINT abandons the rest of the typed line, so the epilogue that records the exit code may never
run. So `interrupt_grace_seconds` after an interrupt the verdict is retry or give up, exit record
or not.

The cooldown survives a restart (metadata `cooldown_until`). `may_dispatch` only reads; the end
of a cooldown is noticed and recorded by `tick()`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from orchestrator.clock import Clock, iso_utc, parse_iso_utc
from orchestrator.config import OrchestratorSettings, SessionConfig
from orchestrator.events import EventBus, SessionAttached, StallDetected, StallGaveUp
from orchestrator.metadata import clean_metadata
from orchestrator.model import Running, SessionStateName, StallVerdict
from orchestrator.notify.notifier import alert_markdown
from orchestrator.ports import Notify
from orchestrator.state.audit import AuditLog
from orchestrator.state.port import Store

log = logging.getLogger("orchestrator.stall")

STALL_TITLE = "命令卡顿"

WAIT = StallVerdict("wait")


def _count(value: object) -> int:
    return max(0, value) if isinstance(value, int) and not isinstance(value, bool) else 0


class StallGuard:
    closed_state: SessionStateName = "cooldown"

    def __init__(
        self,
        settings: OrchestratorSettings,
        *,
        store: Store,
        audit: AuditLog,
        notify: Notify,
        clock: Clock,
        sessions: Sequence[SessionConfig] = (),
    ) -> None:
        self.settings = settings
        self.retry_safe = {s.name: s.retry_safe for s in sessions}
        self.store = store
        self.audit = audit
        self.notify = notify
        self.clock = clock
        self.cooldown_until: dict[str, float] = {}

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(SessionAttached, self._on_attached)
        bus.subscribe(StallDetected, self._on_detected)
        bus.subscribe(StallGaveUp, self._on_gave_up)

    # verdicts ----------------------------------------------------------------------------
    def verdict(self, running: Running, now: float) -> StallVerdict:
        if running.interrupt_sent_at is not None:
            if now - running.interrupt_sent_at >= self.settings.interrupt_grace_seconds:
                return self.after_interrupt(running)
            return WAIT
        idle = now - running.last_activity
        if idle < self.settings.stall_timeout_seconds:
            return WAIT
        return StallVerdict("interrupt", idle_s=idle)

    def after_interrupt(self, running: Running) -> StallVerdict:
        """Retry only what is safe to repeat (the session says `retry_safe: true`)."""
        if not self.retry_safe.get(running.row.session, False):
            return StallVerdict("give_up")
        if running.row.attempts <= self.settings.stall_retries_before_notify:
            return StallVerdict("retry")
        return StallVerdict("give_up")

    # the cooldown gate --------------------------------------------------------------------
    def may_dispatch(self, session: str) -> bool:
        until = self.cooldown_until.get(session)
        return until is None or self.clock.now() >= until

    def tick(self) -> None:
        """Record the end of every cooldown that is over."""
        now = self.clock.now()
        for session, until in list(self.cooldown_until.items()):
            if now >= until:
                del self.cooldown_until[session]
                self.store.update_metadata(session, {"cooldown_until": None})
                self.audit.record("cooldown_ended", session)

    # subscribers --------------------------------------------------------------------------
    def _on_attached(self, event: SessionAttached) -> None:
        """Honour a cooldown recorded before a restart."""
        until = clean_metadata(self.store.metadata(event.session), event.session).get("cooldown_until")
        if isinstance(until, str):
            try:
                self.cooldown_until[event.session] = parse_iso_utc(until)
            except ValueError:
                log.warning("ignoring unreadable cooldown_until %r of %s", until, event.session)

    def _on_detected(self, event: StallDetected) -> None:
        # a stored `stall_count` that is not a count (written around `meta set`) starts again at 1
        self.store.modify_metadata(event.session, "stall_count", lambda value: _count(value) + 1)

    def _on_gave_up(self, event: StallGaveUp) -> None:
        name, row = event.session, event.row
        body = alert_markdown(
            name,
            [
                ("命令 command", f"`{row.command}`"),
                (
                    "已等待 waited",
                    f"{event.waited_s:.1f}s (stall timeout {self.settings.stall_timeout_seconds}s, "
                    f"{self.settings.stall_retries_before_notify} retries)",
                ),
            ],
            event.output_tail,
        )
        self.notify.notify(
            kind="stall",
            session=name,
            title=f"{STALL_TITLE} · {name}",
            body=body,
            dedupe_key=f"stall:{name}:{row.id}",
        )
        until = self.clock.now() + self.settings.cooldown_seconds
        self.cooldown_until[name] = until
        self.store.update_metadata(name, {"cooldown_until": iso_utc(until)})
        self.audit.record("cooldown_started", name, detail=f"{self.settings.cooldown_seconds}s until {iso_utc(until)}")
