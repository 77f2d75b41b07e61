"""`tmux-agent validate` as a CI gate: an induced failure shows in the report and
makes the command exit non-zero; bad options exit 2; by default it runs the installed
`tmuxagent_scenarios` package (scripts/smoke_installed.sh proves that from a wheel)."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from orchestrator.cli.validate import pytest_argv, scenarios_dir
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


def args(**given: object) -> argparse.Namespace:
    defaults: dict[str, object] = dict(
        scenarios_dir=None, markexpr=None, scenario=[], workers=None, live=False, report=None, allure=None
    )
    return argparse.Namespace(**{**defaults, **given})


def test_by_default_the_installed_playbook_package_runs() -> None:
    argv = pytest_argv(args(scenario=["a", "B"]))
    assert argv[argv.index("--pyargs") + 1] == "tmuxagent_scenarios"
    last_m = len(argv) - 1 - argv[::-1].index("-m")  # argv starts `python -m pytest`
    assert argv[last_m + 1] == "(scenario_a or scenario_b)"
    assert "--tmuxagent-gate" not in argv  # a subset is not the whole playbook
    assert (scenarios_dir() / "test_scenario_a_feedback.py").exists()
    assert (scenarios_dir() / "deploy" / "prometheus" / "prometheus.yml").exists()  # scenario F's files


def test_the_whole_playbook_is_gated_and_a_folder_replaces_the_package(tmp_path: Path) -> None:
    assert "--tmuxagent-gate" in pytest_argv(args())
    argv = pytest_argv(args(scenarios_dir=str(tmp_path)))
    assert "--pyargs" not in argv and str(tmp_path) in argv
