"""One orchestrator per state DB: a second `tmux-agent-orchestrator` (or `tmux-agent run`) on the
same DB exits 2 with one line naming the DB and the running orchestrator's pid; a lock left by a
dead orchestrator never blocks."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from orchestrator.state.lock import AlreadySupervised, StateLock, lock_path, locked_by
from pytest_tmuxagent.service import OrchestratorServiceFactory, cli_path
from pytest_tmuxagent.tmux_server import AgentPaneFactory

SESSION = "weather/bot"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, env=os.environ.copy())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_second_orchestrator_on_the_same_db_exits_2_naming_the_first(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory
) -> None:
    service = orchestrator_service([agent_pane(SESSION)])
    assert service.process is not None
    first = service.process.pid

    second = run(cli_path("tmux-agent-orchestrator"), "--config", str(service.config_path), "--metrics-port", "0")

    assert second.returncode == 2, second.stderr
    [line] = second.stderr.splitlines()
    assert line.startswith("tmux-agent-orchestrator: error: ")
    assert str(service.state_db) in line and f"already supervised by orchestrator pid {first}" in line
    assert "stop it first or point this one at another state_db" in line and "Traceback" not in line
    assert service.process.poll() is None  # the first one is untouched and still works
    assert service.wait_result(service.send(SESSION, "echo still-mine")).output_tail == "still-mine"
    assert len(service.audit_events(event="orchestrator_started")) == 1


def test_tmux_agent_run_says_so_before_starting_anything(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory
) -> None:
    service = orchestrator_service([agent_pane(SESSION)])
    assert service.process is not None
    port = free_port()

    result = run(cli_path("tmux-agent"), "run", "--config", str(service.config_path), "--dashboard-port", str(port))

    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("tmux-agent: error: ") and str(service.state_db) in line
    assert f"orchestrator pid {service.process.pid}" in line
    assert "orchestrator pid" not in result.stdout  # no "started" line: neither process was started
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # no dashboard took the port


def test_a_lock_file_left_by_a_killed_orchestrator_does_not_block(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory
) -> None:
    service = orchestrator_service([agent_pane(SESSION)])
    assert service.process is not None
    dead = service.process.pid
    service.kill()
    assert lock_path(service.state_db).read_text().strip() == str(dead)  # SIGKILL left its pid behind

    service.start()
    assert service.process.pid != dead
    assert lock_path(service.state_db).read_text().strip() == str(service.process.pid)
    assert service.wait_result(service.send(SESSION, "true")).status == "succeeded"


def test_the_lock_in_process(tmp_path: Path) -> None:
    db = tmp_path / "st" / "state.db"
    assert locked_by(db) is None  # never supervised: no file, and none is made
    assert not lock_path(db).exists()
    first = StateLock(db)
    first.acquire()
    busy = locked_by(db)
    assert busy is not None and busy.pid == os.getpid()
    with pytest.raises(AlreadySupervised, match=f"already supervised by orchestrator pid {os.getpid()}"):
        StateLock(db).acquire(patience=0)
    first.release()
    assert locked_by(db) is None
    again = StateLock(db)
    again.acquire(patience=0)
    again.release()
