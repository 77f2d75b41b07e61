"""`tmux-agent doctor`: a self-check before anything runs. Each check prints one
line — ok, WARN or FAIL, what was seen, and the fix — and the exit code is 0 only when
no check fails (a warning does not fail; `scripts/diagnose_orchestrator.sh` calls it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.adapters.ai_client import resolve_timeout
from orchestrator.cli.dashboard import DEFAULT_PORT as DASHBOARD_PORT
from orchestrator.config import Config, SessionConfig, TmuxConfig, load_config
from orchestrator.envfile import EnvSource
from orchestrator.errors import UserError
from orchestrator.redact import redact
from orchestrator.state.lock import locked_by
from orchestrator.state.store import StateStore

MIN_TMUX = (3, 0)
SUPPORTED_SHELLS = ("bash", "zsh")
DASHBOARD_HOST = "127.0.0.1"  # `tmux-agent run --dashboard-host` and `tmux-agent dashboard --host` default
TMUX_TIMEOUT_SECONDS = 5.0
AGENT_VERSION_TIMEOUT_SECONDS = 10.0  # `<agent> --version`, at most (the codex timeout, when shorter)
# provider -> (npm package, the version the agent driver is verified with; docs/agent-sessions.md)
AGENT_PACKAGES = {"claude": ("@anthropic-ai/claude-code", "2.1.197"), "codex": ("@openai/codex", "0.171.0")}


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    seen: str
    fix: str = ""
    warn: bool = False  # passed, but something is worth knowing (never changes the exit code)

    def line(self) -> str:
        mark = "FAIL" if not self.ok else "WARN" if self.warn else "ok  "
        text = f"{mark}  {self.name:<14} {self.seen}"
        return redact(text + ("" if not self.fix or (self.ok and not self.warn) else f" — fix: {self.fix}"))


def check_tmux() -> CheckResult:
    tmux = shutil.which("tmux")
    if not tmux:
        return CheckResult("tmux", False, "not found on PATH", "install tmux (apt-get install tmux)")
    version = subprocess.run([tmux, "-V"], capture_output=True, text=True).stdout.strip()
    digits = "".join(c if c.isdigit() or c == "." else " " for c in version).split()
    parts = tuple(int(p) for p in (digits[0].split(".") if digits else []) if p)
    ok = parts >= MIN_TMUX
    return CheckResult("tmux", ok, version, f"upgrade to tmux >= {'.'.join(map(str, MIN_TMUX))}")


def codex_argv(config: Config, *args: str) -> list[str]:
    """`[codex] bin` may be a shell string (". ~/.proxy-on.sh && proxychains4 -q codex")."""
    line = " ".join([config.settings.codex.bin, *map(shlex.quote, args)])
    return ["bash", "-c", line]


def codex_timeout(config: Config, env: Mapping[str, str]) -> float:
    """The orchestrator's own rule (`ai_client.resolve_timeout`): `CODEX_TIMEOUT_SECONDS` wins when it
    is a positive number, so doctor neither crashes on "soon" nor times codex out at once on "0"."""
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
            codex_argv(config, "exec", *config.settings.codex.extra_args, "Reply with the single word: ok"),
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


def check_openai_key(env: dict[str, str]) -> CheckResult:
    key = env.get("OPENAI_API_KEY", "")
    if not key:
        return CheckResult("OPENAI_API_KEY", False, "not set", "add OPENAI_API_KEY to ~/.env")
    return CheckResult("OPENAI_API_KEY", True, f"set ({key[:3]}…, {len(key)} chars)")


def _tcp(host: str, port: int, timeout: float = 2.0) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def check_wecom(env: dict[str, str], send_test: bool, timeout: float) -> CheckResult:
    from orchestrator.adapters.wecom import ChannelError, channels_from_env, describe

    channels = channels_from_env(env, timeout=timeout)
    if not channels:
        return CheckResult(
            "WeCom",
            False,
            "no channel configured",
            "set WECOM_WEBHOOK, or WECOM_CORP_ID + WECOM_AGENT_ID + WECOM_APP_SECRET, in ~/.env",
        )
    base = env.get("WECOM_API_BASE") or "https://qyapi.weixin.qq.com"
    if send_test:
        try:
            for channel in channels:
                channel.send("tmux-agent doctor", "> test message from `tmux-agent doctor --send-test`")
        except ChannelError as exc:
            return CheckResult("WeCom", False, f"{describe(channels)}: {exc}", "check the webhook key / app secret")
        return CheckResult("WeCom", True, f"{describe(channels)}: test message accepted")
    url = urlsplit(base)
    problem = _tcp(url.hostname or "", url.port or (443 if url.scheme == "https" else 80))
    if problem:
        return CheckResult(
            "WeCom",
            False,
            f"{describe(channels)} configured; {url.hostname} unreachable ({problem})",
            "check network/proxy or WECOM_API_BASE",
        )
    return CheckResult(
        "WeCom", True, f"{describe(channels)} configured; {url.hostname} reachable (--send-test sends a message)"
    )


def _port_problem(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on (as our servers do, with SO_REUSEADDR), or None if free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def pid_alive(pid: int) -> bool:
    """A process with this pid exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) is all we know
    return not fields or fields[0] != "Z"


