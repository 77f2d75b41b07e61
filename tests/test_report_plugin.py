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


SUBSET_ROWS = {
    "七大场景全部通过 — all seven scenarios pass": "⚪ not run",
    "指标无红色告警 — no alert firing on a healthy run": "⚪ not run",
    "通知链路稳定，降级策略正确 — notification chain stable, degradation correct": "⚪ not run",
    "Replay 审计完整 — audit replay complete": "⚪ not run",
    "全量 pytest 0 失败 — pytest 0 failures": "✅ met",
}


def criteria_rows(report: str) -> dict[str, str]:
    table = report.split("## Acceptance criteria (验收标准)", 1)[1].split("\n## ", 1)[0]
    cells = [line.strip("| ").split(" | ") for line in table.splitlines() if line.startswith("| ") and " — " in line]
    return {c[0]: c[1] for c in cells}


def test_a_gated_subset_run_says_not_run_for_what_it_did_not_run_and_passes(pytester: pytest.Pytester) -> None:
    """`validate --scenario e` in small: what ran passed, so nothing is ❌ and the gate passes;
    the criteria whose scenarios did not run say ⚪ not run — not ❌, not "not decided"."""
    scenario_file(pytester)
    result = pytester.runpytest_subprocess("--tmuxagent-report", "report.md", "-m", "scenario_e", "--tmuxagent-gate")
    assert result.ret == 0, result.stdout.str()
    report = read_report(pytester)
    assert criteria_rows(report) == SUBSET_ROWS
    assert "❌" not in report and "not decided" not in report
    verdict = report.split("\n\n")[1]
    assert verdict.startswith("**Verdict: PARTIAL.** 1/5 acceptance criteria met, 4 not run")
    assert "Not run (scenarios A, B, C, D, F, G were not part of this run)" in verdict
    assert "Everything that ran passed." in verdict
    assert scenario_row(report, "A").endswith(
        "| not run | 0 | 0.0 s | shell – not run · claude – not run · codex – not run | Not part of this run (deselected). |"
    )
    result.stdout.fnmatch_lines(
        ["acceptance: 1/5 criteria met; not run: 七大场景全部通过, 指标无红色告警, *, Replay 审计完整 — report: *"]
    )
    data = json.loads((pytester.path / "report.json").read_text())
    assert data["verdict"] == "partial"
    assert [(c["met"], c["standing"]) for c in data["criteria"]] == [(None, "not run")] * 4 + [(True, "met")]


def test_a_red_subset_run_fails_the_gate_on_what_ran_and_still_says_not_run_for_the_rest(
    pytester: pytest.Pytester,
) -> None:
    scenario_file(pytester, fail="e")
    result = pytester.runpytest_subprocess("--tmuxagent-report", "report.md", "-m", "scenario_e", "--tmuxagent-gate")
    assert result.ret == 1
    rows = criteria_rows(read_report(pytester))
    assert rows["通知链路稳定，降级策略正确 — notification chain stable, degradation correct"] == "❌ not met"
    assert rows["全量 pytest 0 失败 — pytest 0 failures"] == "❌ not met"
    assert rows["七大场景全部通过 — all seven scenarios pass"] == "❌ not met"  # E failed: the seven cannot all pass
    assert rows["Replay 审计完整 — audit replay complete"] == "⚪ not run"
    result.stdout.fnmatch_lines(
        ["acceptance: 0/5 criteria met; not met: *; not run: 指标无红色告警, Replay 审计完整 — *"]
    )


# a red row names the broken capability in the playbook's words ----------------------------------

