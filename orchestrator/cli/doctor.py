"""`tmux-agent doctor`: a self-check before anything runs. Each check prints one
line — ok or FAIL, what was seen, and the fix — and the exit code is 0 only when
every check passes (`scripts/diagnose_orchestrator.sh` calls it).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.config import Config, load_config
from orchestrator.envfile import EnvSource
from orchestrator.errors import UserError
from orchestrator.redact import redact

MIN_TMUX = (3, 0)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    seen: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'ok  ' if self.ok else 'FAIL'}  {self.name:<14} {self.seen}"
        return redact(text + ("" if self.ok or not self.fix else f" — fix: {self.fix}"))


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
    """`CODEX_TIMEOUT_SECONDS` wins over `[codex] timeout_seconds` when it is a positive number.

    The orchestrator's rule (`ai_client.resolve_timeout`): a value like "soon" or "0" is ignored,
    so doctor must not crash on it or time codex out at once.
    """
    raw = env.get("CODEX_TIMEOUT_SECONDS")
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        value = 0.0
    return value if value > 0 else config.settings.codex.timeout_seconds


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


def check_port(host: str, port: int) -> CheckResult:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            return CheckResult(
                "metrics port",
                False,
                f"{host}:{port} in use ({exc.strerror})",
                "stop the other process or change metrics_port",
            )
    return CheckResult("metrics port", True, f"{host}:{port} free")


def check_db(path: Path) -> CheckResult:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), timeout=5)
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
        db.close()
    except (OSError, sqlite3.Error) as exc:
        return CheckResult("state DB", False, f"{path}: {exc}", "check the state_db path and its permissions")
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
    checks: list[Callable[[], CheckResult | list[CheckResult]]] = [
        lambda: check_codex(config, {**os.environ, **env}, timeout),
        lambda: check_openai_key(env),
        lambda: check_wecom(env, args.send_test, min(timeout, 10.0)),
        lambda: check_port(config.settings.metrics_host, args.metrics_port or config.settings.metrics_port),
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
    print(
        f"doctor: {len(results) - len(failed)}/{len(results)} checks passed"
        + (f"; failing: {', '.join(failed)}" if failed else "")
    )
    return 0 if not failed else 1


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config_flags: Callable[[argparse.ArgumentParser], None],
) -> None:
    parser = sub.add_parser("doctor", help="self-check: tmux, codex, env, config, ports, DB, log dir")
    add_config_flags(parser)
    parser.add_argument("--send-test", action="store_true", help="send a real test message to WeCom")
    parser.add_argument("--metrics-port", type=int, default=None)
    parser.set_defaults(func=cmd_doctor)
