"""Collects test reports on the controller and writes the real-world report at the end."""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from . import options
from .agents import PROVIDERS
from .evidence import EvidenceItem, evidence_from_properties
from .registry import Scenario, scenarios
from .report import (
    Criterion,
    RunInfo,
    ScenarioSummary,
    TestRecord,
    acceptance_line,
    agents_cell,
    commit_under_test,
    criteria,
    json_path,
    render,
    render_json,
    stores_cell,
    summarize,
    write_report,
)
from .summaries import STORE_PROPERTY

DEFAULT_REPORT = options.DEFAULT_REPORT
TOTALS_PROPERTY = "tmuxagent_scenario_totals"  # per scenario letter: how many of its tests were collected


def _reason(report: pytest.TestReport) -> str:
    if report.failed:
        text = report.longreprtext.strip().splitlines()
        errors = [line for line in text if line.startswith("E ")]
        return (errors[0][2:].strip() if errors else (text[-1] if text else "failed"))[:300]
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return ""


def kinds_of(nodeid: str, properties: Sequence[tuple[str, Any]]) -> list[str]:
    """The kinds of session a test ran on: the providers its agent fixtures were asked for (user
    property `tmuxagent_agent`, set on the worker, so it rides over xdist); for an agent test that
    skipped before asking, the providers in its parametrize id (`test_x[claude]`), else `agent`;
    `shell` for a test without an agent fixture. Properties accumulate on the item, so each
    phase's report knows at least what the one before it did; the teardown's has them all."""
    # imported here: agents_plugin is a pytest plugin module (plugin.py's `pytest_plugins`), and
    # importing it before pytest does would cost it assertion rewriting (PytestAssertRewriteWarning)
    from .agents_plugin import AGENT_PROVIDER_PROPERTY, AGENT_TEST_PROPERTY

    providers = [str(value) for name, value in properties if name == AGENT_PROVIDER_PROPERTY]
    if providers:
        return list(dict.fromkeys(providers))
    if any(name == AGENT_TEST_PROPERTY for name, _ in properties):
        words = nodeid.rpartition("[")[2].rstrip("]").replace("-", " ").split() if nodeid.endswith("]") else []
        return [p for p in PROVIDERS if p in words] or ["agent"]
    return ["shell"]


