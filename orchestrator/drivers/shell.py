"""The shell driver: a unit of work is a shell command typed into an interactive bash or zsh.

How a command reaches the pane and how its end is known is described in
`orchestrator.drivers.shell_files` (sourced scripts, an exit record written by the shell,
output teed to a file) and `orchestrator.drivers.waiters` (one `tmux wait-for` per running
command). This class keeps the per-command files and waiters, keyed by command id, behind the
`orchestrator.ports.Driver` seam, so the engine never sees a path or a channel.
"""

from __future__ import annotations

import hashlib
import queue
import shutil
from pathlib import Path

from orchestrator.config import TmuxConfig
from orchestrator.drivers.shell_files import CommandFiles
from orchestrator.drivers.waiters import CompletionWaiters
from orchestrator.model import CommandRow, ExitRecord, SessionKind
from orchestrator.ports import PaneIO


def channel_token(state_db: Path, command_id: int) -> str:
    """Unique per state DB, so two orchestrators on one tmux server never share a channel."""
    digest = hashlib.sha1(str(state_db).encode()).hexdigest()[:8]
    return f"{digest}-{command_id}"


def wait_for_argv(tmux: TmuxConfig, channel: str) -> list[str]:
    return [shutil.which("tmux") or "tmux", *tmux.cli_args(), "wait-for", channel]


class ShellDriver:
    kind: SessionKind = "shell"

    def __init__(self, panes: PaneIO, tmux: TmuxConfig, runtime_dir: Path, state_db: Path) -> None:
        self.panes = panes
        self.runtime_dir = runtime_dir
        self.state_db = state_db
        self.waiters = CompletionWaiters(lambda channel: wait_for_argv(tmux, channel))
        self._socket_path: str | None = None

    @property
    def completions(self) -> queue.Queue[int]:
        return self.waiters.events

    def files(self, command_id: int) -> CommandFiles:
        return CommandFiles(self.runtime_dir, channel_token(self.state_db, command_id))

    def _socket(self) -> str:
        if self._socket_path is None:
            self._socket_path = self.panes.socket_path()
        return self._socket_path

    def deliver(self, row: CommandRow, pane_id: str) -> None:
        files = self.files(row.id)
        line = files.write_scripts(row.command, self._socket())
        self.watch(row.id)
        try:
            self.panes.send_text(pane_id, line)
        except BaseException:
            self.discard(row.id)
            raise

    def watch(self, command_id: int) -> None:
        self.waiters.watch(command_id, self.files(command_id).channel)

    def watching(self, command_id: int) -> bool:
        return self.waiters.watching(command_id)

    def started(self, command_id: int) -> bool:
        return self.files(command_id).started()

    def end_record(self, command_id: int) -> ExitRecord | None:
        return self.files(command_id).read_exit()

    def activity_marker(self, command_id: int) -> int:
        return self.files(command_id).output_size()

    def output_tail(self, command_id: int, lines: int, grace_seconds: float) -> str:
        return self.files(command_id).read_tail(lines, grace_seconds)

    def interrupt(self, command_id: int, pane_id: str, keys: tuple[str, ...]) -> None:
        self.panes.send_keys(pane_id, *keys)

    def discard(self, command_id: int) -> None:
        self.waiters.forget(command_id)
        self.files(command_id).remove()

    def close(self) -> None:
        self.waiters.close()