RED = """
import pytest


class FakeWeCom:
    def __init__(self, messages):
        self._messages = messages

    def messages(self):
        return list(self._messages)

    def wait_for_messages(self, n, timeout=10):
        assert len(self._messages) >= n, f"{len(self._messages)} WeCom message(s), waited for {n}"
        return self.messages()


@pytest.mark.scenario_b
def test_stalled_command_is_healed_alerted_and_cooled_down():
    stall_count = 2
    assert stall_count == 2
    wecom_mock = FakeWeCom([])
    [alert] = wecom_mock.wait_for_messages(1, timeout=10)


@pytest.mark.scenario_e
@pytest.mark.parametrize("threshold", [3])
def test_failure_streak_alerts_once_blocks_and_resumes(threshold):
    wecom_mock = FakeWeCom(["## 命令连续失败 · weather/bot", "## 命令连续失败 · weather/bot"])
    assert len(wecom_mock.messages()) == 1  # one alert per streak, not one per failure


@pytest.mark.scenario_g
@pytest.mark.capability("还原变量后通知恢复正常: the kept alerts reach WeCom")
def test_a_project_check_named_by_its_marker():
    assert 1 + 1 == 3, "induced"


@pytest.mark.scenario_f
def test_replay_verifies_the_audit_log_of_a_mixed_run():
    from replay_helpers import replay_verified

    summary = replay_verified(["line 3: not JSON"])


@pytest.mark.scenario_c
def test_a_step_by_step_test(tmuxagent_evidence):
    tmuxagent_evidence.if_fails("blocker set but metadata.next_actions not written")
    tmuxagent_evidence.if_fails("next_actions written but 下一步建议 not delivered")
    assert [] == ["下一步建议"]
"""


def scenario_row(report: str, letter: str) -> str:
    return next(line for line in report.splitlines() if line.startswith(f"| {letter} "))


def test_a_red_row_says_which_capability_failed_before_the_assertion(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_red=RED)
    # a helper beside the test: its failing line is the test's own too
    pytester.makepyfile(replay_helpers="def replay_verified(problems):\n    assert problems == []\n    return {}\n")
    # under xdist: the failing statement is recorded on the worker and rides to the controller
    result = pytester.runpytest_subprocess("--tmuxagent-report", "report.md", "--tmuxagent-gate", "-n", "2")
    assert result.ret == 1
    result.assert_outcomes(failed=5)
    report = read_report(pytester)
    row_b = scenario_row(report, "B")
    said = "B: stall detected but 命令卡顿 not delivered — `test_stalled_command_is_healed_alerted_and_cooled_down` failed: "
    assert said + "AssertionError: 0 WeCom message(s), waited for 1" in row_b
    row_e = scenario_row(report, "E")
    assert (
        "E: 命令连续失败 sent twice for one streak — `test_failure_streak_alerts_once_blocks_and_resumes[3]` failed:"
        in row_e
    )
    assert row_e.index("sent twice") < row_e.index("assert 2 == 1")
    row_g = scenario_row(report, "G")
    assert (
        "G: 还原变量后通知恢复正常: the kept alerts reach WeCom — broken — `test_a_project_check_named_by_its_marker`"
        in row_g
    )
    assert "| F: replay 复盘 differs from the DB — `test_replay_verifies_the_audit_log_of_a_mixed_run` failed:" in (
        scenario_row(report, "F")
    )
    row_c = scenario_row(report, "C")  # the last if_fails before the failure
    assert "C: next_actions written but 下一步建议 not delivered — `test_a_step_by_step_test` failed:" in row_c
    verdict = report.split("\n\n")[1]
    assert "What failed: B: stall detected but 命令卡顿 not delivered (`test_stalled_command_is_healed" in verdict
    section = report.split('<a id="scenario-b"></a>', 1)[1]
    assert "**failed** in" in section and "B: stall detected but 命令卡顿 not delivered — AssertionError" in section
    assert "if fails" not in report and "failing statement" not in report  # said in the rows, not as evidence
    data = json.loads((pytester.path / "report.json").read_text())
    assert data["scenarios"]["b"]["broke"] == ["B: stall detected but 命令卡顿 not delivered"]
    assert data["scenarios"]["e"]["broke"] == ["E: 命令连续失败 sent twice for one streak"]
    broke = {t["nodeid"].split("::")[-1]: t.get("broke") for t in data["tests"]}
    assert (
        broke["test_stalled_command_is_healed_alerted_and_cooled_down"]
        == "B: stall detected but 命令卡顿 not delivered"
    )
    assert [c["standing"] for c in data["criteria"]] == ["not met"] * 5  # F's replay test failed: Replay too


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


# the agents column: which kinds of session each scenario was proven on -------------------------

