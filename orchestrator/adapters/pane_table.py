"""Every pane's row (`list-panes -a`), read once and shared by every reader in the process.

Three readers want the whole table: the shell driver's probes (is the pane's shell at its
prompt, in a mode, alive), decision assist's activity stamps (has the pane drawn since the last
look) and the engine's liveness round (which running command's pane is gone). Each asking tmux
for itself made two to four `list-panes -a` per round at 100 panes, most of the server's share
of an idle fleet's CPU. Here each reader says how old an answer it accepts: a probe before
typing wants milliseconds, a look at an idle pane's state half a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from orchestrator.model import PaneInfo
from orchestrator.ports import PaneIO


class PaneTable:
    def __init__(self, tmux: PaneIO, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.tmux = tmux
        self.monotonic = monotonic
        self._rows: dict[str, PaneInfo] = {}
        self._at = float("-inf")

    def rows(self, max_age: float) -> dict[str, PaneInfo]:
        """The table, read again when it is older than `max_age` seconds (raises what the port
        raises when tmux does not answer). Never change what it returns."""
        now = self.monotonic()
        if now - self._at > max_age:
            self._rows = self.tmux.all_pane_info()
            self._at = now
        return self._rows

    def row(self, pane_id: str, max_age: float) -> PaneInfo | None:
        """One pane's row; a pane the kept table does not know yet (just created) is asked for again."""
        found = self.rows(max_age).get(pane_id)
        if found is None and self._at != self.monotonic():
            found = self.rows(-1.0).get(pane_id)
        return found

    def forget(self) -> None:
        """Something changed that the kept table cannot show (a server restart): read it again next time."""
        self._at = float("-inf")
