"""A running orchestrator for tests: the real `tmux-agent-orchestrator` CLI as a
subprocess, with temp config, temp state/log paths and compressed timeouts.

Tests talk to it the way a user would: `tmux-agent send` / `meta set` /
`unblock` subprocesses, the SQLite file, the JSONL audit log and /metrics.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from orchestrator.model import TERMINAL_STATUSES, CommandRow
from orchestrator.redact import SECRET_ENV_VARS
from orchestrator.state.audit_read import read_events
from orchestrator.state.port import Store
from orchestrator.state.store import StateStore

from .evidence import step
from .metrics_scraper import MetricsScraper
from .tmux_server import AgentPane, TmuxTestServer
from .waiting import wait_until

__all__ = [
    "COMPRESSED_SETTINGS",
    "OrchestratorService",
    "OrchestratorServiceFactory",
    "cli_path",
    "make_service",
    "merge_settings",
]

# What `tmuxagent_settings` returns by default: merged under each service's own settings.
DEFAULT_HOST = "local"
"""The fleet host of a service on PostgreSQL that names none."""

COMPRESSED_SETTINGS: dict[str, Any] = {
    "stall_timeout_seconds": 2,
    "stall_retries_before_notify": 1,
    "failure_alert_threshold": 3,
    "cooldown_seconds": 1,
    "poll_interval_seconds": 0.05,
    "output_tail_lines": 20,
    "metrics_host": "127.0.0.1",
    "metrics_port": 0,
    # Scenarios that want decision assist or an AI (C, D) turn them on; the others stay quiet and
    # never reach a real codex or API by accident.
    "ai": {"backend": "off"},
    "decision": {"enabled": False},
}


def merge_settings(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; a table (`[ai]`, `[decision]`…) is merged key by key, not replaced."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = dict(value) if isinstance(value, Mapping) else value
    return merged


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def to_toml(settings: dict[str, Any]) -> str:
    """Just enough TOML for our flat settings and their one-level tables."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in settings.items() if not isinstance(v, dict)]
    for table, values in settings.items():
        if isinstance(values, dict):
            lines.append(f"\n[{table}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def cli_path(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@dataclass
class OrchestratorService:
    """The real `tmux-agent-orchestrator` over temp config and state, driven through its CLI.

    `settings` (orchestrator.toml keys) are merged over `base_settings` — the
    `tmuxagent_settings` fixture, COMPRESSED_SETTINGS by default."""

    root: Path
    tmux: TmuxTestServer
    panes: list[AgentPane]
    settings: dict[str, Any] = field(default_factory=dict)
    base_settings: dict[str, Any] = field(default_factory=lambda: dict(COMPRESSED_SETTINGS))
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    announce: Callable[[str], None] | None = None  # live mode says what it sends where
    session_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra keys per session
    process: subprocess.Popen[bytes] | None = None
    metrics: MetricsScraper | None = None
    state_dsn: str | None = None  # a PostgreSQL fleet's DSN instead of the SQLite file
    host: str | None = None  # this service's fleet host (with state_dsn)

    def __post_init__(self) -> None:
        if self.state_dsn and not self.host:
            self.host = DEFAULT_HOST
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path = self.root / "agent-config.yaml"
        self.orchestrator_path = self.root / ".tmuxagent" / "orchestrator.toml"
        self.state_db = self.root / ".tmuxagent" / "state.db"
        self.log_dir = self.root / ".tmuxagent" / "logs"
        self.env_file = self.root / "dot.env"
        self.env_file.touch()
        self.write_config()

    # files ---------------------------------------------------------------------
    def write_config(self) -> None:
        document = {
            "tmux": self.tmux.tmux_config(),
            **(
                {"state_dsn": self.state_dsn, "host": self.host} if self.state_dsn else {"state_db": str(self.state_db)}
            ),
            "log_dir": str(self.log_dir),
            "sessions": [p.session_config(**self.session_overrides.get(p.name, {})) for p in self.panes],
        }
        self.config_path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False))
        merged = merge_settings(self.base_settings, {"env_file": str(self.env_file)}, self.settings)
        self.orchestrator_path.parent.mkdir(parents=True, exist_ok=True)
        self.orchestrator_path.write_text(to_toml(merged))

    @property
    def host_log_dir(self) -> Path:
        """Where the service writes its logs: a fleet host under log_dir/<host>/ (docs/fleet.md)."""
        return self.log_dir / self.host if self.state_dsn and self.host else self.log_dir

    @property
    def audit_log(self) -> Path:
        return self.host_log_dir / "orchestrator-actions.jsonl"

    @property
    def service_log(self) -> Path:
        return self.root / "orchestrator.stderr.log"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WECOM_", "OPENAI_"))}
        env.update(self.env)
        return env

    # the process ------------------------------------------------------------------
    def start(self, *args: str, wait: bool = True) -> OrchestratorService:
        runtime = self.host_log_dir / "orchestrator-runtime.json"
        runtime.unlink(missing_ok=True)
        argv = [cli_path("tmux-agent-orchestrator"), "--config", str(self.config_path), *self.extra_args, *args]
        with self.service_log.open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log, env=self._env(), cwd=str(self.root))
        if wait:
            info = wait_until(
                lambda: self._runtime_info(runtime),
                timeout=15,
                message=f"orchestrator did not start; log: {self.log_text()[-2000:]}",
            )
            metrics = self.metrics = MetricsScraper(str(info["metrics_url"]))
            wait_until(lambda: metrics.scrape() is not None, timeout=10, message="metrics endpoint not up")
        return self

    def _runtime_info(self, runtime: Path) -> dict[str, Any] | None:
        process = self.process
        if process is None:
            return None
        if process.poll() is not None:
            raise AssertionError(f"orchestrator exited {process.returncode}: {self.log_text()[-2000:]}")
        try:
            info = json.loads(runtime.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return info if isinstance(info, dict) and info.get("pid") == process.pid else None

    def log_text(self) -> str:
        try:
            return self.service_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def leaked_secrets(self) -> list[str]:
        """Secret values given to the service that show up in its logs or audit file (should be none)."""
        secrets: set[str] = set()
        for name in SECRET_ENV_VARS:
            value = self.env.get(name) or ""
            if value:
                secrets.add(value)
                secrets.update(re.findall(r"[?&]key=([^&\s]+)", value))
        leaks = []
        for path in (self.service_log, self.audit_log, self.host_log_dir / "orchestrator.log"):
            text = path.read_text(errors="replace") if path.exists() else ""
            leaks += [f"{secret[:3]}… in {path.name}" for secret in secrets if len(secret) >= 8 and secret in text]
        return leaks

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=5)

    def kill(self) -> int | None:
        return self.stop(signal.SIGKILL)

    # the user's command line ----------------------------------------------------------
    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        split = 2 if args[:1] == ("meta",) else 1  # `meta set` takes its flags after `set`
        argv = [cli_path("tmux-agent"), *args[:split], "--config", str(self.config_path), *args[split:]]
        result = subprocess.run(argv, capture_output=True, text=True, env=self._env(), cwd=str(self.root), timeout=30)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr}")
        return result

    def send(self, session: str, command: str) -> int:
        if self.announce is not None:
            target = next((p.target for p in self.panes if p.name == session), "?")
            self.announce(f"sending `{command}` to session {session} (pane {target})")
        with step(f"tmux-agent send {session} -- {command}"):
            return int(self.cli("send", session, "--", command).stdout.strip())

    def meta_set(self, session: str, key: str, value: Any) -> None:
        self.cli("meta", "set", session, key, json.dumps(value, ensure_ascii=False))

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(self.cli("status", "--json").stdout)
        return status

    # reading what happened ------------------------------------------------------------
    def store(self) -> Store:
        """The service's state store (its SQLite file, or its PostgreSQL database); close it."""
        if self.state_dsn:
            from orchestrator.state.pg_store import PgStateStore

            return PgStateStore(self.state_dsn)
        return StateStore(self.state_db)

    @property
    def verify_args(self) -> list[str]:
        """How replay is pointed at this service's state (`--verify-db FILE` or `--dsn DSN`)."""
        return ["--dsn", self.state_dsn] if self.state_dsn else ["--verify-db", str(self.state_db)]

    @property
    def state_where(self) -> str:
        """The state DB as replay and the dashboard name it."""
        if self.state_dsn:
            from orchestrator.state.pg_errors import display_dsn

            return display_dsn(self.state_dsn)
        return str(self.state_db)

    def command(self, command_id: int) -> CommandRow | None:
        store = self.store()
        try:
            return store.command(command_id)
        finally:
            store.close()

    def metadata(self, session: str) -> dict[str, Any]:
        store = self.store()
        try:
            return store.metadata(session)
        finally:
            store.close()

    def evidence(self) -> list[tuple[str, str, str]]:
        """Metric values, an audit excerpt and notable log lines, for the report and Allure."""
        out: list[tuple[str, str, str]] = []
        if self.metrics is not None and self.process is not None and self.process.poll() is None:
            try:
                snapshot = self.metrics.scrape()
                lines = [
                    f"{smp.name}{{{','.join(f'{k}={v}' for k, v in sorted(smp.labels.items()))}}} {smp.value:g}"
                    for name in EVIDENCE_METRICS
                    for smp in snapshot.samples(name)
                    if smp.value
                ]
                out.append(
                    ("metrics", "non-zero orchestrator metrics scraped from /metrics", "\n".join(lines) or "(all zero)")
                )
            except Exception as exc:  # evidence must never fail a test
                out.append(("metrics", "scrape failed", repr(exc)))
        if self.audit_log.exists():
            events = read_events(self.audit_log).events
            out.append(
                (
                    "audit",
                    f"last {min(12, len(events))} of {len(events)} audit events",
                    "\n".join(_audit_line(e) for e in events[-12:]),
                )
            )
        notable = [line for line in self.log_text().splitlines() if " WARNING " in line or "recovered" in line]
        if notable:
            out.append(("log", "orchestrator warnings and recoveries", "\n".join(notable[-10:])))
        return out

    def wait_result(self, command_id: int, timeout: float = 15) -> CommandRow:
        def finished() -> CommandRow | None:
            row = self.command(command_id)
            return row if row and row.status in TERMINAL_STATUSES else None

        with step(f"wait for the result of command {command_id}"):
            row: CommandRow = wait_until(
                finished,
                timeout=timeout,
                message=f"command {command_id} did not finish; log: {self.log_text()[-1500:]}",
            )
        return row

    def audit_events(
        self, *, event: str | None = None, session: str | None = None, validate: bool = True
    ) -> list[dict[str, Any]]:
        result = read_events(self.audit_log, validate=validate)
        assert not [p for p in result.problems if "schema" in p], result.problems
        return [
            e
            for e in result.events
            if (event is None or e["event"] == event) and (session is None or e.get("session") == session)
        ]


