"""Issue 13, part 4: every bad input is one line and exit 2 (file, key, fix), never a traceback.

Each case runs the real CLIs as subprocesses against a config in tmp_path. The orchestrator
cases that must get past the config use a fleet with no sessions, so no tmux server is needed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_tmuxagent.service import cli_path

NO_SESSIONS = """\
tmux:
  socket_name: nowhere-{tag}
state_db: {state_db}
log_dir: {log_dir}
sessions: []
"""

ONE_SESSION = NO_SESSIONS.replace("sessions: []", 'sessions:\n  - name: weather/bot\n    target: "weather:bot"')


def write(
    tmp_path: Path,
    toml_text: str = "",
    *,
    yaml_text: str = NO_SESSIONS,
    state_db: str = "state.db",
    log_dir: str = "logs",
) -> Path:
    config = tmp_path / "agent-config.yaml"
    config.write_text(yaml_text.format(tag=tmp_path.name, state_db=state_db, log_dir=log_dir))
    (tmp_path / ".tmuxagent").mkdir(exist_ok=True)
    (tmp_path / ".tmuxagent" / "orchestrator.toml").write_text(
        f'env_file = "{tmp_path / "no-default.env"}"\n' + toml_text if "env_file" not in toml_text else toml_text
    )
    (tmp_path / "no-default.env").write_text("")
    return config


def run(*argv: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(cwd)}
    for key in [k for k in env if k.startswith("WECOM_")]:
        del env[key]
    return subprocess.run(
        [cli_path(argv[0]), *argv[1:]], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env
    )


def orchestrator(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run("tmux-agent-orchestrator", "--config", "agent-config.yaml", "--once", *extra, cwd=tmp_path)


def one_error_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, no traceback, and exactly one `error:` line on stderr holding every needle."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


# ports and hosts ---------------------------------------------------------------------------------
def test_metrics_port_out_of_range(tmp_path: Path) -> None:
    write(tmp_path)
    line = one_error_line(orchestrator(tmp_path, "--metrics-port", "70000"), "--metrics-port", "70000", "65535")
    assert len(line) < 300


def test_negative_metrics_port(tmp_path: Path) -> None:
    write(tmp_path)
    one_error_line(orchestrator(tmp_path, "--metrics-port", "-1"), "--metrics-port", "65535")


def test_dashboard_port_out_of_range(tmp_path: Path) -> None:
    write(tmp_path)
    result = run("tmux-agent", "dashboard", "--db", str(tmp_path / "state.db"), "--port", "70000", cwd=tmp_path)
    one_error_line(result, "--port", "70000", "65535")


def test_unresolvable_metrics_host(tmp_path: Path) -> None:
    write(tmp_path, 'metrics_host = "no-such-host.invalid"\nmetrics_port = 0\n')
    one_error_line(orchestrator(tmp_path), "orchestrator.toml", "metrics_host", "no-such-host.invalid")


# files that are not UTF-8 ------------------------------------------------------------------------
def test_agent_config_not_utf8(tmp_path: Path) -> None:
    config = write(tmp_path)
    config.write_bytes(config.read_bytes() + b"# caf\xe9\n")
    for result in (orchestrator(tmp_path), run("tmux-agent", "status", cwd=tmp_path)):
        one_error_line(result, "agent-config.yaml", "UTF-8", "line 6")


def test_orchestrator_toml_not_utf8(tmp_path: Path) -> None:
    write(tmp_path)
    toml = tmp_path / ".tmuxagent" / "orchestrator.toml"
    toml.write_bytes(toml.read_bytes() + b"# caf\xe9\n")
    for result in (orchestrator(tmp_path), run("tmux-agent", "status", cwd=tmp_path)):
        one_error_line(result, "orchestrator.toml", "UTF-8", "line 2")


# state_db and log_dir that cannot be written ------------------------------------------------------
@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody may write: a read-only tmpfs as root (root ignores modes), mode 0555 otherwise."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_state_db_in_read_only_folder(tmp_path: Path, read_only_dir: Path) -> None:
    write(tmp_path, state_db=str(read_only_dir / "state.db"))
    for result in (orchestrator(tmp_path), run("tmux-agent", "status", cwd=tmp_path)):
        one_error_line(result, "agent-config.yaml", "state_db", str(read_only_dir), "not writable")


def test_state_db_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    write(tmp_path, state_db="afile/state.db")
    for result in (orchestrator(tmp_path), run("tmux-agent", "status", cwd=tmp_path)):
        one_error_line(result, "agent-config.yaml", "state_db", "afile", "not a folder")


def test_log_dir_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    write(tmp_path, log_dir="afile/logs")
    for result in (orchestrator(tmp_path), run("tmux-agent", "status", cwd=tmp_path)):
        one_error_line(result, "agent-config.yaml", "log_dir", "afile", "not a folder")


# the env file -------------------------------------------------------------------------------------
def test_env_file_not_utf8_is_named_and_the_rest_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_bytes(b"WECOM_WEBHOOK=http://127.0.0.1:9/hook\xff\nOTHER=1\n")
    write(tmp_path, f'env_file = "{env_file}"\n')
    status = run("tmux-agent", "status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    no_traceback(status)
    warnings = [line for line in status.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, status.stderr
    assert str(env_file) in warnings[0] and "line 1" in warnings[0] and "WECOM_WEBHOOK" in warnings[0]
    assert "UTF-8" in warnings[0]
    service = orchestrator(tmp_path, "--metrics-port", "0")
    no_traceback(service)
    assert service.returncode == 0, service.stderr
    named = [line for line in service.stderr.splitlines() if str(env_file) in line]
    assert named and all("WECOM_WEBHOOK" in line for line in named), service.stderr


def test_missing_env_file_named_once_when_configured(tmp_path: Path) -> None:
    missing = tmp_path / "secrets" / "wecom.env"
    write(tmp_path, f'env_file = "{missing}"\n')
    status = run("tmux-agent", "status", cwd=tmp_path)
    assert status.returncode == 0
    assert status.stderr.count(str(missing)) == 1 and "not found" in status.stderr, status.stderr
    assert "orchestrator.toml" in status.stderr
    service = orchestrator(tmp_path, "--metrics-port", "0")
    assert service.returncode == 0, service.stderr
    assert service.stderr.count(str(missing)) == 1, service.stderr


def test_missing_default_env_file_is_silent(tmp_path: Path) -> None:
    write(tmp_path, 'env_file = "~/.env"\n'.replace("~/.env", str(tmp_path / ".env")).replace(str(tmp_path), "~"))
    (tmp_path / ".tmuxagent" / "orchestrator.toml").write_text("")  # the default ~/.env, HOME is tmp_path
    status = run("tmux-agent", "status", cwd=tmp_path)
    assert status.returncode == 0 and status.stderr == "", status.stderr


# commands -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("words", [["   "], ["", " "], ["\t\n"]])
def test_whitespace_only_command_refused(tmp_path: Path, words: list[str]) -> None:
    write(tmp_path, yaml_text=ONE_SESSION)
    result = run("tmux-agent", "send", "--no-check", "weather/bot", "--", *words, cwd=tmp_path)
    one_error_line(result, "COMMAND", "empty")
    status = run("tmux-agent", "status", "--json", cwd=tmp_path)
    assert '"queue_depth": 0' in status.stdout, status.stdout
