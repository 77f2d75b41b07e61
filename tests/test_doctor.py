"""`tmux-agent doctor` and scripts/diagnose_orchestrator.sh: one line per check,
exit 0 only when all pass, secrets masked."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from pytest_tmuxagent.service import cli_path

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path: Path, fake_codex, wecom_mock) -> Path:
    (tmp_path / "agent-config.yaml").write_text(
        "tmux:\n  socket_name: doctor-unused\nstate_db: st/state.db\nlog_dir: logs\n"
        "sessions:\n  - name: weather/bot\n    target: 'weather:bot'\n"
    )
    with socket.socket() as sock:  # a port that is free right now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / ".tmuxagent").mkdir()
    (tmp_path / ".tmuxagent" / "orchestrator.toml").write_text(
        f'metrics_port = {port}\nenv_file = "{tmp_path / "dot.env"}"\n[codex]\ntimeout_seconds = 10\n'
    )
    env = {"OPENAI_API_KEY": "sk-doctor-secret-123456", **wecom_mock.env("webhook")}
    (tmp_path / "dot.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return tmp_path


def doctor(project: Path, *args: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [str(ROOT / "scripts" / "diagnose_orchestrator.sh")] if script else [cli_path("tmux-agent"), "doctor"]
    return subprocess.run(
        [*argv, "--config", str(project / "agent-config.yaml"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
        cwd=project,
    )


def test_all_checks_pass_and_the_key_is_masked(project: Path, wecom_mock) -> None:
    result = doctor(project)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    for name in ("tmux", "config", "codex", "OPENAI_API_KEY", "WeCom", "metrics port", "state DB", "log dir"):
        assert any(line.startswith("ok") and f" {name} " in f"{line} " for line in lines), (name, result.stdout)
    assert "answered a tiny prompt" in result.stdout
    assert "sk-doctor-secret-123456" not in result.stdout and "test-webhook-key-0001" not in result.stdout
    assert wecom_mock.requests == []  # no message without --send-test


def test_send_test_delivers_a_message(project: Path, wecom_mock) -> None:
    result = doctor(project, "--send-test", script=True)
    assert result.returncode == 0, result.stdout
    [message] = wecom_mock.wait_for_messages(1)
    assert "tmux-agent doctor" in message


def test_a_busy_metrics_port_fails_with_a_fix(project: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = doctor(project, "--metrics-port", str(busy.getsockname()[1]))
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if "metrics port" in line)
    assert line.startswith("FAIL") and "fix:" in line


def test_a_hanging_codex_fails_within_the_timeout(project: Path, fake_codex) -> None:
    fake_codex.script([{"kind": "hang"}])
    toml = project / ".tmuxagent" / "orchestrator.toml"
    toml.write_text(toml.read_text().replace("timeout_seconds = 10", "timeout_seconds = 1"))
    result = doctor(project)
    assert result.returncode == 1
    assert any(
        line.startswith("FAIL") and "codex" in line and "no answer in 1s" in line for line in result.stdout.splitlines()
    ), result.stdout