AGENT_CASES = """
import pytest


@pytest.fixture
def not_today():
    pytest.skip("skipped before any agent was asked for")


@pytest.mark.scenario_b
def test_b_on_a_shell(agent_pane):
    pass


@pytest.mark.scenario_b
@pytest.mark.parametrize("provider", ["claude", "codex"])
def test_b_on_an_agent(provider, tmuxagent_agent_home, model_server, tmp_path):
    tmuxagent_agent_home(provider, tmp_path, model_server)
    assert provider != "codex", "induced failure on codex"


@pytest.mark.scenario_c
def test_c_on_claude(agent_session, model_server, tmp_path):
    agent_session("claude", tmp_path, model_server)


@pytest.mark.scenario_d
def test_d_on_claude_skips(tmuxagent_agent_home, model_server, tmp_path):
    tmuxagent_agent_home("claude", tmp_path, model_server)
    pytest.skip("the test chose to skip")


@pytest.mark.scenario_e
@pytest.mark.parametrize("provider", ["codex"])
def test_e_skips_at_setup(provider, not_today, tmuxagent_agent_home):
    pass
"""


def fake_agent(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho '9.9.9 (fake {name})'\n")
    path.chmod(0o755)
    return path


def test_the_agents_column_says_per_kind_passed_failed_skipped_or_not_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for provider in ("claude", "codex"):
        monkeypatch.setenv(f"TMUXAGENT_{provider.upper()}_BIN", str(fake_agent(pytester.path / "bin", provider)))
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(test_agent_cases=AGENT_CASES)
    # under xdist: the provider property is set on the worker and rides to the controller
    result = pytester.runpytest_subprocess("--tmuxagent-report", "report.md", "-n", "2")
    result.assert_outcomes(passed=3, failed=1, skipped=2)
    report = read_report(pytester)
    rows = {
        line.split(" | ")[0].lstrip("| ")[0]: line
        for line in report.splitlines()
        if line.startswith("| ") and " — " in line
    }
    assert "| shell ✓ · claude ✓ · codex ✗ (1 failed) |" in rows["B"]
    assert "| shell – not run · claude ✓ · codex – not run |" in rows["C"]
    assert "| shell – not run · claude – skipped (1) · codex – not run |" in rows["D"]
    assert "| shell – not run · claude – not run · codex – skipped (1) |" in rows["E"]  # from its id
    assert "| shell – not run · claude – not run · codex – not run |" in rows["A"]
    assert "- `test_b_on_an_agent[codex]` on codex — **failed**" in report
    result.stdout.fnmatch_lines(["scenario B: FAILED *", "            agents: shell ✓ · claude ✓ · codex ✗ (1 failed)"])

    data = json.loads((pytester.path / "report.json").read_text())
    agents = {letter: s["agents"] for letter, s in data["scenarios"].items()}
    assert agents["b"] == {"shell": "passed", "claude": "passed", "codex": "failed"}
    assert agents["c"] == {"shell": "not run", "claude": "passed", "codex": "not run"}
    assert agents["d"] == {"shell": "not run", "claude": "skipped", "codex": "not run"}
    assert agents["e"] == {"shell": "not run", "claude": "not run", "codex": "skipped"}
    assert agents["a"] == {"shell": "not run", "claude": "not run", "codex": "not run"}
    assert data["scenarios"]["b"]["agent_tests"]["codex"] == {"passed": 0, "failed": 1, "skipped": 0}
    assert data["scenarios"]["b"]["result"] == "failed" and data["failures"] == 1
    kinds = {t["nodeid"].split("::")[-1]: t["kinds"] for t in data["tests"]}
    assert kinds["test_b_on_a_shell"] == ["shell"] and kinds["test_b_on_an_agent[claude]"] == ["claude"]


def test_shell_only_scenarios_say_so_and_the_json_twin_is_written(pytester: pytest.Pytester) -> None:
    scenario_file(pytester)
    assert pytester.runpytest_subprocess("--tmuxagent-report", "report.md").ret == 0
    assert read_report(pytester).count("| shell ✓ · claude – not run · codex – not run |") == 7
    data = json.loads((pytester.path / "report.json").read_text())
    assert data["mode"] == "embedded" and data["kinds"] == ["shell", "claude", "codex"]
    assert all(s["agents"]["shell"] == "passed" for s in data["scenarios"].values())
    assert [c["met"] for c in data["criteria"]] == [True] * 5
    assert "SUPERSECRET" not in (pytester.path / "report.json").read_text()


# verdict, evidence sentences, figures, warnings, not decided -------------------------------------

DECIDING = """
import pytest

@pytest.mark.scenario_a
@pytest.mark.parametrize("ms", [10, 20, 30])
def test_a(ms, tmuxagent_evidence):
    tmuxagent_evidence.figure("feedback_latency", ms / 1000)
    tmuxagent_evidence.decide(f"`(exit 7)` gave exit_code 7 in {ms} ms", headline=ms == 20)
    tmuxagent_evidence.add("log", "orchestrator warnings", "2026-01-01 00:00:00,000 WARNING x: no WeCom channel")
    tmuxagent_evidence.add("pane", "screen tail", "$ . /tmp/x/run/cmd-12.sh\\n(exit 7)\\n$   \\n\\n")

@pytest.mark.scenario_f
def test_f_prometheus_alerts():
    pytest.skip("missing tool: prometheus — install the Debian package `prometheus`")

@pytest.mark.scenario_f
def test_f_replay(tmuxagent_evidence):
    tmuxagent_evidence.decide("replay matched the DB")
"""


def test_verdict_first_evidence_sentences_figures_and_not_decided(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_deciding=DECIDING)
    result = pytester.runpytest_subprocess("--tmuxagent-report", "report.md", "--tmuxagent-gate")
    assert result.ret == 0, result.stdout.str()  # not decided is not a failure
    report = read_report(pytester)
    first = report.split("\n\n")[1]
    assert first.startswith("**Verdict: NOT DECIDED.**") and "commit `" in first and "embedded mode" in first
    assert "prometheus not installed" in first
    row_a = next(line for line in report.splitlines() if line.startswith("| A "))
    assert "`(exit 7)` gave exit_code 7 in 20 ms. [→](#scenario-a)" in row_a  # the headline, whole
    row_f = next(line for line in report.splitlines() if line.startswith("| F "))
    assert "| skipped |" in row_f and "prometheus not installed" in row_f
    assert "| A | feedback latency (command exit → result recorded) | 3 | 20 ms | 29 ms | 30 ms |" in report
    assert "| 指标无红色告警 — no alert firing on a healthy run | ⚪ not decided |" in report
    # F ran but its Prometheus test skipped: not decided; B, E and G never ran: not run
    assert "| 通知链路稳定，降级策略正确 — notification chain stable, degradation correct | ⚪ not run |" in report
    assert "| Replay 审计完整 — audit replay complete | ✅ met |" in report
    assert "❌" not in report
    assert "| 3× | WARNING x: no WeCom channel |" in report and report.count("no WeCom channel") == 1
    assert "cmd-12.sh" not in report
    assert "## What this run did not prove" in report and "skipped ×1: missing tool: prometheus" in report
    assert "the unit and integration suite (`tests/`) was not part of this run" in report
    result.stdout.fnmatch_lines(
        [
            "acceptance: 2/5 criteria met; not decided: 七大场景全部通过, 指标无红色告警; not run: 通知链路稳定* — report: *"
        ]
    )
    data = json.loads((pytester.path / "report.json").read_text())
    assert data["verdict"] == "not decided" and data["criteria"][1]["met"] is None
    assert data["scenarios"]["a"]["figures"]["feedback_latency"]["n"] == 3


def test_progress_mode_prints_one_clean_line_per_scenario(pytester: pytest.Pytester) -> None:
    scenario_file(pytester, fail="c")
    result = pytester.runpytest_subprocess("--tmuxagent-report", "report.md", "--tmuxagent-progress", "-n", "2")
    out = result.stdout.str()
    for letter in "ABDEFG":
        assert out.count(f"[scenario {letter}] passed  1 passed in") == 1, out
    said = "[scenario C] FAILED  C: 决策辅助 — decision assist — broken — `test_c`: AssertionError: induced failure in scenario c"
    assert said in out
    assert ".[scenario" not in out and "F[scenario" not in out


def test_the_verdict_names_the_failed_tests_outside_the_scenarios(pytester: pytest.Pytester) -> None:
    scenario_file(pytester)
    pytester.makepyfile(
        test_units="""
        import pytest

        @pytest.mark.parametrize("n", [1, 2, 3, 4])
        def test_unit(n):
            assert n < 0
        """
    )
    pytester.runpytest_subprocess("--tmuxagent-report", "report.md")
    verdict = read_report(pytester).splitlines()[2]
    assert verdict.startswith("**Verdict: FAILED.**")
    assert "Outside the scenarios, 4 test(s) failed:" in verdict and "(and 1 more)" in verdict
    assert "test_unit[1]" in verdict and "test_unit[3]" in verdict
