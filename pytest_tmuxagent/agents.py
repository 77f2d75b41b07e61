"""The real coding agents (Claude Code, codex) for tests: where the binary is, and a private
first-run state per workdir so an agent starts straight into its prompt, talking to a local
scripted model server.

- `find_agent(provider)`: `$TMUXAGENT_CLAUDE_BIN` / `$TMUXAGENT_CODEX_BIN`, else the project's
  `.agents/node_modules/.bin/<name>` (what `.ci/run` installs), else `PATH`.
- `AgentHome.prepare(provider, workdir, server, root)`: a private `HOME` (and for codex a
  `CODEX_HOME`) under `root` whose files skip onboarding and the trust question for `workdir`,
  and `.env`, the variables that point the agent at `server`. `reap()` ends every process left
  behind under `root` (codex leaves two `codex app-server` daemons per start).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, TypedDict

from .tmux_server import AgentPane

__all__ = [
    "AGENT_PACKAGES",
    "PROVIDERS",
    "AgentHome",
    "AgentHomeFactory",
    "AgentProvider",
    "AgentSessionFactory",
    "AgentSessionOverride",
    "ModelEndpoints",
    "agent_version",
    "find_agent",
    "install_hint",
    "processes_under",
]

AgentProvider = Literal["claude", "codex"]
PROVIDERS: tuple[AgentProvider, ...] = ("claude", "codex")

# provider -> (npm package, pinned version); .ci/run installs exactly these into .agents/
AGENT_PACKAGES: dict[AgentProvider, tuple[str, str]] = {
    "claude": ("@anthropic-ai/claude-code", "2.1.197"),
    "codex": ("@openai/codex", "0.171.0"),
}
BIN_ENV: dict[AgentProvider, str] = {"claude": "TMUXAGENT_CLAUDE_BIN", "codex": "TMUXAGENT_CODEX_BIN"}
AGENTS_PREFIX = ".agents"
MODEL_KEY_ENV = "TMUXAGENT_MODEL_KEY"  # codex's env_key for the scripted provider
CODEX_PROVIDER_ID = "tmuxagent"
DEFAULT_MODELS: dict[AgentProvider, str] = {"claude": "claude-sonnet-4-5", "codex": "gpt-5-codex"}
_REPO = Path(__file__).resolve().parent.parent  # the checkout when installed editable


class ModelEndpoints(Protocol):
    """What an agent home needs of a model server (`ModelServer` has both)."""

    @property
    def anthropic_base_url(self) -> str: ...  # no /v1: Claude Code appends /v1/messages

    @property
    def openai_base_url(self) -> str: ...  # with /v1


class AgentSessionOverride(TypedDict):
    """A `sessions:` entry's agent keys, for `orchestrator_service(session_overrides={name: ...})`."""

    kind: Literal["agent"]
    provider: AgentProvider
    launch: str
    env: dict[str, str]


def _check_provider(provider: str) -> AgentProvider:
    for known in PROVIDERS:
        if provider == known:
            return known
    raise ValueError(f"unknown agent provider {provider!r}; expected one of {PROVIDERS}")


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_agent(provider: AgentProvider) -> Path | None:
    """The agent's executable: `$TMUXAGENT_<NAME>_BIN` (when set it must exist: no fallback),
    else `<repo or cwd>/.agents/node_modules/.bin/<name>`, else `<name>` on PATH; None if none."""
    provider = _check_provider(provider)
    override = os.environ.get(BIN_ENV[provider])
    if override:
        path = Path(override).expanduser()
        found = path if _executable(path) else shutil.which(override)
        return Path(found).absolute() if found else None
    for base in dict.fromkeys((_REPO, Path.cwd().resolve())):
        local = base / AGENTS_PREFIX / "node_modules" / ".bin" / provider
        if _executable(local):
            return local.absolute()
    on_path = shutil.which(provider)
    return Path(on_path).absolute() if on_path else None


