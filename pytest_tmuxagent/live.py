"""Live mode (`--tmuxagent-live`): the same scenarios against the user's own tmux
server, real `codex` and real WeCom, as named by their agent-config.yaml and env file.

Nothing of the user's is touched: scenarios get panes in a scratch session that
is killed afterwards, the orchestrator under test keeps its own temp state, and
WeCom traffic passes through a local recording proxy so the scenarios can still
see (and, for degradation checks, interrupt) what was delivered.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlencode

import pytest

from orchestrator.config import Config, load_config
from orchestrator.envfile import EnvSource
from orchestrator.errors import UserError

from .tmux_server import PANE_SHELL, TmuxTestServer
from .wecom_mock import RecordedRequest, WeComMock

WECOM_DEFAULT_BASE = "https://qyapi.weixin.qq.com"
APP_VARS = ("WECOM_CORP_ID", "WECOM_AGENT_ID", "WECOM_APP_SECRET")


@dataclass(frozen=True)
class LiveContext:
    config: Config
    env: dict[str, str]

    @classmethod
    def load(cls, path: str) -> LiveContext:
        try:
            config = load_config(path)
        except UserError as exc:
            raise pytest.UsageError(f"--tmuxagent-live: {exc.render()}") from None
        return cls(config=config, env=EnvSource(config.settings.env_file).current())

    def describe(self) -> str:
        tmux = self.config.tmux.socket_path or self.config.tmux.socket_name or "default"
        wecom = (
            "webhook"
            if self.env.get("WECOM_WEBHOOK")
            else ("app" if all(self.env.get(v) for v in APP_VARS) else "none")
        )
        return (
            f"live: tmux server {tmux!r} (scratch session per test), codex {self.config.settings.codex.bin!r}, "
            f"WeCom {wecom} via a local recording proxy, env file {self.config.settings.env_file}"
        )

    def service_env(self) -> dict[str, str]:
        """The user's env file for the orchestrator under test, minus WeCom (tests add it back)."""
        return {k: v for k, v in self.env.items() if not k.startswith("WECOM_")}

    def codex_settings(self) -> dict[str, Any]:
        codex = self.config.settings.codex
        return {"bin": codex.bin, "extra_args": list(codex.extra_args), "timeout_seconds": codex.timeout_seconds}


class LiveTmuxServer(TmuxTestServer):
    """The user's tmux server; panes live in a scratch session killed at teardown."""

    def __init__(self, context: LiveContext, root: Path, pane_shell: str = PANE_SHELL) -> None:
        self.socket_path_override = context.config.tmux.socket_path
        super().__init__(socket_name=context.config.tmux.socket_name or "", root=root, pane_shell=pane_shell)
        self.scratch = f"tmuxagent-live-{uuid.uuid4().hex[:8]}"

    def tmux_config(self) -> dict[str, str]:
        if self.socket_path_override:
            return {"socket_path": self.socket_path_override}
        return {"socket_name": self.socket_name} if self.socket_name else {}

    def _libtmux_kwargs(self) -> dict[str, Any]:
        if self.socket_path_override:
            return {"socket_path": self.socket_path_override}
        return {"socket_name": self.socket_name or None}

    def session_for(self, name: str) -> tuple[str, str]:
        return self.scratch, name.replace("/", "-")

    def kill(self) -> None:
        self.server.cmd("kill-session", "-t", f"={self.scratch}")


class WeComRecordingProxy(WeComMock):
    """Forwards to the user's real WeCom, recording what it accepted; faults are still injectable."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__()
        self.live_env = env
        self.upstream = (env.get("WECOM_API_BASE") or WECOM_DEFAULT_BASE).rstrip("/")

    def env(self, mode: str = "webhook", key: str = "", secret: str = "") -> dict[str, str]:
        if mode == "webhook" and self.live_env.get("WECOM_WEBHOOK"):
            return {"WECOM_WEBHOOK": self.live_env["WECOM_WEBHOOK"], "WECOM_API_BASE": self.url}
        if mode == "app" and all(self.live_env.get(v) for v in APP_VARS):
            return {**{v: self.live_env[v] for v in APP_VARS}, "WECOM_API_BASE": self.url}
        pytest.skip(f"live: WeCom {mode} mode is not configured in your env file")

    def _answer(self, rec: RecordedRequest, endpoint: Optional[str]) -> tuple[int, dict[str, Any]]:
        url = f"{self.upstream}{rec.path}?{urlencode(rec.query)}"
        request = urllib.request.Request(
            url,
            data=rec.body if rec.method == "POST" else None,
            method=rec.method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except OSError as exc:
            return 502, {"errcode": -1, "errmsg": f"live proxy: upstream unreachable ({exc.__class__.__name__})"}
        try:
            reply = json.loads(raw)
        except ValueError:
            return 502, {"errcode": -1, "errmsg": "live proxy: upstream answered non-JSON"}
        if rec.path.endswith("/gettoken") and reply.get("access_token"):
            with self._lock:
                self._token = reply["access_token"]
        return status, reply


def require_codex(context: LiveContext) -> None:
    first = context.config.settings.codex.bin.split()[-1]
    if shutil.which(first) is None:
        pytest.skip(f"live: codex {context.config.settings.codex.bin!r} not found on PATH")


class LiveCodex:
    """Stands in for FakeCodex in live mode: the user's real codex answers for itself."""

    def __init__(self, context: LiveContext) -> None:
        self.context = context
        require_codex(context)
        self.path = Path(shutil.which(context.config.settings.codex.bin.split()[-1]) or "codex")

    def install(self) -> Path:
        return self.path

    def script(self, replies: list[dict[str, Any]]) -> None:
        if any(r.get("kind", "json") != "json" for r in replies):
            pytest.skip(
                "live: the real codex can't be made to hang or print garbage; this case runs only "
                "with the bundled fake codex"
            )

    def calls(self) -> list[dict[str, Any]]:
        pytest.skip("live: the real codex keeps no call log for the test to read")
