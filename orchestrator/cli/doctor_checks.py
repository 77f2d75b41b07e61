"""`tmux-agent doctor`'s result line and its checks of the environment around the agents: the
OpenAI key, WeCom, the metrics and dashboard ports, the state DB, the log dir, and
the optional tools of the playbook (prometheus, promtool, chromium, allure: warnings, not failures)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.config import Config
from orchestrator.redact import redact
from orchestrator.state.lock import locked_by


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


def check_openai_key(env: dict[str, str]) -> CheckResult:
    key = env.get("OPENAI_API_KEY", "")
    if not key:
        return CheckResult("OPENAI_API_KEY", False, "not set", "add OPENAI_API_KEY to ~/.env")
    return CheckResult("OPENAI_API_KEY", True, f"set ({key[:3]}…, {len(key)} chars)")


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
    if send_test:
        try:
            for channel in channels:
                channel.send("tmux-agent doctor", "> test message from `tmux-agent doctor --send-test`")
        except ChannelError as exc:
            fix = exc.refusal.fix if exc.refusal else "check the webhook key / app secret"  # the errcode's own fix
            return CheckResult("WeCom", False, f"{describe(channels)}: {exc}", fix)
        return CheckResult("WeCom", True, f"{describe(channels)}: test message accepted")
    # whether WeCom can be reached, through the proxy the client takes, is the `reach WeCom` line
    return CheckResult("WeCom", True, f"{describe(channels)} configured (--send-test sends a message)")


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
    import urllib.error  # http.client and email: only when doctor asks a port, not for every tmux-agent call
    import urllib.request

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
    import tempfile

    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return CheckResult("log dir", False, f"{path}: {exc.strerror}", "check log_dir and its permissions")
    return CheckResult("log dir", True, f"{path} writable")


# Optional tools: the playbook runs without them, but the tests that need them skip and the report
# marks what they decide "not decided". tool -> (what needs it, the package that brings it)
OPTIONAL_TOOLS = {
    "prometheus": ("scenario F's real Prometheus and the soak export", "Debian package `prometheus`"),
    "promtool": ("`promtool check metrics` / alert-rule tests", "Debian package `prometheus`"),
    "chromium": ("dashboard screenshots and browser tests", "Debian package `chromium`"),
    "allure": ("`tmux-agent validate --allure` HTML", "npm package `allure` (npm install -g allure@3)"),
}


def check_optional_tools(which: Callable[[str], str | None] | None = None) -> list[CheckResult]:
    """One line per optional tool: found (where), or a warning naming the package (never a failure)."""
    import shutil

    find = which or shutil.which
    results = []
    for tool, (needed_for, package) in OPTIONAL_TOOLS.items():
        path = find(tool)
        if tool == "chromium" and path is None:
            chromium = os.environ.get("TMUXAGENT_CHROMIUM", "/usr/bin/chromium")
            path = chromium if Path(chromium).exists() else None
        if path:
            results.append(CheckResult(f"opt:{tool}", True, f"{path} ({needed_for})"))
        else:
            results.append(
                CheckResult(
                    f"opt:{tool}",
                    True,
                    f"not found — optional, for {needed_for}; those tests skip",
                    f"install the {package}",
                    warn=True,
                )
            )
    return results
