"""`tmux-agent validate` as a CI gate: an induced failure shows in the report and
makes the command exit non-zero; bad options exit 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pytest_tmuxagent.service import cli_path


def playbook(folder: Path, failing: str = "") -> Path:
    folder.mkdir()
    (folder / "test_playbook.py").write_text(
        "\n".join(
            ["import pytest"]
            + [
                f"@pytest.mark.scenario_{x}\ndef test_{x}():\n"
                f"    assert '{x}' != '{failing}', 'induced failure in scenario {x}'\n"
                for x in "abcdefg"
            ]
        )
    )
    return folder


def validate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cli_path("tmux-agent"), "validate", "--report", str(tmp_path / "report.md"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_all_scenarios_passing_exits_zero(tmp_path: Path) -> None:
    result = validate(tmp_path, "--scenarios-dir", str(playbook(tmp_path / "scenarios")))
    assert result.returncode == 0, result.stdout[-2000:]
    assert "[scenario G] passed" in result.stdout  # a progress line per scenario test
    assert (tmp_path / "report.md").read_text().count("✅ met") == 5


def test_an_induced_failure_fails_validate_and_shows_in_the_report(tmp_path: Path) -> None:
    result = validate(tmp_path, "--scenarios-dir", str(playbook(tmp_path / "scenarios", failing="e")))
    assert result.returncode != 0
    report = (tmp_path / "report.md").read_text()
    assert "| E 连续失败告警 — failure-streak alerts | FAILED |" in report
    assert "induced failure in scenario e" in report


def test_an_unknown_scenario_letter_exits_2(tmp_path: Path) -> None:
    result = validate(tmp_path, "--scenario", "z")
    assert result.returncode == 2 and "unknown scenario 'z'" in result.stderr