def our_orchestrator(log_dir: Path) -> tuple[int, int] | None:
    """(pid, metrics port) from `<log_dir>/orchestrator-runtime.json`, when that pid is alive."""
    try:
        info = json.loads((log_dir / "orchestrator-runtime.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    pid, url = info.get("pid"), info.get("metrics_url")
    if not isinstance(pid, int) or isinstance(pid, bool) or not isinstance(url, str):
        return None
    try:
        port = urlsplit(url).port
    except ValueError:
        return None
    return (pid, port) if port is not None and pid_alive(pid) else None


def check_metrics_port(config: Config, port: int) -> CheckResult:
    """Free, or held by OUR running orchestrator (its runtime file names it), or a stranger's."""
    host = config.settings.metrics_host
    problem = _port_problem(host, port)
    ours = our_orchestrator(config.log_dir)
    if problem is None:
        extra = f"; our orchestrator (pid {ours[0]}) serves /metrics on {ours[1]}" if ours else ""
        return CheckResult("metrics port", True, f"{host}:{port} free{extra}")
    if ours is not None and ours[1] == port:
        return CheckResult("metrics port", True, f"our orchestrator (pid {ours[0]}) is serving /metrics on {port}")
    return CheckResult(
        "metrics port",
        False,
        f"{host}:{port} in use by another process ({problem})",
        "stop the other process or change metrics_port (or pass --metrics-port N)",
    )


def _get_json(url: str, timeout: float = 2.0) -> object:
    """A JSON answer, also from an error status (a dashboard whose DB is unreadable answers 503)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: bytes = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    return json.loads(body.decode("utf-8", "replace"))


def check_dashboard_port(config: Config, host: str, port: int) -> CheckResult:
    """Free, or held by a dashboard showing this config's state DB."""
    problem = _port_problem(host, port)
    if problem is None:
        return CheckResult("dashboard port", True, f"{host}:{port} free")
    try:
        health = _get_json(f"http://{host}:{port}/healthz")
    except (OSError, ValueError):
        health = None
    db = health.get("db") if isinstance(health, dict) else None
    fix = "stop the other process or pick another port (tmux-agent run --dashboard-port N)"
    if isinstance(db, str):
        if Path(db).resolve() == config.state_db.resolve():
            return CheckResult("dashboard port", True, f"our dashboard is serving {config.state_db} on {port}")
        return CheckResult("dashboard port", False, f"{host}:{port} held by a tmux-agent dashboard of {db}", fix)
    return CheckResult("dashboard port", False, f"{host}:{port} in use by another process ({problem})", fix)


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
            done = _tmux(
                config.tmux, "display-message", "-p", "-t", session.target, "#{pane_id}\t#{pane_current_command}"
            )
        except subprocess.TimeoutExpired:
            out.append(CheckResult(name, False, f"target '{session.target}': tmux did not answer", "restart tmux"))
            continue
        pane_id, _, program = (done.stdout.splitlines() or [""])[0].strip().partition("\t")
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


def check_db(path: Path) -> CheckResult:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), timeout=5)
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
        db.close()
    except (OSError, sqlite3.Error) as exc:
        return CheckResult("state DB", False, f"{path}: {exc}", "check the state_db path and its permissions")
    busy = locked_by(path)
    if busy is not None:
        return CheckResult("state DB", True, f"{path} writable; supervised by orchestrator pid {busy.pid}")
    return CheckResult("state DB", True, f"{path} writable")


