"""Real, isolated tmux servers for tests.

Each server has its own socket name (unique per xdist worker and test), starts
with no user config (`-f /dev/null`), and is killed on teardown. Agent panes
run a plain `bash --norc --noprofile` (PANE_SHELL; the `tmuxagent_pane_shell` fixture
overrides it) or, per pane, one of the realistic shells of `shells.py` (`bash-rc`,
`bash-errexit`, `zsh`, `dash`) with rc files in the test's tmp dir, so a user's own shell
setup can't leak in. A named shell's pane is returned once its prompt is drawn.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import libtmux
import pytest

from .shells import PANE_SHELL, PaneShell, ShellName, custom_shell, is_shell_name, prepare_shell, shell_program
from .waiting import wait_until

__all__ = ["PANE_SHELL", "PROMPT_TIMEOUT", "AgentPane", "AgentPaneFactory", "TmuxTestServer"]

PROMPT_TIMEOUT = 15.0  # seconds a new pane's shell has to draw its first prompt


@dataclass
class AgentPane:
    """A tmux pane standing in for one supervised agent session."""

    name: str
    target: str
    pane_id: str
    workdir: Path
    server: TmuxTestServer
    shell: PaneShell = field(default_factory=lambda: custom_shell(PANE_SHELL))

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

    def cursor(self) -> tuple[int, int] | None:
        """The cursor's (x, y) on the visible screen; None when the pane is gone or dead."""
        out = self.server.server.cmd(
            "display-message", "-p", "-t", self.pane_id, "#{pane_dead} #{cursor_x} #{cursor_y}"
        )
        if out.returncode != 0 or not out.stdout:
            return None
        dead, x, y = out.stdout[0].split()
        return None if dead == "1" else (int(x), int(y))

    def prompt_line(self) -> str | None:
        """The text left of the cursor on its row (the prompt, when nothing is typed); None when
        the pane is gone or dead."""
        cursor = self.cursor()
        if cursor is None:
            return None
        x, y = cursor
        screen: list[str] = self.server.server.cmd("capture-pane", "-p", "-t", self.pane_id).stdout
        line = screen[y] if y < len(screen) else ""
        return line.ljust(x)[:x]  # capture-pane drops trailing blanks; the cursor is past them

    def wait_prompt(self, timeout: float = PROMPT_TIMEOUT) -> str:
        """Wait until the shell has drawn a prompt (the cursor is right of text ending like this
        shell's prompt) and return that text. A custom shell without known endings: right of any text."""
        endings = self.shell.prompt_endings

        def drawn() -> str | None:
            left = self.prompt_line()
            if left is None:
                raise RuntimeError(f"the pane's shell exited: {self.shell.command}")
            if left and (not endings or left.endswith(endings)):
                return left
            return None

        prompt: str = wait_until(
            drawn, timeout=timeout, message=f"{self.shell.name} in {self.target} to draw its prompt"
        )
        return prompt

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
    pane_shell: str = PANE_SHELL  # what new panes run: a ShellName (`zsh`…) or a command line

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

    def pane_shell_for(self, name: str, shell: ShellName | None) -> PaneShell:
        """The shell `name`'s pane runs: `shell`, else `pane_shell` (a shell name or a command line)."""
        chosen: str = shell or self.pane_shell
        if not is_shell_name(chosen):
            if shell is not None:
                raise ValueError(f"unknown pane shell {shell!r}")
            return custom_shell(chosen)
        if shutil.which(shell_program(chosen)) is None:
            pytest.skip(f"pane shell {chosen!r} needs {shell_program(chosen)}, which is not installed")
        return prepare_shell(chosen, self.root / ".shells" / f"{name.replace('/', '_')}-{chosen}")

    def agent_pane(self, name: str, workdir: Path | None = None, shell: ShellName | None = None) -> AgentPane:
        """Create the pane for `name` in the session and window `session_for` names, running
        `shell` (default: `pane_shell`), and wait for its first prompt when the shell is known."""
        session_name, window_name = self.session_for(name)
        workdir = workdir or (self.root / name.replace("/", "_"))
        workdir.mkdir(parents=True, exist_ok=True)
        pane_shell = self.pane_shell_for(name, shell)
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
                *pane_shell.argv,
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
                *pane_shell.argv,
            )
        if out.returncode != 0 or not out.stdout:
            raise RuntimeError(f"could not create pane for {name}: {out.stderr}")
        pane = AgentPane(
            name=name,
            target=f"{session_name}:{window_name}",
            pane_id=out.stdout[0].strip(),
            workdir=workdir,
            server=self,
            shell=pane_shell,
        )
        self.panes.append(pane)
        if pane_shell.prompt_endings:
            pane.wait_prompt()
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
    `weather`, window `bot` on the test's server, running `shell` (a `ShellName`: `bash`,
    `bash-rc`, `bash-errexit`, `zsh`, `dash`; default `tmuxagent_pane_shell`) in `workdir` (a
    fresh folder under the test's tmp_path by default). A named shell's pane is returned once its
    prompt is drawn."""

    def __call__(self, name: str, workdir: Path | None = None, shell: ShellName | None = None) -> AgentPane: ...
