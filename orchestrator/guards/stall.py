"""Stall detection and self-healing.

A running command whose output file has not grown for `stall_timeout_seconds`
is stalled (a command that keeps printing, a progress bar or a build log, is
not). The guard interrupts it with the session's interrupt keys and queues it
again, up to `stall_retries_before_notify` times; then the command ends
`stalled`, "命令卡顿" is sent, and the session cools down for `cooldown_seconds`.

Why the guard synthesises the end after an interrupt: an interactive shell that
sees its foreground job die of SIGINT abandons the rest of the typed line, so
the epilogue that records the exit code may never run. The guard therefore
waits `interrupt_grace_seconds` for an exit record and otherwise decides itself.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from orchestrator.clock import iso_utc, parse_iso_utc
from orchestrator.drivers.shell_files import ExitRecord
from orchestrator.errors import TmuxUnavailable
from orchestrator.model import CommandResult
from orchestrator.notify.notifier import alert_markdown

if TYPE_CHECKING:
    from orchestrator.engine.supervisor import SessionState, Supervisor

log = logging.getLogger("orchestrator.guards.stall")

STALL_TITLE = "命令卡顿"


class StallGuard:
    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self.settings = supervisor.config.settings

    # cooldown gate ---------------------------------------------------------------
    def may_dispatch(self, state: SessionState) -> bool:
        until = state.cooldown_until
        if until is None:
            return True
        if self.sup.clock.now() < until:
            return False
        state.cooldown_until = None
        self.sup.store.update_metadata(state.config.name, {"cooldown_until": None})
        self.sup.audit.record("cooldown_ended", state.config.name)
        return True

    def load(self, state: SessionState, metadata: dict[str, object]) -> None:
        """Honour a cooldown recorded before a restart."""
        until = metadata.get("cooldown_until")
        if isinstance(until, str):
            state.cooldown_until = parse_iso_utc(until)

    # watching a running command ------------------------------------------------------
    def check(self, state: SessionState) -> None:
        running = state.running
        assert running is not None
        now = self.sup.clock.monotonic()
        if running.interrupt_sent_at is not None:
            if now - running.interrupt_sent_at >= self.settings.interrupt_grace_seconds:
                self.resolve(state, None)
            return
        idle = now - running.last_activity
        if idle < self.settings.stall_timeout_seconds:
            return
        name = state.config.name
        running.stalled_for = now - running.sent_at
        self.sup.metrics.stall_count.labels(session=name).inc()
        count = self.sup.store.increment_metadata(name, "stall_count")
        tail = self.sup.output_tail(running)
        self.sup.audit.record(
            "stall_detected",
            name,
            command_id=running.row.id,
            command=running.row.command,
            detail=f"no output for {idle:.1f}s (stall #{count})",
            output_tail=tail,
        )
        keys = list(state.config.interrupt_keys)
        try:
            self.sup.tmux.send_keys(running.pane_id, *keys)
        except TmuxUnavailable as exc:
            log.warning("could not interrupt %s: %s", name, exc)
        running.interrupt_sent_at = now
        self.sup.audit.record(
            "stall_interrupt",
            name,
            command_id=running.row.id,
            command=running.row.command,
            detail=f"sent {' '.join(keys)}",
        )

    def resolve(self, state: SessionState, record: ExitRecord | None) -> None:
        """The interrupted command is over: queue it again, or give up and alert."""
        running = state.running
        assert running is not None
        name, row = state.config.name, running.row
        attempt = self.sup.store.command(row.id).attempts
        if attempt <= self.settings.stall_retries_before_notify:
            self.sup.release(state)
            self.sup.store.revert_to_queued(row.id)
            self.sup.audit.record(
                "stall_retry",
                name,
                command_id=row.id,
                command=row.command,
                detail=f"retry {attempt} of {self.settings.stall_retries_before_notify}",
            )
            return
        now = self.sup.clock.now()
        tail = self.sup.output_tail(running)
        waited = running.stalled_for
        result = CommandResult(
            exit_code=record.exit_code if record else None,
            status="stalled",
            started_at=iso_utc(record.started) if record else (row.started_at or iso_utc(now)),
            finished_at=iso_utc(record.finished if record else now),
            duration_s=round(record.finished - record.started if record else waited, 6),
            output_tail=tail,
        )
        self.sup.record(state, result, detail=f"stalled after {attempt} attempt(s)")
        self._alert(name, row.id, row.command, waited, tail)
        state.cooldown_until = now + self.settings.cooldown_seconds
        self.sup.store.update_metadata(name, {"cooldown_until": iso_utc(state.cooldown_until)})
        self.sup.audit.record(
            "cooldown_started", name, detail=f"{self.settings.cooldown_seconds}s until {iso_utc(state.cooldown_until)}"
        )

    def _alert(self, session: str, command_id: int, command: str, waited: float, tail: str) -> None:
        body = alert_markdown(
            session,
            [
                ("命令 command", f"`{command}`"),
                (
                    "已等待 waited",
                    f"{waited:.1f}s (stall timeout {self.settings.stall_timeout_seconds}s, "
                    f"{self.settings.stall_retries_before_notify} retries)",
                ),
            ],
            tail,
        )
        self.sup.notify(
            kind="stall",
            session=session,
            title=f"{STALL_TITLE} · {session}",
            body=body,
            dedupe_key=f"stall:{session}:{command_id}",
        )
