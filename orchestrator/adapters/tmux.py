"""The one tmux adapter: find panes, type into them, read them, wait on channels.

Built on libtmux's Server so `-L` (socket name) and `-S` (socket path) servers
work alike. Text is always sent with `send-keys -l`, so quotes, `$`, unicode
and long lines reach the shell exactly as written.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import libtmux

from orchestrator.config import TmuxConfig
from orchestrator.errors import PaneNotFound, TmuxUnavailable
from orchestrator.model import PaneInfo, PaneRef

PANE_FIELDS = (
    "pane_id",
    "pane_pid",
    "pane_dead",
    "pane_in_mode",
    "pane_mode",
    "pane_current_command",
    "cursor_x",
    "cursor_y",
    "pane_width",
    "pane_tty",
    "pane_pipe",
    "window_activity",
)
PANE_FORMAT = "\t".join(f"#{{{name}}}" for name in PANE_FIELDS)


def parse_pane_info(line: str) -> PaneInfo | None:
    parts = line.split("\t")
    if len(parts) != len(PANE_FIELDS) or not parts[0].startswith("%"):
        return None
    pane_id, pid, dead, in_mode, mode, command, x, y, width, tty, piped, activity = parts
    try:
        return PaneInfo(
            pane_id,
            int(pid),
            dead == "1",
            in_mode == "1",
            mode,
            command,
            int(x),
            int(y),
            int(width),
            tty,
            piped == "1",
            int(activity or 0),
        )
    except ValueError:
        return None


def pipe_command(path: Path) -> str:
    """The `pipe-pane` command that appends a pane's output to `path` (one `cat` per pane)."""
    return f"exec cat >> {shlex.quote(str(path))}"


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
        """The pane a target names right now; PaneNotFound when it names none.

        `display-message -t` alone falls back to another pane when the target's window is gone
        (a closed `weather:bot` would answer with the person's `weather:logs`), so the same tmux
        call first lists the target's window with `list-panes -t`, which fails on a missing
        window or pane, and the pane shown must be one of those listed."""
        try:
            out = self._run(
                "list-panes", "-t", target, "-F", "#{pane_id}", ";", "display-message", "-p", "-t", target, "#{pane_id}"
            )
        except TmuxUnavailable as exc:
            # "can't find window: bot" says no more than the line below; anything else (no server) does
            reason = "" if "can't find" in str(exc) else f" ({exc})"
            raise PaneNotFound(
                f"no tmux pane for target '{target}'{reason}",
                key="target",
                fix="create the pane or fix the session's target in agent-config.yaml",
            ) from None
        shown = out[-1].strip() if out else ""
        if not shown.startswith("%") or shown not in {line.strip() for line in out[:-1]}:
            raise PaneNotFound(
                f"no tmux pane for target '{target}'", key="target", fix="create the pane or fix the session's target"
            )
        return PaneRef(pane_id=shown, target=target)

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

    def paste_text(self, pane_id: str, text: str, *, enter: bool = True) -> None:
        """Paste text whole through a private tmux buffer, bracketed (`paste-buffer -p`) so a TUI
        takes multi-line, unicode and quoted text as one paste; then Enter if asked."""
        buffer = f"tmuxagent-{uuid.uuid4().hex[:12]}"
        args = ["set-buffer", "-b", buffer, "--", text, ";", "paste-buffer", "-p", "-d", "-b", buffer, "-t", pane_id]
        if enter:
            args += [";", "send-keys", "-t", pane_id, "Enter"]
        self._run(*args)

    def send_keys(self, pane_id: str, *keys: str) -> None:
        """Named keys such as C-c or Escape, not literal text."""
        self._run("send-keys", "-t", pane_id, *keys)

    def capture(self, pane_id: str, lines: int = 50) -> list[str]:
        out = self._run("capture-pane", "-p", "-J", "-t", pane_id, "-S", f"-{lines}")
        while out and not out[-1].strip():
            out.pop()
        return out[-lines:]

    def pane_info(self, pane_id: str) -> PaneInfo | None:
        """Mode, cursor, first process and terminal of a pane; None when it is gone."""
        try:
            out = self._run("display-message", "-p", "-t", pane_id, PANE_FORMAT)
        except TmuxUnavailable:
            return None
        return parse_pane_info(out[0]) if out else None

    def all_pane_info(self) -> dict[str, PaneInfo]:
        """Every pane of the server in one tmux call (what a loop round needs of all of them)."""
        try:
            out = self._run("list-panes", "-a", "-F", PANE_FORMAT)
        except TmuxUnavailable:
            return {}
        found = (parse_pane_info(line) for line in out)
        return {info.pane_id: info for info in found if info is not None}

    def screen_line(self, pane_id: str, row: int) -> str:
        """One row of the visible screen with its trailing spaces (cursor rows count from 0)."""
        out = self._run("capture-pane", "-p", "-N", "-t", pane_id, "-S", str(row), "-E", str(row))
        return out[0] if out else ""

    def pipe_pane(self, pane_id: str, command: str) -> None:
        """Copy everything the pane's program writes to `command`'s stdin (tmux pipe-pane)."""
        self._run("pipe-pane", "-t", pane_id, command)

    def copy_output(self, pane_id: str, path: Path) -> None:
        """From now on everything the pane's program writes is appended to `path` (pipe-pane)."""
        self.pipe_pane(pane_id, pipe_command(path))

    def copying(self, pane_id: str, known: PaneInfo | None = None) -> bool:
        """tmux says the pane has a pipe (`#{pane_pipe}`)."""
        info = known if known is not None else self.pane_info(pane_id)
        return info is not None and info.piped

    def server_identity(self) -> str | None:
        """The server's pid and start time: a restarted server (whose pane ids start at %0 again)
        has another identity. None when no server answers."""
        try:
            out = self._run("display-message", "-p", "#{pid} #{start_time}")
        except TmuxUnavailable:
            return None
        return out[0].strip() if out else None

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
