"""Every pane's row (`list-panes -a`), read once and shared by every reader in the process.

Three readers want the whole table: the shell driver's probes (is the pane's shell at its
prompt, in a mode, alive), decision assist's activity stamps (has the pane drawn since the last
look) and the engine's liveness round (which running command's pane is gone). Each asking tmux
for itself made two to four `list-panes -a` per round at 100 panes, most of the server's share
of an idle fleet's CPU. Here each reader says how old an answer it accepts: a probe before
typing wants milliseconds, a look at an idle pane's state half a second.

A probe before typing wants one pane's row, milliseconds old (`fresh_row`): at 100 panes a
`list-panes -a` takes the server about 5 ms and a `display-message` for the one pane under half
a millisecond, so a `send` into a large fleet asks for its pane alone. Several panes typed into
at once (a queue spread over sessions) share one table read again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from orchestrator.model import PaneInfo
from orchestrator.ports import PaneIO

# fresh single rows asked within one max_age window before the whole table is read instead
SINGLE_ROWS_BEFORE_TABLE = 4


class PaneTable:
    def __init__(self, tmux: PaneIO, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.tmux = tmux
        self.monotonic = monotonic
        self._rows: dict[str, PaneInfo] = {}
        self._at = float("-inf")
        self._single: dict[str, tuple[float, PaneInfo | None]] = {}  # pane → (when asked, its row)

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

    def fresh_row(self, pane_id: str, max_age: float) -> PaneInfo | None:
        """One pane's row at most `max_age` seconds old: from the table when it is that fresh,
        else asked of tmux for this pane alone — unless SINGLE_ROWS_BEFORE_TABLE panes were
        asked for in this window already, when one read of the whole table serves them all."""
        now = self.monotonic()
        if now - self._at <= max_age:
            return self.row(pane_id, max_age)
        kept = self._single.get(pane_id)
        if kept is not None and now - kept[0] <= max_age:
            return kept[1]
        if sum(now - at <= max_age for at, _ in self._single.values()) >= SINGLE_ROWS_BEFORE_TABLE:
            return self.row(pane_id, max_age)
        found = self.tmux.pane_info(pane_id)
        self._single[pane_id] = (now, found)
        return found

    def forget(self) -> None:
        """Something changed that the kept table cannot show (a server restart): read it again next time."""
        self._at = float("-inf")
        self._single.clear()
