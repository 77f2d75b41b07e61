"""The one config loader: `agent-config.yaml` plus `.tmuxagent/orchestrator.toml`.

Both files are validated against JSON Schemas shipped in the package (`orchestrator.schema`),
and every problem is raised as a ConfigError naming the file, the key and the fix, so the
CLIs can print one line and exit 2 instead of a traceback.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from orchestrator.errors import ConfigError
from orchestrator.schema import validate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SessionKind = Literal["shell", "agent"]
AgentProvider = Literal["claude", "codex", "generic"]

DEFAULT_CONFIG_NAME = "agent-config.yaml"
ORCHESTRATOR_RELATIVE = Path(".tmuxagent") / "orchestrator.toml"

_Settings = TypeVar("_Settings")

log = logging.getLogger("orchestrator.config")


@dataclass(frozen=True)
class SessionConfig:
    name: str
    target: str
    workdir: Path
    requirements_doc: str | None = None
    interrupt_keys: tuple[str, ...] = ("C-c",)
    blocker_patterns: tuple[str, ...] = ()
    retry_safe: bool = False
    kind: SessionKind = "shell"
    provider: AgentProvider | None = None
    launch: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    host: str = ""
    """The fleet host whose orchestrator supervises it (its `host:`, else the config's host)."""


@dataclass(frozen=True)
class TmuxConfig:
    socket_name: str | None = None
    socket_path: str | None = None
    # the service talks to the server through one `tmux -C` client (adapters/tmux_controlled.py);
    # false: a tmux subprocess per call, as before
    control_mode: bool = True
    # pane output copied from that client's session's `%output` stream instead of a `pipe-pane`
    # `cat` per pane; off by default: the copy then dies with the orchestrator (docs/decisions.md)
    output_stream: bool = False

    def cli_args(self) -> list[str]:
        if self.socket_path:
            return ["-S", self.socket_path]
        if self.socket_name:
            return ["-L", self.socket_name]
        return []


@dataclass(frozen=True)
class CodexConfig:
    bin: str = "codex"
    extra_args: tuple[str, ...] = ()
    timeout_seconds: float = 120.0
    output_schema: bool = True  # pass --output-schema FILE to `codex exec`
    # call types ("decision", "decomposition") that run with extra_args instead of the safe flags
    inherit_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class AISettings:
    """Which AI answers decision and decomposition questions: codex, openai, or off (rules only)."""

    backend: str = "codex"
    openai_model: str = "gpt-4o-mini"
    openai_base_url: str | None = None
    max_concurrency: int = 2


@dataclass(frozen=True)
class DecisionSettings:
    enabled: bool = True
    blocker_patterns: tuple[str, ...] = ()
    pane_scan_seconds: float = 2.0
    notify_min_priority: str = "medium"
    auto_run: bool = False
    allowlist: tuple[str, ...] = ()
    denylist: tuple[str, ...] = ()
    approval_risk: str = "high"


@dataclass(frozen=True)
class ApprovalSettings:
    """`[approvals]`: how an agent's tool requests are answered without a person. `allowlist`
    regexes must match a shell tool's whole command to approve it; `denylist` adds to the
    built-in destructive patterns; `deny_risky` also refuses high-risk commands (sudo, rm -r,
    git push) instead of asking a person."""

    allowlist: tuple[str, ...] = ()
    denylist: tuple[str, ...] = ()
    deny_risky: bool = True


@dataclass(frozen=True)
class PlanSettings:
    """`[plan]`: `auto_execute` false (the default) makes a decomposed plan wait for
    `tmux-agent approve SESSION plan` instead of queueing its commands at once."""

    enabled: bool = True
    auto_execute: bool = False


@dataclass(frozen=True)
class NotificationSettings:
    dedupe_seconds: float = 300.0
    retry_backoff_seconds: float = 2.0
    rate_limit_per_minute: int = 20
    rate_limit_backoff_seconds: float = 60.0
    request_timeout_seconds: float = 5.0
    env_reload_seconds: float = 2.0


@dataclass(frozen=True)
class OrchestratorSettings:
    stall_timeout_seconds: float = 120.0
    stall_retries_before_notify: int = 2
    failure_alert_threshold: int = 3
    cooldown_seconds: float = 60.0
    poll_interval_seconds: float = 0.1
    output_tail_lines: int = 20
    interrupt_grace_seconds: float = 2.0
    idle_probe_seconds: float = 2.0
    host_down_seconds: float = 30.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108
    env_file: Path = Path("~/.env").expanduser()
    runtime_dir: Path | None = None
    codex: CodexConfig = field(default_factory=CodexConfig)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    ai: AISettings = field(default_factory=AISettings)
    decision: DecisionSettings = field(default_factory=DecisionSettings)
    plan: PlanSettings = field(default_factory=PlanSettings)
    approvals: ApprovalSettings = field(default_factory=ApprovalSettings)


@dataclass(frozen=True)
class Config:
    config_path: Path
    orchestrator_path: Path
    tmux: TmuxConfig
    state_db: Path
    log_dir: Path
    sessions: tuple[SessionConfig, ...]
    settings: OrchestratorSettings
    host: str = ""
    """This orchestrator's fleet host: `TMUX_AGENT_HOST`, else the config's `host:`, else the
    machine's name. Only the sessions of this host are in `sessions`."""
    state_dsn: str | None = None
    """A PostgreSQL DSN (`state_db: postgresql://…` or `state_dsn:`): the fleet's shared state.
    `state_db` is then this host's local anchor (its lock and doorbell), not a database."""
    other_hosts_sessions: tuple[SessionConfig, ...] = ()

    @property
    def audit_log(self) -> Path:
        return self.log_dir / "orchestrator-actions.jsonl"

    @property
    def runtime_dir(self) -> Path:
        """Where per-command wrapper, exit-code and output files live."""
        return self.settings.runtime_dir or (self.state_db.parent / "run")

    @property
    def fleet_sessions(self) -> tuple[SessionConfig, ...]:
        """Every session this config names, this host's and the other hosts' (what the CLI shows)."""
        return (*self.sessions, *self.other_hosts_sessions)

    def session(self, name: str) -> SessionConfig:
        """A session this config names, on any host (the CLI may address the whole fleet)."""
        for session in self.fleet_sessions:
            if session.name == name:
                return session
        known = ", ".join(s.name for s in self.fleet_sessions) or "none"
        raise ConfigError(
            f"unknown session '{name}'",
            file=str(self.config_path),
            key="sessions",
            fix=f"use one of: {known}, or add it under sessions",
        )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path), fix="run `tmux-agent init` or pass --config PATH") from None
    except IsADirectoryError:
        raise ConfigError(
            "is a folder, not a file", file=str(path), fix="pass --config PATH to the YAML file"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read ({exc.strerror})", file=str(path), fix="check permissions") from None
    text = _utf8(raw, path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "unknown line"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"YAML syntax error at {where}: {problem}", file=str(path), fix="fix the YAML syntax"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("top level must be a mapping", file=str(path), fix="start with keys like `sessions:`")
    return data


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read ({exc.strerror})", file=str(path), fix="check permissions") from None
    except IsADirectoryError:
        raise ConfigError(
            "is a folder, not a file", file=str(path), fix="pass --orchestrator-config PATH to the TOML file"
        ) from None
    try:
        return tomllib.loads(_utf8(raw, path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TOML syntax error: {exc}", file=str(path), fix="fix the TOML syntax") from None


def _utf8(raw: bytes, path: Path) -> str:
    """A config file's text; bytes that are not UTF-8 are one error naming the line."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"not UTF-8 (byte 0x{raw[exc.start]:02x} on line {line})",
            file=str(path),
            fix="save the file as UTF-8",
        ) from None


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def _table(cls: type[_Settings], values: dict[str, Any]) -> _Settings:
    """A settings dataclass from a TOML table; lists become tuples (the dataclasses are frozen)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def settings_from_mapping(data: dict[str, Any], base: Path) -> OrchestratorSettings:
    codex = data.get("codex", {})
    if "json_events" in codex:  # accepted so old files still load; --json is always passed now
        log.warning("[codex] json_events is obsolete and ignored: decision calls always read codex's --json events")
    notes = data.get("notifications", {})
    tables = {"codex", "notifications", "env_file", "runtime_dir", "ai", "decision", "plan", "approvals"}
    scalars = {k: v for k, v in data.items() if k not in tables}
    return OrchestratorSettings(
        **scalars,
        env_file=_resolve(base, data.get("env_file", "~/.env")),
        runtime_dir=_resolve(base, data["runtime_dir"]) if "runtime_dir" in data else None,
        codex=CodexConfig(
            bin=codex.get("bin", "codex"),
            extra_args=tuple(codex.get("extra_args", [])),
            timeout_seconds=float(codex.get("timeout_seconds", 120.0)),
            output_schema=codex.get("output_schema", True),
            inherit_args=tuple(dict.fromkeys(codex.get("inherit_args", []))),
        ),
        notifications=NotificationSettings(**notes),
        ai=_table(AISettings, data.get("ai", {})),
        decision=_table(DecisionSettings, data.get("decision", {})),
        plan=_table(PlanSettings, data.get("plan", {})),
        approvals=_table(ApprovalSettings, data.get("approvals", {})),
    )


def _check_patterns(patterns: dict[str, tuple[str, ...]], file: Path) -> None:
    """Regular expressions in the config compile, or the key is named."""
    for key, values in patterns.items():
        for value in values:
            try:
                re.compile(value)
            except re.error as exc:
                raise ConfigError(
                    f"not a regular expression ({exc}): {value!r}",
                    file=str(file),
                    key=key,
                    fix="write a Python regular expression, e.g. 'missing .*API key'",
                ) from None


def load_config(config_path: str | Path | None = None, orchestrator_path: str | Path | None = None) -> Config:
    config_file = Path(config_path or DEFAULT_CONFIG_NAME).expanduser().absolute()
    base = config_file.parent
    orch_file = Path(orchestrator_path).expanduser().absolute() if orchestrator_path else base / ORCHESTRATOR_RELATIVE
    if orchestrator_path and not orch_file.exists():
        raise ConfigError(
            "file not found", file=str(orch_file), fix="check --orchestrator-config or run `tmux-agent init`"
        )

    data = _read_yaml(config_file)
    validate(data, "agent_config.schema.json", config_file)
    toml_data = _read_toml(orch_file)
    validate(toml_data, "orchestrator_config.schema.json", orch_file)

    tmux = TmuxConfig(**data.get("tmux", {}))
    if tmux.socket_name and tmux.socket_path:
        raise ConfigError(
            "socket_name and socket_path both set",
            file=str(config_file),
            key="tmux",
            fix="keep one: socket_name (tmux -L) or socket_path (tmux -S)",
        )
    host = this_host(data.get("host"))
    sessions: list[SessionConfig] = []
    seen: set[str] = set()
    for index, item in enumerate(data.get("sessions", [])):
        if item["name"] in seen:
            raise ConfigError(
                f"duplicate session name '{item['name']}'",
                file=str(config_file),
                key=f"sessions[{index}].name",
                fix="give each session a unique name",
            )
        seen.add(item["name"])
        sessions.append(
            SessionConfig(
                name=item["name"],
                target=item["target"],
                workdir=_resolve(base, item.get("workdir", ".")),
                requirements_doc=item.get("requirements_doc"),
                interrupt_keys=tuple(
                    item.get("interrupt_keys", ["Escape"] if item.get("kind") == "agent" else ["C-c"])
                ),
                blocker_patterns=tuple(item.get("blocker_patterns", [])),
                retry_safe=bool(item.get("retry_safe", False)),
                kind=item.get("kind", "shell"),
                provider=item.get("provider", "claude" if item.get("kind") == "agent" else None),
                launch=item.get("launch"),
                env=tuple((str(k), str(v)) for k, v in (item.get("env") or {}).items()),
                host=item.get("host", host),
            )
        )
        _check_patterns({f"sessions[{index}].blocker_patterns": sessions[-1].blocker_patterns}, config_file)
        if sessions[-1].provider == "generic":
            raise ConfigError(
                "provider 'generic' is not supported yet",
                file=str(config_file),
                key=f"sessions[{index}].provider",
                fix="use claude or codex",
            )
        if sessions[-1].kind != "agent" and (item.get("provider") or item.get("launch") or item.get("env")):
            raise ConfigError(
                "provider, launch and env belong to agent sessions",
                file=str(config_file),
                key=f"sessions[{index}].kind",
                fix="add kind: agent, or remove them",
            )
    settings = settings_from_mapping(toml_data, orch_file.parent)
    _check_patterns(
        {f"decision.{k}": getattr(settings.decision, k) for k in ("blocker_patterns", "allowlist", "denylist")}
        | {f"approvals.{k}": getattr(settings.approvals, k) for k in ("allowlist", "denylist")},
        orch_file,
    )
    state_dsn = _state_dsn(data, config_file)
    if state_dsn:  # each host of a fleet: its own local anchor and logs (the audit log per host)
        state_db = _resolve(base, ".tmuxagent") / "fleet" / host / "state"
        log_dir = _resolve(base, data.get("log_dir", ".tmuxagent/logs")) / host
    else:
        state_db = _resolve(base, data.get("state_db", "~/.tmux_agent/state.db"))
        log_dir = _resolve(base, data.get("log_dir", ".tmuxagent/logs"))
    _check_writable(state_db.parent, config_file, "state_db")
    if _is_dir(state_db):
        raise ConfigError(
            f"{state_db} is a folder", file=str(config_file), key="state_db", fix="name a file, e.g. state.db"
        )
    _check_writable(log_dir, config_file, "log_dir")
    return Config(
        config_path=config_file,
        orchestrator_path=orch_file,
        tmux=tmux,
        state_db=state_db,
        log_dir=log_dir,
        sessions=tuple(s for s in sessions if s.host == host),
        settings=settings,
        host=host,
        state_dsn=state_dsn,
        other_hosts_sessions=tuple(s for s in sessions if s.host != host),
    )


HOST_ENV = "TMUX_AGENT_HOST"
_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def this_host(configured: str | None) -> str:
    """This orchestrator's fleet host: `TMUX_AGENT_HOST` (one machine running several hosts, as
    the tests do), else the config's `host:`, else the machine's own name."""
    from_env = os.environ.get(HOST_ENV, "").strip()
    if from_env and not _HOST_NAME.match(from_env):
        raise ConfigError(
            f"{HOST_ENV}={from_env!r} is not a host name",
            key=HOST_ENV,
            fix="use letters, digits, dots, dashes and underscores",
        )
    name = from_env or configured or socket.gethostname().split(".")[0]
    return name if _HOST_NAME.match(name) else "localhost"


def _state_dsn(data: dict[str, Any], config_file: Path) -> str | None:
    """The PostgreSQL DSN of `state_db: postgresql://…` or `state_dsn:`, or None (SQLite)."""
    in_db = str(data.get("state_db", ""))
    from_db = in_db if in_db.startswith(("postgresql://", "postgres://")) else None
    if from_db and data.get("state_dsn"):
        raise ConfigError(
            "state_db and state_dsn both name a PostgreSQL database",
            file=str(config_file),
            key="state_dsn",
            fix="keep one of them",
        )
    dsn = from_db or data.get("state_dsn")
    return str(dsn) if dsn else None


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _check_writable(folder: Path, file: Path, key: str) -> None:
    """`folder` is, or can be made, a folder this process writes: else one error naming the key.

    Nothing is created here; the first existing ancestor decides (a regular file there, or a
    folder without write permission or on a read-only mount, would fail later with a traceback)."""
    probe = folder
    while True:
        try:
            probe.stat()
            break
        except FileNotFoundError:
            pass
        except NotADirectoryError:
            pass
        except OSError as exc:
            raise ConfigError(
                f"cannot use {folder} ({exc.strerror})", file=str(file), key=key, fix="pick another path"
            ) from None
        if probe.parent == probe:
            return
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"{probe} is a regular file, not a folder, so {folder} cannot be made",
            file=str(file),
            key=key,
            fix=f"move that file away or set {key} to another path",
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"folder {probe} is not writable" + ("" if probe == folder else f" (so {folder} cannot be made)"),
            file=str(file),
            key=key,
            fix=f"make it writable or set {key} to a folder you can write",
        )
