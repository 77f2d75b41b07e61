"""Which pane each session's target names: one lookup, cached until it stops answering.

The engine (through `PaneLocator`) and decision assist's blocker scan (through `PaneReader`)
share one directory, so a session's pane is identified in one place.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from orchestrator.adapters.pane_table import PaneTable
from orchestrator.config import SessionConfig
from orchestrator.errors import PaneNotFound, TmuxUnavailable
from orchestrator.ports import PaneIO

ACTIVITY_SNAPSHOT_SECONDS = 0.5


class PaneDirectory:
    def __init__(self, tmux: PaneIO, sessions: Iterable[SessionConfig], table: PaneTable | None = None) -> None:
        self.tmux = tmux
        self.table = table or PaneTable(tmux)
        self.targets = {s.name: s.target for s in sessions}
        self._ids: dict[str, str] = {}
        self.last_error: dict[str, str] = {}
        self._identity: str | None = None
        self._looked: dict[str, float] = {}

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
            self.table.forget()
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

    def drew_since_last_look(self, session: str) -> bool:
        """Whether the session's pane may have drawn anything since this was last answered True.

        tmux stamps a window's `window_activity` (whole seconds of the server's wall clock) on
        every byte a pane of it writes; one `list-panes -a` (shared for half a second) serves
        every session, so a quiet fleet is looked at with one tmux call instead of a
        `capture-pane` per pane. A look in the same second as that stamp counts as "maybe"; a
        pane that shares its window with a busy one is looked at needlessly, never missed. The
        time compared is the real wall clock because it is tmux's, not the engine's clock.
        """
        pane = self.cached(session)
        if pane is None:
            return True
        info = self.table.rows(ACTIVITY_SNAPSHOT_SECONDS).get(pane)
        looked = self._looked.get(session)
        if info is not None and looked is not None and info.activity < int(looked):
            return False
        self._looked[session] = time.time()
        return True
