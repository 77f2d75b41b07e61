"""Which pane each session's target names: one lookup, cached until it stops answering.

The engine (through `PaneLocator`) and decision assist's blocker scan (through `PaneReader`)
share one directory, so a session's pane is identified in one place.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.config import SessionConfig
from orchestrator.errors import PaneNotFound, TmuxUnavailable
from orchestrator.ports import PaneIO


class PaneDirectory:
    def __init__(self, tmux: PaneIO, sessions: Iterable[SessionConfig]) -> None:
        self.tmux = tmux
        self.targets = {s.name: s.target for s in sessions}
        self._ids: dict[str, str] = {}
        self.last_error: dict[str, str] = {}
        self._identity: str | None = None

    def pane_id(self, session: str) -> str | None:
        cached = self._ids.get(session)
        if cached is not None:
            return cached
        target = self.targets.get(session)
        if target is None:
            return None
        try:
            found = self.tmux.resolve(target).pane_id
        except PaneNotFound as exc:
            self.last_error[session] = exc.detail
            return None
        self.last_error.pop(session, None)
        if self._identity is None:
            self._identity = self.tmux.server_identity()
        self._ids[session] = found
        return found

    def forget(self, session: str) -> None:
        self._ids.pop(session, None)

    def refresh(self) -> bool:
        """A restarted server numbers its panes from %0 again: its identity (pid, start time) tells
        it from the one whose ids are cached, and every cached id is dropped."""
        identity = self.tmux.server_identity()
        if identity is None:
            return False
        changed = self._identity is not None and identity != self._identity
        self._identity = identity
        if changed:
            self._ids.clear()
        return changed

    def cached(self, session: str) -> str | None:
        """The id known now, without asking tmux."""
        return self._ids.get(session)

    def capture_session(self, session: str, lines: int) -> list[str] | None:
        pane = self.cached(session)
        if pane is None:
            return None
        try:
            return self.tmux.capture(pane, lines)
        except TmuxUnavailable:
            return None
