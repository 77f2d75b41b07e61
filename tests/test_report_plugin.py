"""The plugin's real-world report, acceptance gate and Allure labels, on nested
pytest runs (pytester subprocesses load the plugin through its entry point)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def scenario_file(pytester: pytest.Pytester, fail: str = "") -> None:
    # markers must exist at collection time for -m and report keywords: add them statically
    body = "\n".join(
        [
            "import pytest",
            *[
                f"@pytest.mark.scenario_{x}\ndef test_{x}(tmuxagent_evidence):\n"
                f"    tmuxagent_evidence.add('note', 'evidence {x}', 'value {x} key=SUPERSECRET')\n"
                f"    assert '{x}' != '{fail}', 'induced failure in scenario {x}'\n"
                for x in "abcdefg"
            ],
        ]
    )
    pytester.makepyfile(test_playbook=body)


def read_report(pytester: pytest.Pytester) -> str:
    return (pytester.path / "report.md").read_text()


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["no-xdist", "xdist"])
def test_all_seven_pass_meets_every_criterion(pytester: pytest.Pytester, workers: list[str]) -> None:
    scenario_file(pytester)
    result = pytester.runpytest_subprocess("--tmuxagent-report", "report.md", "--tmuxagent-gate", *workers)
    assert result.ret == 0, result.stdout.str()
    report = read_report(pytester)
    for letter in "ABCDEFG":
        assert f"| {letter} " in report
    assert report.count("| passed | 1 |") == 7
    assert "❌" not in report and report.count("✅ met") == 5
    assert "evidence g" in report and "value g" in report  # shipped from the worker under xdist
    assert "SUPERSECRET" not in report and "key=***" in report


def test_an_induced_failure_shows_why_and_fails_the_gate(pytester: pytest.Pytester) -> None:
    scenario_file(pytester, fail="c")
    result = pytester.runpytest_subprocess("--tmuxagent-report", "report.md", "--tmuxagent-gate", "-n", "2")
    assert result.ret == 1
    report = read_report(pytester)
    assert "| C 决策辅助 — decision assist | FAILED |" in report
    assert "induced failure in scenario c" in report
    assert "| 全量 pytest 0 失败 — pytest 0 failures | ❌ not met |" in report


def test_a_subset_run_without_gate_passes_and_says_not_run(pytester: pytest.Pytester) -> None:
    scenario_file(pytester)
    result = pytester.runpytest_subprocess("--tmuxagent-report", "report.md", "-m", "scenario_b")
    assert result.ret == 0
    report = read_report(pytester)
    assert "| B 卡顿检测与自愈 — stall detection and self-healing | passed |" in report
    assert "| A 命令执行反馈 — command execution feedback | not run |" in report


def test_allure_results_carry_epic_feature_and_story(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_allure_labels="""
import pytest

@pytest.mark.scenario_a
@pytest.mark.parametrize("case", ["success", "plain-failure"])
def test_feedback(case, tmuxagent_evidence):
    tmuxagent_evidence.add("pane", "screen", "$ true")
"""
    )
    result = pytester.runpytest_subprocess("--alluredir", "allure-results", "--tmuxagent-report", "report.md")
    assert result.ret == 0, result.stdout.str()
    results = [json.loads(p.read_text()) for p in Path(pytester.path, "allure-results").glob("*-result.json")]
    assert len(results) == 2
    for item in results:
        labels = {(label["name"], label["value"]) for label in item["labels"]}
        assert ("epic", "Orchestrator real-world validation playbook") in labels
        assert ("feature", "Scenario A — command execution feedback (命令执行反馈)") in labels
        assert any(name == "story" and value in ("success", "plain-failure") for name, value in labels)
        assert any(a["name"] == "pane: screen" for a in item.get("attachments", []))
