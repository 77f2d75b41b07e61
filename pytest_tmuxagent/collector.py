"""Collects test reports on the controller and writes the real-world report at the end."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from . import options
from .agents import PROVIDERS
from .evidence import EvidenceItem, evidence_from_properties
from .registry import Scenario, scenarios
from .report import (
    Criterion,
    ScenarioSummary,
    TestRecord,
    agents_cell,
    criteria,
    json_path,
    render,
    render_json,
    summarize,
    write_report,
)

DEFAULT_REPORT = options.DEFAULT_REPORT


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
        if self.progress and report.when == "teardown" and record.scenarios:
            tag = ",".join(s.upper() for s in record.scenarios)
            self.config.get_terminal_writer().line(
                f"[scenario {tag}] {record.outcome:<7} {record.name} ({record.duration:.1f}s)"
                + (f" — {record.reason}" if record.outcome == "failed" else "")
            )

    def _say_live_plans(self, nodeid: str, new: list[EvidenceItem]) -> None:
        """Live mode: print what a scenario will send where, as soon as its setup (or a send) is reported."""
        for item in new:
            if item.kind == "note" and item.title == "live plan":
                self.config.get_terminal_writer().line(f"[live] {nodeid}: {item.text}")

    def summaries(self) -> dict[str, ScenarioSummary]:
        return summarize([r for r in self.records.values() if r.scenarios], self.registry())

    def failures(self) -> int:
        return sum(r.outcome == "failed" for r in self.records.values())

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
        return criteria(summaries, failures, extra)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not any(r.scenarios for r in self.records.values()):
            return
        self._registry = None  # conftests collected late may have added scenarios: ask again
        summaries, failures = self.summaries(), self.failures()
        rows = self.criteria(summaries, failures)
        workers = getattr(self.config.option, "numprocesses", None) or 0
        text = render(
            summaries,
            rows,
            live=options.live(self.config),
            workers=int(workers) if str(workers).isdigit() else 0,
            started=self.started,
        )
        self.written = write_report(self.report_path(), text)
        write_report(
            json_path(self.written),
            render_json(summaries, rows, live=options.live(self.config), failures=failures),
        )
        unmet = [c.text for c in rows if not c.met]
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
        terminalreporter.line(f"report: {self.report_path()} (and {json_path(self.report_path()).name})")
