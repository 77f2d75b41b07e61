"""The config keys of decision assist and plans: defaults, and bad values named clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli.starter import AGENT_CONFIG, ORCHESTRATOR_TOML
from orchestrator.config import load_config
from orchestrator.errors import ConfigError


def write(tmp_path: Path, toml_text: str, session_extra: str = "") -> Path:
    config = tmp_path / "agent-config.yaml"
    config.write_text(AGENT_CONFIG + session_extra)
    (tmp_path / ".tmuxagent").mkdir(exist_ok=True)
    (tmp_path / ".tmuxagent" / "orchestrator.toml").write_text(toml_text)
    return config


def test_the_starter_file_loads_with_the_documented_defaults(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, ORCHESTRATOR_TOML)).settings
    assert (settings.ai.backend, settings.decision.enabled, settings.plan.auto_execute) == ("codex", True, False)
    assert settings.decision.approval_risk == "high" and settings.decision.auto_run is False
    assert settings.codex.output_schema is True and settings.codex.inherit_args == ()


def test_tables_take_lists_as_tuples(tmp_path: Path) -> None:
    text = (
        '[ai]\nbackend = "openai"\nopenai_base_url = "http://127.0.0.1:1/v1"\n'
        '[decision]\nallowlist = ["^make test$"]\nauto_run = true\n'
    )
    settings = load_config(write(tmp_path, text)).settings
    assert settings.ai.openai_base_url == "http://127.0.0.1:1/v1"
    assert settings.decision.allowlist == ("^make test$",) and settings.decision.auto_run


@pytest.mark.parametrize(
    "text,key",
    [
        ('[decision]\nallowlist = ["(unclosed"]\n', "decision.allowlist"),
        ("[decision]\nauto_approve = true\n", "decision.auto_approve"),
        ('[ai]\nbackend = "gpt"\n', "ai.backend"),
        ('[plan]\nauto_execute = "yes"\n', "plan.auto_execute"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert f"key '{key}'" in info.value.render()


def test_a_bad_session_blocker_pattern_names_the_session(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sessions\[0\].blocker_patterns"):
        load_config(write(tmp_path, "", session_extra='    blocker_patterns: ["[oops"]\n'))
