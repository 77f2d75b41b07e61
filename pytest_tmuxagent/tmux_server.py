"""Real, isolated tmux servers for tests.

Each server has its own socket name (unique per xdist worker and test), starts
with no user config (`-f /dev/null`), and is killed on teardown. Agent panes
run a plain `bash --norc --noprofile` (PANE_SHELL; the `tmuxagent_pane_shell` fixture
overrides it) so a user's shell setup can't leak in.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import libtmux

__all__ = ["PANE_SHELL", "AgentPane", "AgentPaneFactory", "TmuxTestServer"]

PANE_SHELL = "env PS1='$ ' HISTFILE=/dev/null TERM=xterm-256color bash --norc --noprofile"


@dataclass
class AgentPane:
    """A tmux pane standing in for one supervised agent session."""

    name: str
    target: str
    pane_id: str
    workdir: Path
    server: TmuxTestServer

    def capture(self, lines: int = 50) -> list[str]:
        """The pane's last `lines` lines (wrapped lines joined)."""
        out: list[str] = self.server.server.cmd(
            "capture-pane", "-p", "-J", "-t", self.pane_id, "-S", f"-{lines}"
        ).stdout
        return out

    def type(self, text: str, enter: bool = True) -> None:
        """Type `text` literally (then Enter), as a person at the keyboard would."""
        self.server.server.cmd("send-keys", "-t", self.pane_id, "-l", "--", text)
        if enter:
            self.server.server.cmd("send-keys", "-t", self.pane_id, "Enter")

    def kill(self) -> None:
        self.server.server.cmd("kill-pane", "-t", self.pane_id)

    def session_config(self, **extra: object) -> dict[str, object]:
        entry: dict[str, object] = {"name": self.name, "target": self.target, "workdir": str(self.workdir)}
        entry.update(extra)
        return entry


@dataclass
class TmuxTestServer:
    """A private tmux server (socket `socket_name`, no user config); `agent_pane` makes panes on it."""

    socket_name: str
    root: Path
    server: libtmux.Server = field(init=False)
    panes: list[AgentPane] = field(default_factory=list)
    pane_shell: str = PANE_SHELL  # the command each new pane runs

    def __post_init__(self) -> None:
        if shutil.which("tmux") is None:
            raise RuntimeError("tmux is not installed; .ci/run installs it with apt")
        self.server = libtmux.Server(config_file="/dev/null", **self._libtmux_kwargs())

    def _libtmux_kwargs(self) -> dict[str, Any]:
        return {"socket_name": self.socket_name}

    def session_for(self, name: str) -> tuple[str, str]:
        """'weather/bot' → tmux session 'weather', window 'bot'."""
        session_name, _, window_name = name.partition("/")
        return session_name, window_name.replace("/", "-") or "main"

    @classmethod
    def unique(cls, root: Path, pane_shell: str = PANE_SHELL) -> TmuxTestServer:
        """A server with a socket name no other test or xdist worker uses."""
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        return cls(socket_name=f"tmuxagent-{worker}-{uuid.uuid4().hex[:10]}", root=root, pane_shell=pane_shell)

    def tmux_config(self) -> dict[str, str]:
        """The `tmux:` block of an agent-config.yaml that reaches this server."""
        return {"socket_name": self.socket_name}

    def agent_pane(self, name: str, workdir: Path | None = None) -> AgentPane:
        """Create the pane for `name` in the session and window `session_for` names."""
        session_name, window_name = self.session_for(name)
        workdir = workdir or (self.root / name.replace("/", "_"))
        workdir.mkdir(parents=True, exist_ok=True)
        has = self.server.cmd("has-session", "-t", f"={session_name}").returncode == 0
        if has:
            out = self.server.cmd(
                "new-window",
                "-d",
                "-P",
                "-F",
                "#{pane_id}",
                "-t",
                f"={session_name}:",
                "-n",
                window_name,
                "-c",
                str(workdir),
                self.pane_shell,
            )
        else:
            out = self.server.cmd(
                "new-session",
                "-d",
                "-P",
                "-F",
                "#{pane_id}",
                "-s",
                session_name,
                "-n",
                window_name,
                "-x",
                "200",
                "-y",
                "50",
                "-c",
                str(workdir),
                self.pane_shell,
            )
        if out.returncode != 0 or not out.stdout:
            raise RuntimeError(f"could not create pane for {name}: {out.stderr}")
        pane = AgentPane(
            name=name,
            target=f"{session_name}:{window_name}",
            pane_id=out.stdout[0].strip(),
            workdir=workdir,
            server=self,
        )
        self.panes.append(pane)
        return pane

    @property
    def socket_file(self) -> Path:
        """Where tmux puts a `-L` socket (tmux does not remove it when the server exits)."""
        return Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}" / self.socket_name

    def kill(self) -> None:
        try:
            self.server.cmd("kill-server")
        except Exception:  # already gone is fine at teardown
            pass
        self.socket_file.unlink(missing_ok=True)


class AgentPaneFactory(Protocol):
    """What the `agent_pane` fixture returns: `agent_pane("weather/bot")` makes tmux session
    `weather`, window `bot` on the test's server, running `tmuxagent_pane_shell` in `workdir`
    (a fresh folder under the test's tmp_path by default)."""

    def __call__(self, name: str, workdir: Path | None = None) -> AgentPane: ...
