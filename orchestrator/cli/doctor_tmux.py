"""`tmux-agent doctor`'s tmux checks: the tmux version, the configured server, and each
session's pane and what runs in it."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

from orchestrator.cli.doctor_checks import CheckResult
from orchestrator.config import Config, SessionConfig, TmuxConfig
from orchestrator.state.store import StateStore

MIN_TMUX = (3, 0)
SUPPORTED_SHELLS = ("bash", "zsh")
TMUX_TIMEOUT_SECONDS = 5.0


def check_tmux() -> CheckResult:
    tmux = shutil.which("tmux")
    if not tmux:
        return CheckResult("tmux", False, "not found on PATH", "install tmux (apt-get install tmux)")
    version = subprocess.run([tmux, "-V"], capture_output=True, text=True).stdout.strip()
    digits = "".join(c if c.isdigit() or c == "." else " " for c in version).split()
    parts = tuple(int(p) for p in (digits[0].split(".") if digits else []) if p)
    ok = parts >= MIN_TMUX
    return CheckResult("tmux", ok, version, f"upgrade to tmux >= {'.'.join(map(str, MIN_TMUX))}")


def _tmux(tmux: TmuxConfig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["tmux", *tmux.cli_args(), *args],
        capture_output=True,
        text=True,
        timeout=TMUX_TIMEOUT_SECONDS,
        stdin=subprocess.DEVNULL,
    )


def _socket_words(tmux: TmuxConfig) -> tuple[str, str]:
    """How to name the configured server to a person, and the command that starts it."""
    if tmux.socket_path:
        return f"socket path {tmux.socket_path}", f"tmux -S {shlex.quote(tmux.socket_path)} new -d"
    if tmux.socket_name:
        return f"socket name {tmux.socket_name}", f"tmux -L {shlex.quote(tmux.socket_name)} new -d"
    return "the default socket", "tmux new -d"


def check_tmux_socket(tmux: TmuxConfig) -> CheckResult:
    where, start = _socket_words(tmux)
    if shutil.which("tmux") is None:
        return CheckResult("tmux socket", False, f"{where}: tmux is not installed", "install tmux")
    try:
        done = _tmux(tmux, "list-sessions", "-F", "#{session_name}")
    except subprocess.TimeoutExpired:
        return CheckResult(
            "tmux socket", False, f"{where}: no answer in {TMUX_TIMEOUT_SECONDS:g}s", f"restart it: {start}"
        )
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split()) or f"exit {done.returncode}"
        return CheckResult("tmux socket", False, f"{where}: no tmux server running ({said})", f"start one: {start}")
    count = len([line for line in done.stdout.splitlines() if line.strip()])
    return CheckResult("tmux socket", True, f"{where}: server answers ({count} session(s))")


def _running_command(config: Config, session: str) -> tuple[int, str] | None:
    """The session's command the state DB says is running (a pane busy with it runs no shell)."""
    if not config.state_db.exists():
        return None
    try:
        store = StateStore(config.state_db, busy_timeout_ms=2000)
    except Exception:  # an unreadable DB is the state DB check's business
        return None
    try:
        row = next((r for r in store.running() if r.session == session), None)
    except Exception:
        return None
    finally:
        store.close()
    return (row.id, row.command) if row is not None else None


def _agent_pane(session: SessionConfig, name: str, program: str) -> CheckResult:
    """An agent session's pane: at a shell prompt the orchestrator launches the agent (with `launch`);
    anything else is taken for the running agent, adopted once its prompt shows."""
    provider = session.provider or "claude"
    if program in SUPPORTED_SHELLS and session.launch:
        return CheckResult(name, True, f"'{session.target}' runs {program}; the orchestrator launches {provider} there")
    if program in SUPPORTED_SHELLS:
        return CheckResult(
            name,
            True,
            f"'{session.target}' runs {program} and the session has no launch: nothing starts {provider}",
            f"start {provider} in the pane, or set launch for '{session.name}' in agent-config.yaml",
            warn=True,
        )
    return CheckResult(
        name, True, f"'{session.target}' runs {program or '?'} (taken for {provider} once its prompt shows)"
    )


def check_panes(config: Config) -> list[CheckResult]:
    """Each session's pane exists and runs a shell we type into (bash or zsh)."""
    out: list[CheckResult] = []
    for session in config.sessions:
        name = f"pane {session.name}"
        try:
            done = _tmux(  # list-panes first: display-message alone falls back to another window's pane
                config.tmux,
                *("list-panes", "-t", session.target, "-F", "#{pane_id}", ";"),
                *("display-message", "-p", "-t", session.target, "#{pane_id}\t#{pane_current_command}"),
            )
        except subprocess.TimeoutExpired:
            out.append(CheckResult(name, False, f"target '{session.target}': tmux did not answer", "restart tmux"))
            continue
        pane_id, _, program = (done.stdout.splitlines() or [""])[-1].strip().partition("\t")
        if done.returncode != 0 or not pane_id.startswith("%"):  # the same test as the orchestrator's resolve
            said = " ".join(done.stderr.split())
            out.append(
                CheckResult(
                    name,
                    False,
                    f"no pane for target '{session.target}'" + (f" ({said})" if said else ""),
                    "create the pane or fix the session's target in agent-config.yaml",
                )
            )
            continue
        shell = os.path.basename(program.lstrip("-"))
        if session.kind == "agent":
            out.append(_agent_pane(session, name, shell))
            continue
        if shell in SUPPORTED_SHELLS:
            out.append(CheckResult(name, True, f"'{session.target}' runs {shell}"))
            continue
        running = _running_command(config, session.name)
        if running is not None:
            seen = f"'{session.target}' runs {program or '?'} (command #{running[0]} `{running[1]}` is running in it)"
            out.append(CheckResult(name, True, seen))
            continue
        out.append(
            CheckResult(
                name,
                True,
                f"pane runs {program or 'nothing known'}; commands are only typed into bash or zsh",
                f"leave that program so the pane is at a bash or zsh prompt, or point '{session.name}' at another pane",
                warn=True,
            )
        )
    return out


def tmux_checks(config: Config) -> list[CheckResult]:
    """The configured server answers; then each session's pane (not asked of a server that is down)."""
    socket_check = check_tmux_socket(config.tmux)
    return [socket_check, *(check_panes(config) if socket_check.ok else [])]
