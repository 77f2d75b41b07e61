"""Collects test reports on the controller and writes the real-world report at the end."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .evidence import evidence_from_properties
from .report import SCENARIO_TITLES, TestRecord, criteria, render, summarize, write_report

DEFAULT_REPORT = Path("reports") / "orchestrator_real_world_test_report.md"


def _reason(report: pytest.TestReport) -> str:
    if report.failed:
        text = report.longreprtext.strip().splitlines()
        errors = [line for line in text if line.startswith("E ")]
        return (errors[0][2:].strip() if errors else (text[-1] if text else "failed"))[:300]
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return ""


class ReportCollector:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: dict[str, TestRecord] = {}
        self.started = time.time()
        self.progress = bool(config.getoption("--tmuxagent-progress"))

    def report_path(self) -> Path:
        given = self.config.getoption("--tmuxagent-report") or self.config.getini("tmuxagent_report")
        path = Path(given) if given else DEFAULT_REPORT
        return path if path.is_absolute() else Path(self.config.rootpath) / path

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        letters = [
            k.removeprefix("scenario_")
            for k in report.keywords
            if k.startswith("scenario_") and k.removeprefix("scenario_") in SCENARIO_TITLES
        ]
        record = self.records.setdefault(report.nodeid, TestRecord(report.nodeid, sorted(letters)))
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

    def _say_live_plans(self, nodeid: str, new: list) -> None:
        """Live mode: print what a scenario will send where, as soon as its setup (or a send) is reported."""
        for item in new:
            if item.kind == "note" and item.title == "live plan":
                self.config.get_terminal_writer().line(f"[live] {nodeid}: {item.text}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        records = list(self.records.values())
        if not any(r.scenarios for r in records):
            return
        failures = sum(r.outcome == "failed" for r in records)
        workers = getattr(self.config.option, "numprocesses", None) or 0
        scenario_records = [r for r in records if r.scenarios]
        text = render(
            scenario_records,
            live=bool(self.config.getoption("--tmuxagent-live")),
            workers=int(workers) if str(workers).isdigit() else 0,
            failures=failures,
            started=self.started,
        )
        self.written = write_report(self.report_path(), text)
        unmet = [c.text for c in criteria(summarize(scenario_records), failures) if not c.met]
        if self.config.getoption("--tmuxagent-gate") and unmet and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            self.config.get_terminal_writer().line("acceptance criteria not met: " + "; ".join(unmet), red=True)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        records = list(self.records.values())
        if not any(r.scenarios for r in records):
            return
        terminalreporter.section("tmuxagent playbook")
        for letter, summary in summarize([r for r in records if r.scenarios]).items():
            terminalreporter.line(
                f"scenario {letter.upper()}: {summary.result:<8} {len(summary.tests):>3} test(s) "
                f"{summary.duration:6.1f}s  {SCENARIO_TITLES[letter]}"
            )
        terminalreporter.line(f"report: {self.report_path()}")