def agent_version(provider: AgentProvider, binary: Path | None = None, timeout: float = 30.0) -> str | None:
    """The first line `<binary> --version` prints (`2.1.197 (Claude Code)`, `codex-cli 0.171.0`),
    or None when the agent is missing or does not answer."""
    binary = binary or find_agent(provider)
    if binary is None:
        return None
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def install_hint(provider: AgentProvider) -> str:
    """One line saying what is missing and how to get it."""
    package, version = AGENT_PACKAGES[provider]
    return f"{provider} not installed: run bash .ci/run (installs {package}@{version} into {AGENTS_PREFIX}/)"


# ---------------------------------------------------------------------------------------------
# processes


_WHERE_IT_STANDS = frozenset({b"PWD", b"OLDPWD"})


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    status = _read(f"/proc/{pid}/stat")
    if not status:
        return False
    state = status.rsplit(b")", 1)[-1].split()[:1]
    return state != [b"Z"]


def processes_under(root: Path, *, environ: bool = True) -> list[int]:
    """Pids (not this process) whose `/proc/PID/exe` or a command-line word lies under `root`, or,
    with `environ`, whose environment names a path under it (`HOME=<root>/home`, `CODEX_HOME=…`;
    not `PWD`: a shell merely standing in a folder there is not one of its processes): the agent
    itself and whatever it left running."""
    prefix = str(root.resolve()).rstrip("/") + "/"
    needle = prefix.encode()
    skip = {os.getpid()}
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        pid = int(entry)
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = ""
        hit = exe.startswith(prefix)
        if not hit:
            words = _read(f"/proc/{pid}/cmdline").split(b"\0")
            hit = any(w.startswith(needle) or b"=" + needle in w for w in words)
        if not hit and environ:
            pairs = (v.partition(b"=") for v in _read(f"/proc/{pid}/environ").split(b"\0"))
            hit = any(value.startswith(needle) for name, _, value in pairs if name not in _WHERE_IT_STANDS)
        if hit and _alive(pid):
            found.append(pid)
    return found


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(pids: list[int], deadline: float) -> list[int]:
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)  # polling /proc for the exit, bounded by the deadline
        left = [p for p in left if _alive(p)]
    return left


# ---------------------------------------------------------------------------------------------
# homes


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