class ReportCollector:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: dict[str, TestRecord] = {}
        self.started = time.time()
        self.progress = options.progress(config)
        self.written: Path | None = None
        self.rows: list[Criterion] = []
        self.totals: dict[str, int] = {}
        self.announced: set[str] = set()
        self._registry: dict[str, Scenario] | None = None

    def registry(self) -> dict[str, Scenario]:
        """This run's scenarios (built-in and the hook's), read once the first report arrives."""
        if self._registry is None:
            self._registry = scenarios(self.config)
        return self._registry

    def report_path(self) -> Path:
        return options.report_path(self.config)

    def _letters(self, keywords: Iterable[str]) -> list[str]:
        by_marker = {s.marker: s.letter for s in self.registry().values()}
        return sorted({by_marker[k] for k in keywords if k in by_marker})

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = self.records.setdefault(report.nodeid, TestRecord(report.nodeid, self._letters(report.keywords)))
        record.kinds = kinds_of(report.nodeid, report.user_properties)
        record.store = next((str(v) for k, v in report.user_properties if k == STORE_PROPERTY), record.store)
        record.duration += report.duration
        if report.failed:
            record.outcome = "failed"
            record.reason = record.reason or _reason(report)
        elif report.skipped and record.outcome != "failed":
            record.outcome = "skipped"
            record.reason = _reason(report)
        evidence = evidence_from_properties(report.user_properties)
        if evidence:
            self._say_live_plans(report.nodeid, evidence[len(record.evidence) :])
            record.evidence = evidence
        for name, value in report.user_properties:
            if name == TOTALS_PROPERTY and not self.totals:
                self.totals = {str(k): int(v) for k, v in json.loads(str(value)).items()}
        if self.progress and report.when == "teardown" and record.scenarios:
            self._progress(record)

    def _progress(self, record: TestRecord) -> None:
        """Validate's console: a line per failed test as it fails, and one line per scenario
        once all its collected tests have finished."""
        writer = self.config.get_terminal_writer()
        if record.outcome == "failed":
            tag = ",".join(s.upper() for s in record.scenarios)
            broke = self.summaries()[record.scenarios[0]].what_broke(record)  # what broke, then the assertion
            writer.line(f"[scenario {tag}] FAILED  {broke} — `{record.name}`: {record.reason}", red=True)
        for letter in record.scenarios:
            done = [r for r in self.records.values() if letter in r.scenarios]
            if letter not in self.announced and self.totals.get(letter) and len(done) >= self.totals[letter]:
                self._announce(letter)

    def _announce(self, letter: str) -> None:
        self.announced.add(letter)
        summary = self.summaries()[letter]
        counts = {o: sum(t.outcome == o for t in summary.tests) for o in ("passed", "failed", "skipped")}
        said = ", ".join(f"{n} {o}" for o, n in counts.items() if n)
        line = f"[scenario {letter.upper()}] {summary.result:<7} {said} in {summary.duration:.1f}s — {summary.title}"
        self.config.get_terminal_writer().line(line, red=summary.result == "FAILED", green=summary.result == "passed")

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(
        self, report: pytest.TestReport, config: pytest.Config
    ) -> Generator[None, tuple[str, str, str], tuple[str, str, str]]:
        """With `--tmuxagent-progress`, no pytest progress dots: the scenario lines say it."""
        result = yield
        if self.progress and isinstance(result, tuple) and len(result) == 3:
            category, _letter, word = result
            return category, "", word
        return result

    def _say_live_plans(self, nodeid: str, new: list[EvidenceItem]) -> None:
        """Live mode: print what a scenario will send where, as soon as its setup (or a send) is reported."""
        for item in new:
            if item.kind == "note" and item.title == "live plan":
                self.config.get_terminal_writer().line(f"[live] {nodeid}: {item.text}")

    def summaries(self) -> dict[str, ScenarioSummary]:
        return summarize([r for r in self.records.values() if r.scenarios], self.registry())

    def failures(self) -> int:
        return sum(r.outcome == "failed" for r in self.records.values())

    def run_info(self, failures: int) -> RunInfo:
        workers = getattr(self.config.option, "numprocesses", None) or 0
        scenario_tests = sum(bool(r.scenarios) for r in self.records.values())
        return RunInfo(
            live=options.live(self.config),
            workers=int(workers) if str(workers).isdigit() else 0,
            started=self.started,
            report=self.report_path(),
            commit=commit_under_test(Path(self.config.rootpath)),
            tests_run=len(self.records),
            scenario_tests_run=scenario_tests,
            failures=failures,
            other_failures=[r.nodeid for r in self.records.values() if not r.scenarios and r.outcome == "failed"],
        )

    def criteria(self, summaries: dict[str, ScenarioSummary], failures: int) -> list[Criterion]:
        """The built-in five, then each `pytest_tmuxagent_acceptance_criteria` implementation's rows."""
        extra: list[Criterion] = []
        for rows in self.config.hook.pytest_tmuxagent_acceptance_criteria(
            config=self.config, summaries=summaries, failures=failures
        ):
            for row in rows:
                if not isinstance(row, Criterion):
                    raise TypeError(f"pytest_tmuxagent_acceptance_criteria must return Criterion objects, got {row!r}")
                extra.append(row)
        return criteria(
            summaries,
            failures,
            extra,
            tests_run=len(self.records),
            scenario_tests_run=sum(bool(r.scenarios) for r in self.records.values()),
        )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not any(r.scenarios for r in self.records.values()):
            return
        self._registry = None  # conftests collected late may have added scenarios: ask again
        summaries, failures = self.summaries(), self.failures()
        for letter, summary in summaries.items():  # scenarios whose last line was not printed yet
            if self.progress and summary.tests and letter not in self.announced:
                self._announce(letter)
        rows = self.rows = self.criteria(summaries, failures)
        run = self.run_info(failures)
        self.written = write_report(self.report_path(), render(summaries, rows, run=run))
        write_report(
            json_path(self.written),
            render_json(summaries, rows, live=run.live, failures=failures, run=run),
        )
        allure_dir = getattr(self.config.option, "allure_report_dir", None)
        if allure_dir:
            write_allure_extras(Path(allure_dir), run)
        unmet = [c.text for c in rows if c.met is False]
        if options.gate(self.config) and unmet and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            self.config.get_terminal_writer().line("acceptance criteria not met: " + "; ".join(unmet), red=True)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not any(r.scenarios for r in self.records.values()):
            return
        terminalreporter.section("tmuxagent playbook")
        for letter, summary in self.summaries().items():
            terminalreporter.line(
                f"scenario {letter.upper()}: {summary.result:<8} {len(summary.tests):>3} test(s) "
                f"{summary.duration:6.1f}s  {summary.title}"
            )
            terminalreporter.line(f"            agents: {agents_cell(summary)}")
            if summary.store_counts("postgresql") != {"passed": 0, "failed": 0, "skipped": 0}:
                terminalreporter.line(f"            stores: {stores_cell(summary)}")
        terminalreporter.line(f"report: {self.report_path()} (and {json_path(self.report_path()).name})")
        if self.rows and not self.progress:  # `tmux-agent validate` prints it as its own last line
            terminalreporter.line(acceptance_line(self.rows, self.report_path()))


# Allure's categories: product failures (an assertion or a wait that timed out), harness errors
# (a fixture or the plugin broke), tests skipped for a missing optional tool, other skips.
ALLURE_CATEGORIES = [
    {"name": "Product failures", "matchedStatuses": ["failed"]},
    {"name": "Harness errors (setup, teardown, plugin)", "matchedStatuses": ["broken"]},
    {"name": "Skipped: optional tool missing", "matchedStatuses": ["skipped"], "messageRegex": ".*missing tool: .*"},
    {"name": "Skipped", "matchedStatuses": ["skipped"]},
]


def write_allure_extras(folder: Path, run: RunInfo) -> None:
    """`environment.properties` (mode, commit, tool versions) and `categories.json` in the results."""
    from .report import PACKAGES, _version, tmux_version

    folder.mkdir(parents=True, exist_ok=True)
    values = {
        "mode": "live" if run.live else "embedded",
        "commit": run.commit or "unknown",
        "tmux": tmux_version(),
        **{name: _version(name) for name in PACKAGES},
    }
    (folder / "environment.properties").write_text(
        "".join(f"{k}={v.replace(chr(10), ' ')}\n" for k, v in values.items()), encoding="utf-8"
    )
    (folder / "categories.json").write_text(json.dumps(ALLURE_CATEGORIES, indent=2), encoding="utf-8")
