"""`tmux-agent run`: orchestrator and dashboard in one foreground command; Ctrl-C
stops both cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

from pytest_tmuxagent.service import cli_path
from pytest_tmuxagent.waiting import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthz(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
        return response.status == 200


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_run_starts_both_and_ctrl_c_stops_both(agent_pane, orchestrator_service, tmp_path: Path) -> None:
    service = orchestrator_service([agent_pane("weather/bot")], start=False)
    port = free_port()
    log = (tmp_path / "run.log").open("wb")
    run = subprocess.Popen(
        [
            cli_path("tmux-agent"),
            "run",
            "--config",
            str(service.config_path),
            "--metrics-port",
            "0",
            "--dashboard-port",
            str(port),
        ],
        stdout=log,
        stderr=log,
    )
    try:
        wait_until(lambda: healthz(port), timeout=20, message="dashboard never answered /healthz")
        runtime = service.log_dir / "orchestrator-runtime.json"
        orchestrator_pid = wait_until(lambda: json.loads(runtime.read_text())["pid"], timeout=20)
        assert service.wait_result(service.send("weather/bot", "echo via-run")).output_tail == "via-run"

        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=20) == 0
        assert not pid_alive(orchestrator_pid)
        assert service.audit_events()[-1]["event"] == "orchestrator_stopped"
        wait_until(lambda: not _answers(port), timeout=5, message="dashboard still answering after Ctrl-C")
    finally:
        if run.poll() is None:
            run.kill()


def _answers(port: int) -> bool:
    try:
        return healthz(port)
    except OSError:
        return False
