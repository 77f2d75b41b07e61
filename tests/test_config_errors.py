"""Bad input gets one clear line naming file, key and fix, and exit code 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.errors import ConfigError
from pytest_tmuxagent.service import cli_path

GOOD_YAML = """\
tmux:
  socket_name: nowhere-{tag}
state_db: state.db
log_dir: logs
sessions:
  - name: weather/bot
    target: "weather:bot"
"""


def write(tmp_path: Path, yaml_text: str = GOOD_YAML, toml_text: str | None = None) -> Path:
    config = tmp_path / "agent-config.yaml"
    config.write_text(yaml_text.replace("{tag}", tmp_path.name))
    if toml_text is not None:
        (tmp_path / ".tmuxagent").mkdir(exist_ok=True)
        (tmp_path / ".tmuxagent" / "orchestrator.toml").write_text(toml_text)
    return config


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([cli_path(argv[0]), *argv[1:]], capture_output=True, text=True, cwd=cwd, timeout=30)


def test_good_config_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, toml_text="stall_timeout_seconds = 1.5\n[codex]\nextra_args = ['-q']\n"))
    assert config.state_db == tmp_path / "state.db"
    assert config.audit_log == tmp_path / "logs" / "orchestrator-actions.jsonl"
    assert config.settings.stall_timeout_seconds == 1.5
    assert config.settings.failure_alert_threshold == 3
    assert config.settings.codex.extra_args == ("-q",)
    assert config.sessions[0].name == "weather/bot"


BAD_INPUTS = {
    "unknown-yaml-key": (GOOD_YAML + "colour: blue\n", None, ["agent-config.yaml", "'colour'", "unknown key"]),
    "unknown-session-key": (GOOD_YAML + "    shell: zsh\n", None, ["agent-config.yaml", "sessions[0].shell"]),
    "unknown-toml-key": (
        GOOD_YAML,
        "stall_timeout = 5\n",
        ["orchestrator.toml", "'stall_timeout'", "stall_timeout_seconds"],
    ),
    "wrong-type": (
        GOOD_YAML,
        "failure_alert_threshold = 'three'\n",
        ["orchestrator.toml", "failure_alert_threshold", "integer"],
    ),
    "yaml-syntax": ("sessions: [\n  - name: x\n", None, ["agent-config.yaml", "YAML syntax error", "line"]),
    "toml-syntax": (GOOD_YAML, "stall_timeout_seconds = = 1\n", ["orchestrator.toml", "TOML syntax error"]),
    "missing-target": (GOOD_YAML.replace('    target: "weather:bot"\n', ""), None, ["sessions[0].target", "missing"]),
}


@pytest.mark.parametrize("yaml_text,toml_text,needles", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_config_exits_2_with_one_line(
    tmp_path: Path, yaml_text: str, toml_text: str | None, needles: list[str]
) -> None:
    write(tmp_path, yaml_text, toml_text)
    result = run("tmux-agent-orchestrator", "--config", "agent-config.yaml", "--once", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_missing_config_file_names_the_fix(tmp_path: Path) -> None:
    result = run("tmux-agent", "status", "--config", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.yaml: file not found" in result.stderr and "tmux-agent init" in result.stderr


def test_unknown_session_exits_2(tmp_path: Path) -> None:
    write(tmp_path)
    result = run(
        "tmux-agent", "send", "--config", "agent-config.yaml", "--no-check", "nobody/home", "--", "true", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "unknown session 'nobody/home'" in result.stderr and "weather/bot" in result.stderr


def test_pane_that_does_not_exist_exits_2(tmp_path: Path) -> None:
    write(tmp_path)
    result = run(
        "tmux-agent-orchestrator", "--config", "agent-config.yaml", "--once", "--metrics-port", "0", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "no tmux pane for target 'weather:bot'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_meta_set_rejects_non_json(tmp_path: Path) -> None:
    write(tmp_path)
    result = run(
        "tmux-agent", "meta", "set", "--config", "agent-config.yaml", "weather/bot", "blockers", "[oops", cwd=tmp_path
    )
    assert result.returncode == 2 and "key 'blockers'" in result.stderr


def test_load_config_raises_config_error_in_process(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, GOOD_YAML + "extra: 1\n"))
    assert info.value.key == "extra"


def test_init_writes_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    first = run("tmux-agent", "init", cwd=tmp_path)
    assert first.returncode == 0
    assert load_config(tmp_path / "agent-config.yaml").settings.metrics_port == 9108
    again = run("tmux-agent", "init", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr
    assert run("tmux-agent", "init", "--force", cwd=tmp_path).returncode == 0
