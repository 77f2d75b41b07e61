"""The one tmux adapter: find panes, type into them, read them, wait on channels.

Built on libtmux's Server so `-L` (socket name) and `-S` (socket path) servers
work alike. Text is always sent with `send-keys -l`, so quotes, `$`, unicode
and long lines reach the shell exactly as written.
"""

from __future__ import annotations

import shutil
import subprocess

import libtmux

from orchestrator.config import TmuxConfig
from orchestrator.errors import PaneNotFound, TmuxUnavailable
from orchestrator.model import PaneRef


class TmuxAdapter:
    def __init__(self, config: TmuxConfig) -> None:
        self.config = config
        self.server = libtmux.Server(socket_name=config.socket_name, socket_path=config.socket_path)
        self.tmux_bin = shutil.which("tmux") or "tmux"

    def _run(self, *args: str) -> list[str]:
        try:
            result = self.server.cmd(*args)
        except Exception as exc:  # libtmux raises its own errors when the binary/server misbehaves
            raise TmuxUnavailable(str(exc)) from exc
        if result.returncode != 0:
            raise TmuxUnavailable(" ".join(result.stderr) or f"tmux {args[0]} failed")
        return list(result.stdout)

    def resolve(self, target: str) -> PaneRef:
        """The pane a target names right now; PaneNotFound when it names none."""
        try:
            out = self._run("display-message", "-p", "-t", target, "#{pane_id}")
        except TmuxUnavailable as exc:
            raise PaneNotFound(
                f"no tmux pane for target '{target}' ({exc})",
                key="target",
                fix="create the pane or fix the session's target in agent-config.yaml",
            ) from None
        if not out or not out[0].startswith("%"):
            raise PaneNotFound(
                f"no tmux pane for target '{target}'", key="target", fix="create the pane or fix the session's target"
            )
        return PaneRef(pane_id=out[0].strip(), target=target)

    def pane_alive(self, pane_id: str) -> bool:
        try:
            out = self._run("list-panes", "-a", "-F", "#{pane_id} #{pane_dead}")
        except TmuxUnavailable:
            return False
        return any(line == f"{pane_id} 0" for line in out)

    def send_text(self, pane_id: str, text: str, *, enter: bool = True) -> None:
        if enter:  # one tmux call: the text, then Enter (a lone ';' argument separates commands)
            self._run("send-keys", "-t", pane_id, "-l", "--", text, ";", "send-keys", "-t", pane_id, "Enter")
        else:
            self._run("send-keys", "-t", pane_id, "-l", "--", text)

    def send_keys(self, pane_id: str, *keys: str) -> None:
        """Named keys such as C-c or Escape, not literal text."""
        self._run("send-keys", "-t", pane_id, *keys)

    def capture(self, pane_id: str, lines: int = 50) -> list[str]:
        out = self._run("capture-pane", "-p", "-J", "-t", pane_id, "-S", f"-{lines}")
        while out and not out[-1].strip():
            out.pop()
        return out[-lines:]

    def socket_path(self) -> str:
        return self._run("display-message", "-p", "#{socket_path}")[0].strip()

    def wait_for_argv(self, channel: str) -> list[str]:
        return [self.tmux_bin, *self.config.cli_args(), "wait-for", channel]

    def wait_for(self, channel: str) -> subprocess.Popen[bytes]:
        """Start blocking on a `tmux wait-for` channel; the caller waits or kills it."""
        return subprocess.Popen(
            self.wait_for_argv(channel), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def signal(self, channel: str) -> None:
        self._run("wait-for", "-S", channel)