def check_log_dir(path: Path) -> CheckResult:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return CheckResult("log dir", False, f"{path}: {exc.strerror}", "check log_dir and its permissions")
    return CheckResult("log dir", True, f"{path} writable")


def check_proxies(env: dict[str, str]) -> list[CheckResult]:
    out = []
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        value = env.get(name) or env.get(name.lower())
        if not value:
            continue
        url = urlsplit(value if "://" in value else f"http://{value}")
        problem = _tcp(url.hostname or "", url.port or 80)
        out.append(
            CheckResult(
                name,
                problem is None,
                f"{url.hostname}:{url.port} " + ("reachable" if problem is None else f"unreachable ({problem})"),
                f"start the proxy or unset {name}",
            )
        )
    return out


def tmux_checks(config: Config) -> list[CheckResult]:
    """The configured server answers; then each session's pane (not asked of a server that is down)."""
    socket_check = check_tmux_socket(config.tmux)
    return [socket_check, *(check_panes(config) if socket_check.ok else [])]


def run_checks(args: argparse.Namespace) -> list[CheckResult]:
    results = [check_tmux()]
    try:
        config = load_config(args.config, args.orchestrator_config)
    except UserError as exc:
        return results + [CheckResult("config", False, exc.render(), "fix the file named above")]
    results.append(
        CheckResult(
            "config", True, f"{config.config_path} + {config.orchestrator_path.name}: {len(config.sessions)} session(s)"
        )
    )
    env = EnvSource(config.settings.env_file).current()
    timeout = codex_timeout(config, env)
    metrics_port = config.settings.metrics_port if args.metrics_port is None else args.metrics_port
    checks: list[Callable[[], CheckResult | list[CheckResult]]] = [
        lambda: tmux_checks(config),
        lambda: check_codex(config, {**os.environ, **env}, timeout),
        lambda: check_agents(config, {**os.environ, **env}, min(timeout, AGENT_VERSION_TIMEOUT_SECONDS)),
        lambda: check_openai_key(env),
        lambda: check_wecom(env, args.send_test, min(timeout, 10.0)),
        lambda: check_metrics_port(config, metrics_port),
        lambda: check_dashboard_port(config, DASHBOARD_HOST, args.dashboard_port),
        lambda: check_db(config.state_db),
        lambda: check_log_dir(config.log_dir),
        lambda: check_proxies(env),
    ]
    for check in checks:
        outcome = check()
        results.extend(outcome if isinstance(outcome, list) else [outcome])
    return results


def cmd_doctor(args: argparse.Namespace) -> int:
    results = run_checks(args)
    for result in results:
        print(result.line(), flush=True)
    failed = [r.name for r in results if not r.ok]
    warned = [r.name for r in results if r.ok and r.warn]
    print(
        f"doctor: {len(results) - len(failed)}/{len(results)} checks passed"
        + (f"; failing: {', '.join(failed)}" if failed else "")
        + (f"; warnings: {', '.join(warned)}" if warned else "")
    )
    return 0 if not failed else 1


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config_flags: Callable[[argparse.ArgumentParser], None],
) -> None:
    parser = sub.add_parser(
        "doctor", help="self-check: tmux, panes, codex, agent binaries, env, config, ports, DB, log dir"
    )
    add_config_flags(parser)
    parser.add_argument("--send-test", action="store_true", help="send a real test message to WeCom")
    parser.add_argument("--metrics-port", type=int, default=None)
    parser.add_argument(
        "--dashboard-port", type=int, default=DASHBOARD_PORT, help=f"dashboard port to check (default {DASHBOARD_PORT})"
    )
    parser.set_defaults(func=cmd_doctor)
