"""`tmux-agent validate` as a CI gate: an induced failure shows in the report and
makes the command exit non-zero; bad options exit 2; by default it runs the installed
`tmuxagent_scenarios` package (scripts/smoke_installed.sh proves that from a wheel)."""

from __future__ import annotations

import argparse
import subprocess
import sys
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
    assert "[scenario G] passed  1 passed in" in result.stdout  # one clean line per scenario
    assert ".[scenario" not in result.stdout and "[100%]" not in result.stdout  # no pytest dots or column
    assert (tmp_path / "report.md").read_text().count("✅ met") == 5
    assert (
        result.stdout.rstrip().splitlines()[-1] == "acceptance: 5/5 criteria met — report: report.md"
    )  # relative to the folder it ran in


def test_an_induced_failure_fails_validate_and_shows_in_the_report(tmp_path: Path) -> None:
    result = validate(tmp_path, "--scenarios-dir", str(playbook(tmp_path / "scenarios", failing="e")))
    assert result.returncode != 0
    report = (tmp_path / "report.md").read_text()
    assert "| E 连续失败告警 — failure-streak alerts | FAILED |" in report
    assert "induced failure in scenario e" in report


def test_a_subset_that_passes_exits_zero_and_says_not_run_for_the_rest(tmp_path: Path) -> None:
    """`validate --scenario e`: what ran passed, so exit 0; the criteria of the scenarios that did
    not run are ⚪ not run (never ❌), in the report and in validate's own last line."""
    result = validate(tmp_path, "--scenarios-dir", str(playbook(tmp_path / "scenarios")), "--scenario", "e")
    assert result.returncode == 0, result.stdout[-2000:]
    report = (tmp_path / "report.md").read_text()
    assert (
        "❌" not in report
        and report.count("⚪ not run") == 4
        and "| E 连续失败告警 — failure-streak alerts | passed |" in report
    )
    assert result.stdout.rstrip().splitlines()[-1] == (
        "acceptance: 1/5 criteria met; not run: 七大场景全部通过, 指标无红色告警, 通知链路稳定，降级策略正确, "
        "Replay 审计完整 — report: report.md"
    )


def test_a_red_row_names_the_broken_capability_before_the_assertion(tmp_path: Path) -> None:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "test_scenario_e.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.scenario_e\n"
        "def test_unblock_resets_the_streak_so_one_more_failure_does_not_block_again():\n"
        "    alerts = ['## 命令连续失败 · weather/bot'] * 2\n"
        "    assert len(alerts) == 1, f'a second alert after the unblock: {alerts}'\n"
    )
    result = validate(tmp_path, "--scenarios-dir", str(folder), "--scenario", "e")
    assert result.returncode != 0
    row = next(line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| E "))
    phrase, assertion = "E: 命令连续失败 sent twice for one streak", "AssertionError: a second alert after the unblock"
    assert phrase in row and assertion in row and row.index(phrase) < row.index(assertion)
    assert f"[scenario E] FAILED  {phrase} — `test_unblock_resets_the_streak_so" in result.stdout  # the console too


def test_an_unknown_scenario_letter_exits_2(tmp_path: Path) -> None:
    result = validate(tmp_path, "--scenario", "z")
    assert result.returncode == 2 and "unknown scenario 'z'" in result.stderr


def args(**given: object) -> argparse.Namespace:
    defaults: dict[str, object] = dict(
        scenarios_dir=None, markexpr=None, scenario=[], workers=None, live=False, report=None, allure=None, soak=None
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


def test_validate_always_names_its_report_so_the_ini_of_the_test_command_cannot_move_it(tmp_path: Path) -> None:
    argv = pytest_argv(args())
    assert argv[argv.index("--tmuxagent-report") + 1] == str(
        Path.cwd() / "reports" / "orchestrator_real_world_test_report.md"
    )
    assert "--tmuxagent-soak" not in argv
    soak = pytest_argv(args(soak="10m"))
    assert soak[soak.index("--tmuxagent-soak") + 1] == "10m"


def test_soak_without_a_value_means_ten_minutes_and_a_bad_duration_exits_2(tmp_path: Path) -> None:
    from orchestrator.cli.main import build_parser

    parsed = build_parser().parse_args(["validate", "--soak"])
    assert parsed.soak == "10m"
    result = validate(tmp_path, "--soak", "ten minutes")
    assert result.returncode == 2 and "bad duration" in result.stderr


def test_a_twenty_second_soak_exports_csv_and_png_linked_from_its_report(tmp_path: Path) -> None:
    """The playbook's 四.2 export, shortened: a real Prometheus, a mixed workload, range queries
    as CSV and one PNG beside the report. Skips (one line) without Debian's `prometheus`."""
    import shutil

    import pytest

    if shutil.which("prometheus") is None:
        pytest.skip("missing tool: prometheus — install the Debian package `prometheus`")
    report = tmp_path / "soak" / "report.md"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tmuxagent",
            "--pyargs",
            "tmuxagent_scenarios",
            "-k",
            "soak",
            "-p",
            "no:cacheprovider",
            "-q",
            "--tmuxagent-soak",
            "20s",
            "--tmuxagent-report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    text = report.read_text()
    folder = report.parent / "report_files" / "soak"
    for name in (
        "success_rate",
        "failure_rate",
        "queue_depth",
        "feedback_latency",
        "stalls",
        "notifications",
        "session_states",
    ):
        assert f"](report_files/soak/{name}.csv)" in text
        assert (folder / f"{name}.csv").read_text().startswith("time_s,series,value,unit,expr")
    assert "![soak: 20 s of Prometheus range queries](report_files/soak/soak.png)" in text
    assert (folder / "soak.png").stat().st_size > 10_000
    assert "A 20 s mixed soak sent" in text
