"""`tmux-agent doctor`'s checks of the programs it drives: codex (`--version`, then a tiny prompt)
and each agent session's binary (found, answers `--version`, the verified version)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from orchestrator.cli.doctor_checks import CheckResult
from orchestrator.config import Config, SessionConfig

AGENT_VERSION_TIMEOUT_SECONDS = 10.0  # `<agent> --version`, at most (the codex timeout, when shorter)
# provider -> (npm package, the version the agent driver is verified with; docs/agent-sessions.md)
AGENT_PACKAGES = {"claude": ("@anthropic-ai/claude-code", "2.1.197"), "codex": ("@openai/codex", "0.171.0")}


def codex_argv(config: Config, *args: str) -> list[str]:
    """`[codex] bin` may be a shell string (". ~/.proxy-on.sh && proxychains4 -q codex")."""
    line = " ".join([config.settings.codex.bin, *map(shlex.quote, args)])
    return ["bash", "-c", line]


def codex_timeout(config: Config, env: Mapping[str, str]) -> float:
    """The orchestrator's own rule (`ai_client.resolve_timeout`): `CODEX_TIMEOUT_SECONDS` wins when it
    is a positive number, so doctor neither crashes on "soon" nor times codex out at once on "0"."""
    from orchestrator.adapters.ai_client import resolve_timeout  # the AI client: only when doctor runs

    return resolve_timeout(config.settings.codex, env)


def run_bounded(argv: list[str], timeout: float, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run in its own process group so a timeout kills the whole tree (a shell string's children too)."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def check_codex(config: Config, env: dict[str, str], timeout: float) -> CheckResult:
    from orchestrator.adapters.codex_backend import MECHANICS, SAFE_FLAGS

    try:
        done = run_bounded(codex_argv(config, "--version"), timeout, env)
    except subprocess.TimeoutExpired:
        return CheckResult(
            "codex",
            False,
            f"`{config.settings.codex.bin} --version` hung for {timeout:g}s",
            "check [codex] bin and your proxy",
        )
    if done.returncode != 0:
        return CheckResult(
            "codex",
            False,
            f"`{config.settings.codex.bin} --version` exited {done.returncode}",
            "install codex or set [codex] bin in orchestrator.toml",
        )
    version = (done.stdout.strip() or done.stderr.strip()).splitlines()[0:1]
    seen = version[0] if version else "answered"
    try:
        prompt = run_bounded(
            # the flags of a decision call (read-only, never asks, no session file), not the agent's
            codex_argv(config, "exec", *SAFE_FLAGS, *MECHANICS, "Reply with the single word: ok"),
            timeout,
            env,
        )
    except subprocess.TimeoutExpired:
        return CheckResult(
            "codex",
            False,
            f"{seen}; a tiny prompt got no answer in {timeout:g}s",
            "check OPENAI_API_KEY, proxies, or raise CODEX_TIMEOUT_SECONDS",
        )
    if prompt.returncode != 0 or not prompt.stdout.strip():
        return CheckResult(
            "codex",
            False,
            f"{seen}; a tiny prompt exited {prompt.returncode}",
            "run `codex exec 'hi'` by hand to see why",
        )
    return CheckResult("codex", True, f"{seen}; answered a tiny prompt")


def _launch_program(launch: str | None) -> str | None:
    """The program of a `launch` line: its first word after any `VAR=value` words (and `env`)."""
    try:
        words = shlex.split(launch or "")
    except ValueError:
        words = (launch or "").split()
    while words and (words[0] == "env" or ("=" in words[0] and not words[0].startswith(("/", ".", "~")))):
        words = words[1:]
    return words[0] if words else None


def agent_binary(session: SessionConfig, env: Mapping[str, str]) -> tuple[str | None, str]:
    """(the agent's executable or None, where it was looked for). The session's `launch` first word
    when it is a path (relative to `workdir`, where the pane starts it) or on PATH, else the
    provider's name on PATH. PATH is the session's `env` PATH when it sets one: the agent is
    started as `env PATH=… <launch>`."""
    provider = session.provider or "claude"
    path = dict(session.env).get("PATH", env.get("PATH", os.defpath))
    program = _launch_program(session.launch)
    looked: list[str] = []
    if program is not None:
        if "/" in program or program.startswith("~"):
            candidate = Path(program).expanduser()
            candidate = candidate if candidate.is_absolute() else session.workdir / candidate
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate), str(candidate)
            looked.append(str(candidate))
        else:
            found = shutil.which(program, path=path)
            if found:
                return found, f"{program} on PATH"
            looked.append(f"{program} on PATH")
    if program != provider:
        found = shutil.which(provider, path=path)
        if found:
            return found, f"{provider} on PATH"
        looked.append(f"{provider} on PATH")
    return None, ", ".join(looked)


def check_agent(session: SessionConfig, env: dict[str, str], timeout: float) -> CheckResult:
    """The session's agent binary is found and answers `--version` (within `timeout`)."""
    provider = session.provider or "claude"
    package, verified = AGENT_PACKAGES.get(provider, (provider, "?"))
    name = f"agent {session.name}"
    fix = f"install {package}@{verified}, or set launch to its path"
    binary, where = agent_binary(session, env)
    if binary is None:
        return CheckResult(name, False, f"{provider}: not found ({where})", fix)
    try:
        done = run_bounded([binary, "--version"], timeout, {**env, **dict(session.env)})
    except subprocess.TimeoutExpired:
        return CheckResult(name, False, f"{provider}: `{binary} --version` hung for {timeout:g}s", fix)
    except OSError as exc:
        return CheckResult(name, False, f"{provider}: {binary} cannot run ({exc.strerror or exc})", fix)
    if done.returncode != 0:
        return CheckResult(name, False, f"{provider}: `{binary} --version` exited {done.returncode}", fix)
    lines = (done.stdout.strip() or done.stderr.strip()).splitlines()
    version = lines[0].strip() if lines else "no version printed"
    seen = f"{provider} {binary}: {version}"
    if not re.search(rf"(?<![\d.]){re.escape(verified)}(?![\d.])", version):
        return CheckResult(name, True, f"{seen} (tmuxagent is verified with {verified})", fix, warn=True)
    return CheckResult(name, True, seen)


def check_agents(config: Config, env: dict[str, str], timeout: float) -> list[CheckResult]:
    return [check_agent(s, env, timeout) for s in config.sessions if s.kind == "agent"]