EVIDENCE_METRICS = (
    "orchestrator_commands_total",
    "orchestrator_command_duration_seconds_count",
    "orchestrator_queue_depth",
    "orchestrator_stall_count_total",
    "orchestrator_failure_streak",
    "orchestrator_session_blocked",
    "orchestrator_notifications_total",
    "orchestrator_notifications_pending",
    "orchestrator_notifications_degraded",
)


def _audit_line(event: dict[str, Any]) -> str:
    parts = [event["ts"][11:23], event["event"], event.get("session") or "-"]
    if "command_id" in event:
        parts.append(f"#{event['command_id']} {event.get('command', '')!r}")
    if "status" in event:
        parts.append(f"{event['status']} exit={event.get('exit_code')}")
    if event.get("detail"):
        parts.append(str(event["detail"]))
    return " ".join(parts)


def make_service(
    root: Path,
    tmux: TmuxTestServer,
    panes: Iterable[AgentPane],
    *,
    settings: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    session_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    base_settings: Mapping[str, Any] | None = None,
    announce: Callable[[str], None] | None = None,
    state_dsn: str | None = None,
) -> OrchestratorService:
    """An `OrchestratorService` with its config written, not started (what the fixture's factory builds)."""
    return OrchestratorService(
        root=root,
        tmux=tmux,
        panes=list(panes),
        settings=dict(settings or {}),
        env=dict(env or {}),
        extra_args=list(extra_args),
        announce=announce,
        session_overrides={name: dict(keys) for name, keys in (session_overrides or {}).items()},
        base_settings=dict(COMPRESSED_SETTINGS if base_settings is None else base_settings),
        state_dsn=state_dsn,
    )


class OrchestratorServiceFactory(Protocol):
    """What the `orchestrator_service` fixture returns.

    `orchestrator_service(panes, settings=..., env=...)` writes an agent-config.yaml naming
    `panes` and an orchestrator.toml of `tmuxagent_settings` merged with `settings`, then
    (with `start=True`) runs `tmux-agent-orchestrator --config … *extra_args *start_args` and
    waits for its /metrics. Every service is stopped, and checked for leaked secrets, after
    the test.
    """

    def __call__(
        self,
        panes: Iterable[AgentPane],
        *,
        settings: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        session_overrides: Mapping[str, Mapping[str, Any]] | None = None,
        start: bool = True,
        start_args: Sequence[str] = (),
    ) -> OrchestratorService: ...