@dataclass
class AgentHome:
    """A private first-run state for one agent in one workdir, under `root`.

    Claude Code: `HOME=<root>/home` with `.claude.json` (onboarding done, a theme, the workdir
    trusted). codex: `CODEX_HOME=<root>/codex-home` with `config.toml` (the scripted provider,
    the workdir trusted) and a private `HOME` too. `env` is what the agent must run with."""

    provider: AgentProvider
    workdir: Path
    root: Path
    base_url: str
    binary: Path | None = None
    model: str = ""
    token: str = "tmuxagent-test-token"
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def prepare(
        cls,
        provider: AgentProvider,
        workdir: Path,
        server: ModelEndpoints,
        root: Path,
        *,
        binary: Path | None = None,
        model: str | None = None,
        token: str = "tmuxagent-test-token",
    ) -> AgentHome:
        provider = _check_provider(provider)
        base_url = server.anthropic_base_url if provider == "claude" else server.openai_base_url
        home = cls(
            provider=provider,
            workdir=Path(workdir).resolve(),
            root=Path(root).resolve(),
            base_url=base_url.rstrip("/"),
            binary=binary,
            model=model or DEFAULT_MODELS[provider],
            token=token,
        )
        home.write()
        return home

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def codex_home(self) -> Path | None:
        return self.root / "codex-home" if self.provider == "codex" else None

    def write(self) -> None:
        """Write the agent's state files and fill `env`."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.provider == "claude":
            self._write_claude()
        else:
            self._write_codex()

    def _write_claude(self) -> None:
        state = {
            "hasCompletedOnboarding": True,
            "theme": "dark",
            "projects": {str(self.workdir): {"hasTrustDialogAccepted": True}},
        }
        (self.home / ".claude.json").write_text(json.dumps(state, indent=2) + "\n")
        self.env = {
            "HOME": str(self.home),
            "ANTHROPIC_BASE_URL": self.base_url,
            # a bearer token: ANTHROPIC_API_KEY would first ask "Do you want to use this API key?"
            "ANTHROPIC_AUTH_TOKEN": self.token,
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }

    def _write_codex(self) -> None:
        codex_home = self.codex_home
        assert codex_home is not None
        codex_home.mkdir(parents=True, exist_ok=True)
        config = "\n".join(
            [
                f"model = {_toml_str(self.model)}",
                f"model_provider = {_toml_str(CODEX_PROVIDER_ID)}",
                "",
                f"[model_providers.{CODEX_PROVIDER_ID}]",
                f"name = {_toml_str('tmuxagent scripted model server')}",
                f"base_url = {_toml_str(self.base_url)}",
                'wire_api = "responses"',
                f"env_key = {_toml_str(MODEL_KEY_ENV)}",
                "",
                f"[projects.{_toml_str(str(self.workdir))}]",
                'trust_level = "trusted"',
                "",
            ]
        )
        (codex_home / "config.toml").write_text(config)
        self.env = {"CODEX_HOME": str(codex_home), MODEL_KEY_ENV: self.token, "HOME": str(self.home)}

    @property
    def launch(self) -> str:
        """The agent's command line (its absolute path, shell-quoted)."""
        if self.binary is None:
            raise RuntimeError(f"{install_hint(self.provider)}")
        return shlex.quote(str(self.binary))

    def launch_line(self, *args: str) -> str:
        """A shell line that starts the agent with `env`: `env K=V … <binary> args…`."""
        return shlex.join(["env", *(f"{k}={v}" for k, v in self.env.items()), *shlex.split(self.launch), *args])

    def session_override(self) -> AgentSessionOverride:
        """The `sessions:` keys that make the orchestrator launch this agent in the session's pane."""
        return {"kind": "agent", "provider": self.provider, "launch": self.launch, "env": dict(self.env)}

    def processes(self) -> list[int]:
        """Live processes started from or living under this home (the agent, codex's app-servers)."""
        return processes_under(self.root)

    def reap(self, timeout: float = 10.0) -> list[int]:
        """End every process under this home, by pid: SIGTERM, then SIGKILL for what is left after
        half of `timeout`, rescanning so a child started while its parent died is caught too.
        Returns the pids ended; raises RuntimeError if any is alive at the deadline."""
        start = time.monotonic()
        soft, deadline = start + timeout / 2, start + timeout
        ended: list[int] = []
        while True:
            pids = self.processes()
            if not pids:
                return ended
            now = time.monotonic()
            if now >= deadline:
                raise RuntimeError(f"{self.provider} processes under {self.root} outlived {timeout:g} s: {pids}")
            gentle = now < soft
            _signal(pids, signal.SIGTERM if gentle else signal.SIGKILL)
            ended += [p for p in pids if p not in ended]
            _wait_gone(pids, soft if gentle else deadline)


class AgentHomeFactory(Protocol):
    """What the `tmuxagent_agent_home` fixture returns: `(provider, workdir, model_server) ->
    AgentHome` (workdir: a Path or an AgentPane, whose workdir is used); reaped after the test."""

    def __call__(
        self,
        provider: AgentProvider,
        workdir: Path | AgentPane,
        model_server: ModelEndpoints,
        *,
        model: str | None = None,
    ) -> AgentHome: ...


class AgentSessionFactory(Protocol):
    """What the `agent_session` fixture returns: `(provider, workdir, model_server) ->` the
    session override dict for `orchestrator_service(..., session_overrides={name: ...})`."""

    def __call__(
        self,
        provider: AgentProvider,
        workdir: Path | AgentPane,
        model_server: ModelEndpoints,
        *,
        model: str | None = None,
    ) -> AgentSessionOverride: ...
