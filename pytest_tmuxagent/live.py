"""Live mode (`--tmuxagent-live`): the same scenarios against the user's own tmux
server, real `codex` and real WeCom, as named by their agent-config.yaml and env file.

Nothing of the user's is touched: scenarios get panes in a scratch session that
is killed afterwards, the orchestrator under test keeps its own temp state, and
WeCom traffic passes through a local recording proxy so the scenarios can still
see (and, for degradation checks, interrupt) what was delivered.

Agent tests (the `tmuxagent_agent_home` / `agent_session` fixtures) run live only when the
test says it needs no scripted model reply (marker `tmuxagent_live_capable`) and the user
allowed that provider to spend tokens on their account: `TMUXAGENT_LIVE_SPEND_TOKENS=claude,codex`
in their env file (or environment). Then the agent is the user's own binary with the user's own
HOME and provider variables — no private first-run state, no scripted model server.
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

from .agents import BIN_ENV, PROVIDERS, AgentHome, AgentProvider
from .tmux_server import PANE_SHELL, TmuxTestServer
from .wecom_mock import RecordedRequest, WeComMock

WECOM_DEFAULT_BASE = "https://qyapi.weixin.qq.com"
APP_VARS = ("WECOM_CORP_ID", "WECOM_AGENT_ID", "WECOM_APP_SECRET")
SPEND_TOKENS_KEY = "TMUXAGENT_LIVE_SPEND_TOKENS"  # env file: the providers live agent tests may spend tokens on
LIVE_CAPABLE_MARKER = "tmuxagent_live_capable"  # an agent test that needs no scripted model reply
LIVE_AGENT_TAG = "TMUXAGENT_LIVE_AGENT_DIR"  # set for a live agent so teardown finds its processes
# the user's variables a live agent gets besides HOME: its account, endpoint and settings
AGENT_ENV_PREFIXES: dict[AgentProvider, tuple[str, ...]] = {
    "claude": ("ANTHROPIC_", "CLAUDE_"),
    "codex": ("OPENAI_", "CODEX_"),
}


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
        context = cls(config=config, env=EnvSource(config.settings.env_file).current())
        try:
            _ = context.spend_tokens  # an unknown provider in the opt-in is a usage error, said at start
        except ValueError as exc:
            raise pytest.UsageError(f"--tmuxagent-live: {exc}") from None
        return context

    def describe(self) -> str:
        tmux = self.config.tmux.socket_path or self.config.tmux.socket_name or "default"
        wecom = (
            "webhook"
            if self.env.get("WECOM_WEBHOOK")
            else ("app" if all(self.env.get(v) for v in APP_VARS) else "none")
        )
        try:
            agents = ", ".join(sorted(self.spend_tokens)) or f"none (set {SPEND_TOKENS_KEY} to allow)"
        except ValueError:
            agents = f"none ({SPEND_TOKENS_KEY} is invalid)"
        return (
            f"live: tmux server {tmux!r} (scratch session per test), codex {self.config.settings.codex.bin!r}, "
            f"WeCom {wecom} via a local recording proxy, env file {self.config.settings.env_file}, "
            f"agents that may spend tokens: {agents}"
        )

    def service_env(self) -> dict[str, str]:
        """The user's env file for the orchestrator under test, minus WeCom (tests add it back)."""
        return {k: v for k, v in self.env.items() if not k.startswith("WECOM_")}

    def codex_settings(self) -> dict[str, Any]:
        codex = self.config.settings.codex
        return {"bin": codex.bin, "extra_args": list(codex.extra_args), "timeout_seconds": codex.timeout_seconds}

    # agents ------------------------------------------------------------------------------------

    @property
    def spend_tokens(self) -> frozenset[str]:
        """The providers the user allowed to spend tokens in live agent tests (`SPEND_TOKENS_KEY`,
        a comma- or space-separated list); ValueError names a word that is not a provider."""
        words = self.env.get(SPEND_TOKENS_KEY, "").replace(",", " ").split()
        for word in words:
            if word not in PROVIDERS:
                raise ValueError(
                    f"{SPEND_TOKENS_KEY}={self.env[SPEND_TOKENS_KEY]!r} (env file {self.config.settings.env_file} "
                    f"or your environment) names {word!r}, not an agent provider; list some of: {', '.join(PROVIDERS)}"
                )
        return frozenset(words)

    def opt_in_reason(self, provider: AgentProvider) -> str:
        """Why a live agent test of `provider` skips when the user did not allow it: one sentence, the key in it."""
        return (
            f"live: {provider} may not spend tokens on your account — set {SPEND_TOKENS_KEY}={provider} "
            f"(a comma-separated list of providers) in {self.config.settings.env_file} to run this agent test live"
        )

    def agent_binary(self, provider: AgentProvider) -> Path | None:
        """The user's own agent: `$TMUXAGENT_<NAME>_BIN` (env file or environment; it must exist),
        else `<name>` on the user's PATH — not the project's pinned `.agents/` copy."""
        override = self.env.get(BIN_ENV[provider])
        if override:
            path = Path(override).expanduser()
            found = str(path) if path.is_file() else shutil.which(override, path=self.env.get("PATH"))
        else:
            found = shutil.which(provider, path=self.env.get("PATH"))
        return Path(found).absolute() if found else None

    def missing_agent_reason(self, provider: AgentProvider) -> str:
        return (
            f"live: your {provider} was not found on PATH (or set {BIN_ENV[provider]} in "
            f"{self.config.settings.env_file})"
        )

    def agent_env(self, provider: AgentProvider) -> dict[str, str]:
        """What the user's agent runs with: the user's HOME and their provider variables
        (`ANTHROPIC_*`/`CLAUDE_*` or `OPENAI_*`/`CODEX_*`) as the env file and environment have them."""
        prefixes = AGENT_ENV_PREFIXES[provider]
        env = {k: v for k, v in self.env.items() if k.startswith(prefixes)}
        env["HOME"] = self.env.get("HOME") or str(Path.home())
        return env

    def agent_home(
        self, provider: AgentProvider, workdir: Path, root: Path, binary: Path, *, model: str | None = None
    ) -> LiveAgentHome:
        """A live `AgentHome`: nothing written under the user's home; `root` (a scratch folder)
        only tags the agent's processes so teardown can end them."""
        root = root.resolve()
        tag = root / "live-agent"
        tag.mkdir(parents=True, exist_ok=True)
        return LiveAgentHome(
            provider=provider,
            workdir=Path(workdir).resolve(),
            root=root,
            base_url="",
            binary=binary,
            model=model or "",
            token="",
            env={**self.agent_env(provider), LIVE_AGENT_TAG: str(tag)},
        )


@dataclass
class LiveAgentHome(AgentHome):
    """The user's own agent in live mode: their binary, HOME, login and model account.

    `env` is the user's (see `LiveContext.agent_env`) plus `TMUXAGENT_LIVE_AGENT_DIR`, a folder
    under `root` whose name in the agent's environment lets `reap()` find it and its children.
    `write()` writes nothing; `model` is only what a test asked for (the user's agent picks its own)."""

    @property
    def home(self) -> Path:
        return Path(self.env.get("HOME") or Path.home())

    @property
    def codex_home(self) -> Path | None:
        if self.provider != "codex":
            return None
        return Path(self.env.get("CODEX_HOME") or self.home / ".codex")

    def write(self) -> None:
        """Nothing: the user's own state is used as it is."""


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
