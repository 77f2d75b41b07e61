"""The fleet tests' rig: orchestrator processes as hosts, each with its own tmux server and one
session (`HOST/job`), on one shared PostgreSQL database (tests/test_fleet.py and
tests/test_fleet_faults.py)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pytest_tmuxagent.service import OrchestratorService, cli_path
from pytest_tmuxagent.tmux_server import TmuxTestServer

HOSTS = ("h1", "h2", "h3")
FLEET_SETTINGS = {"host_down_seconds": 2.0}


@contextmanager
def running_fleet(
    tmp_path: Path, dsns: Mapping[str, str], base_settings: Mapping[str, Any]
) -> Iterator[list[OrchestratorService]]:
    """One started orchestrator per host of `dsns` ({host: the DSN it connects with})."""
    servers: list[TmuxTestServer] = []
    services: list[OrchestratorService] = []
    try:
        for host, dsn in dsns.items():
            server = TmuxTestServer.unique(tmp_path / f"{host}-panes")
            servers.append(server)
            service = OrchestratorService(
                root=tmp_path / host,
                tmux=server,
                panes=[server.agent_pane(f"{host}/job")],
                settings=FLEET_SETTINGS,
                base_settings=dict(base_settings),
                state_dsn=dsn,
                host=host,
            )
            services.append(service)
        for service in services:
            service.start()
        yield services
    finally:
        for service in services:
            service.stop()
        for server in servers:
            server.kill()


def events(service: OrchestratorService) -> list[dict[str, Any]]:
    """The host's audit log, parsed."""
    if not service.audit_log.exists():
        return []
    return [json.loads(line) for line in service.audit_log.read_text().splitlines() if line.strip()]


def laptop_config(tmp_path: Path, dsn: str, sessions: list[dict[str, str]]) -> Path:
    """A machine with no tmux server of its own: its config names the fleet's database."""
    laptop = tmp_path / "laptop"
    laptop.mkdir(exist_ok=True)
    config = laptop / "agent-config.yaml"
    # JSON is YAML
    config.write_text(json.dumps({"state_dsn": dsn, "host": "laptop", "sessions": sessions}))
    return config


def tmux_agent(config: Path, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`tmux-agent COMMAND --config CONFIG ARGS…`, run as a person on that machine runs it."""
    argv = [cli_path("tmux-agent"), command, "--config", str(config), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def fleet_status(config: Path) -> list[dict[str, Any]]:
    """The sessions `tmux-agent status --json` shows from the machine of `config`."""
    shown = tmux_agent(config, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    sessions: list[dict[str, Any]] = json.loads(shown.stdout)["sessions"]
    return sessions


def fleet_states(config: Path) -> dict[str, tuple[str, str]]:
    """{session: (state, state_detail)} as `tmux-agent status --json` shows the fleet."""
    return {s["name"]: (s["state"], s["state_detail"] or "") for s in fleet_status(config)}
