"""Pane shells as people really run them, for `agent_pane(name, shell=...)`.

`bash` is the bare shell every pane ran so far (PANE_SHELL: no rc files, `PS1='$ '`, no
history). The others are what a developer's terminal looks like — an rc file with colours, a
window title, history and vi keys — written into the test's tmp dir, so a user's real rc files
can never leak in:

- `bash-rc`: an interactive bash reading only our rc (`--noprofile --rcfile`, which replaces
  both /etc/bash.bashrc and ~/.bashrc), HOME and INPUTRC in the tmp dir;
- `bash-errexit`: the same rc plus `set -e`;
- `zsh`: zsh with ZDOTDIR (and HOME) in the tmp dir, so only our .zshrc is read after the
  system's /etc/zsh files;
- `dash`: a shell the orchestrator does not type into (HOME and ENV in the tmp dir).

`prepare_shell(name, directory)` writes the files and returns a `PaneShell`: the command tmux
runs, its home, its rc and history files, and the prompt endings `agent_pane` waits for before it
returns the pane.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeGuard, get_args

__all__ = [
    "PANE_SHELL",
    "SHELL_NAMES",
    "SUPPORTED_SHELL_NAMES",
    "PaneShell",
    "ShellName",
    "custom_shell",
    "is_shell_name",
    "prepare_shell",
    "shell_program",
]

PANE_SHELL = "env PS1='$ ' HISTFILE=/dev/null TERM=xterm-256color bash --norc --noprofile"

ShellName = Literal["bash", "bash-rc", "bash-errexit", "zsh", "dash"]
SHELL_NAMES: tuple[ShellName, ...] = get_args(ShellName)
SUPPORTED_SHELL_NAMES: tuple[ShellName, ...] = ("bash", "bash-rc", "bash-errexit", "zsh")
"""The shells the orchestrator types commands into (bash ≥ 4.4 and zsh); `dash` is not one."""

# Variables of the test process that would change how a pane's shell starts up.
_UNSET = ("BASH_ENV", "ENV", "ZDOTDIR", "PROMPT_COMMAND", "HISTCONTROL", "HISTIGNORE", "INPUTRC", "PS1")

BASH_RC = r"""# ~/.bashrc of a developer (written by pytest_tmuxagent.shells; no real rc file is read)
HISTFILE={histfile}
HISTSIZE=5000
HISTFILESIZE=10000
unset HISTCONTROL HISTIGNORE  # every line is kept, even one typed with a leading space
shopt -s histappend checkwinsize
set -o vi
alias ll='ls -alF'
PS1='\[\e[1;32m\]\u@\h\[\e[0m\]:\[\e[1;34m\]\w\[\e[0m\]\$ '
__title() {{ printf '\033]0;%s: %s\007' "${{HOSTNAME%%.*}}" "${{PWD/#$HOME/\~}}"; }}
PROMPT_COMMAND='__title; history -a'
set -u
"""

ERREXIT = "set -e\n"

INPUTRC = """$include /etc/inputrc
set editing-mode vi
set show-mode-in-prompt off
"""

ZSHRC = r"""# ~/.zshrc of a developer (written by pytest_tmuxagent.shells; ZDOTDIR points here)
HISTFILE={histfile}
HISTSIZE=5000
SAVEHIST=10000
setopt APPEND_HISTORY EXTENDED_HISTORY PROMPT_SUBST
unsetopt HIST_IGNORE_SPACE
bindkey -v
autoload -Uz colors && colors
PROMPT='%F{{green}}%n@%m%f:%F{{blue}}%~%f %# '
precmd() {{ print -Pn '\e]0;%m: %~\a' }}
alias ll='ls -alF'
"""

DASHRC = """# $ENV of a dash user (written by pytest_tmuxagent.shells)
PS1='$ '
"""


@dataclass(frozen=True)
class PaneShell:
    """What a pane runs: `command` (the tmux shell-command) and, for a named shell, its files."""

    name: str  # one of SHELL_NAMES, or "custom" for a `tmuxagent_pane_shell` command line
    command: str
    home: Path | None = None
    rc_file: Path | None = None
    histfile: Path | None = None
    prompt_endings: tuple[str, ...] = ()  # a drawn prompt's last characters; empty: do not wait

    @property
    def argv(self) -> list[str]:
        """What tmux is given: a named shell's words, so tmux runs it without a `sh -c` around it
        (a bash there would read the test process's $BASH_ENV); a custom command line as one string,
        for the default shell to interpret."""
        return [self.command] if self.name == "custom" else shlex.split(self.command)

    @property
    def supported(self) -> bool:
        """Whether the orchestrator types commands into this shell (custom: unknown, assumed)."""
        return self.name != "dash"


def is_shell_name(value: str) -> TypeGuard[ShellName]:
    return value in SHELL_NAMES


def shell_program(name: ShellName) -> str:
    """The executable a named shell runs (`bash-rc` → `bash`)."""
    return name.split("-", 1)[0]


def custom_shell(command: str) -> PaneShell:
    """A command line given by a project's `tmuxagent_pane_shell`: run as is, not waited for."""
    if command == PANE_SHELL:
        return PaneShell("bash", PANE_SHELL, prompt_endings=("$ ",))
    return PaneShell("custom", command)


def _env(assignments: dict[str, str | Path]) -> str:
    unset = " ".join(f"-u {name}" for name in _UNSET)
    values = " ".join(f"{name}={shlex.quote(str(value))}" for name, value in assignments.items())
    return f"env {unset} {values} TERM=xterm-256color"


def prepare_shell(name: ShellName, directory: Path) -> PaneShell:
    """Write `name`'s rc files under `directory` (its HOME) and return how to run it."""
    if name == "bash":
        return PaneShell("bash", PANE_SHELL, prompt_endings=("$ ",))
    home = directory
    home.mkdir(parents=True, exist_ok=True)
    if name in ("bash-rc", "bash-errexit"):
        histfile = home / ".bash_history"
        rc = home / ".bashrc"
        text = BASH_RC.format(histfile=shlex.quote(str(histfile)))
        rc.write_text(text + (ERREXIT if name == "bash-errexit" else ""), encoding="utf-8")
        inputrc = home / ".inputrc"
        inputrc.write_text(INPUTRC, encoding="utf-8")
        env = _env({"HOME": home, "INPUTRC": inputrc})
        command = f"{env} bash --noprofile --rcfile {shlex.quote(str(rc))} -i"
        return PaneShell(name, command, home, rc, histfile, ("$ ", "# "))
    if name == "zsh":
        histfile = home / ".zsh_history"
        rc = home / ".zshrc"
        rc.write_text(ZSHRC.format(histfile=shlex.quote(str(histfile))), encoding="utf-8")
        env = _env({"HOME": home, "ZDOTDIR": home})
        return PaneShell(name, f"{env} zsh -i", home, rc, histfile, ("% ", "# "))
    if name == "dash":
        rc = home / ".dashrc"
        rc.write_text(DASHRC, encoding="utf-8")
        env = _env({"HOME": home, "ENV": rc})
        return PaneShell(name, f"{env} dash -i", home, rc, None, ("$ ",))
    raise ValueError(f"unknown pane shell {name!r}; one of {', '.join(SHELL_NAMES)}")
