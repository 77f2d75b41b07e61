"""The real-world test report: one Markdown file for the whole run.

Built on the controller from test reports (xdist workers send their evidence
along with each report), so it is correct under `-n 2`.
"""

from __future__ import annotations

import datetime as _dt
import platform
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from orchestrator.redact import redact

from .evidence import EvidenceItem
from .registry import BUILTIN_SCENARIOS, Scenario, builtin

__all__ = ["Criterion", "ScenarioSummary", "TestRecord", "criteria", "render", "scenarios_pass", "summarize"]

PACKAGES = ("tmuxagent", "libtmux", "prometheus-client", "pytest", "pytest-xdist", "allure-pytest", "openai")


@dataclass
class TestRecord:
    __test__ = False  # not a test class, whatever pytest's python_classes say

    nodeid: str
    scenarios: list[str]
    outcome: str = "passed"
    duration: float = 0.0
    evidence: list[EvidenceItem] = field(default_factory=list)
    reason: str = ""

    @property
    def name(self) -> str:
        return self.nodeid.split("::", 1)[-1]


@dataclass
class ScenarioSummary:
    letter: str
    tests: list[TestRecord]
    scenario: Scenario | None = None

    @property
    def result(self) -> str:
        if not self.tests:
            return "not run"
        outcomes = {t.outcome for t in self.tests}
        if "failed" in outcomes:
            return "FAILED"
        if outcomes == {"skipped"}:
            return "skipped"
        return "passed"

    @property
    def duration(self) -> float:
        return sum(t.duration for t in self.tests)

    @property
    def title(self) -> str:
        return self.scenario.title if self.scenario is not None else self.letter


@dataclass
class Criterion:
    """One row of the report's acceptance criteria: what is required, whether this run met it, and why."""

    text: str
    met: bool
    decided_by: str


def scenarios_pass(text: str, summaries: Mapping[str, ScenarioSummary], *letters: str) -> Criterion:
    """The usual criterion: met when every named scenario passed (not skipped, not unrun)."""
    missing = [x for x in letters if x not in summaries]
    if missing:
        raise KeyError(f"no scenario {missing[0]!r} in this run's registry")
    return Criterion(
        text,
        all(summaries[x].result == "passed" for x in letters),
        ", ".join(f"scenario {x.upper()} {summaries[x].result}" for x in letters),
    )


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def tmux_version() -> str:
    tmux = shutil.which("tmux")
    if not tmux:
        return "not found"
    return subprocess.run([tmux, "-V"], capture_output=True, text=True).stdout.strip()


def summarize(
    records: Iterable[TestRecord], registry: Mapping[str, Scenario] | None = None
) -> dict[str, ScenarioSummary]:
    """One summary per registered scenario (built-in ones by default), in registry order."""
    registry = builtin() if registry is None else registry
    records = list(records)
    return {
        letter: ScenarioSummary(letter, [r for r in records if letter in r.scenarios], scenario)
        for letter, scenario in registry.items()
    }


def criteria(
    summaries: Mapping[str, ScenarioSummary], failures: int, extra: Iterable[Criterion] = ()
) -> list[Criterion]:
    """The playbook's five acceptance criteria, then a project's `extra` ones (from the hook)."""
    seven = [s.letter for s in BUILTIN_SCENARIOS]

    def row(text: str, *letters: str, suffix: str = "") -> Criterion:
        base = scenarios_pass(text, summaries, *letters)
        return Criterion(base.text, base.met, base.decided_by + suffix)

    return [
        row("七大场景全部通过 — all seven scenarios pass", *seven),
        row("指标无红色告警 — no alert firing on a healthy run", "f", suffix=" (Prometheus alert checks)"),
        row("通知链路稳定，降级策略正确 — notification chain stable, degradation correct", "b", "e", "g"),
        row("Replay 审计完整 — audit replay complete", "a", "f", suffix=" (schema-valid audit, replay --verify-db)"),
        Criterion("全量 pytest 0 失败 — pytest 0 failures", failures == 0, f"{failures} failed test(s) in this run"),
        *extra,
    ]


def _cell(text: str) -> str:
    return redact(text).replace("|", "\\|").replace("\n", " ")[:300]


def render(
    summaries: Mapping[str, ScenarioSummary],
    rows: Iterable[Criterion],
    *,
    live: bool,
    workers: int,
    started: float,
) -> str:
    """The report's Markdown: environment, a row per scenario, the acceptance criteria `rows`, evidence."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    out = [
        "# Orchestrator real-world test report",
        "",
        f"Generated {now} by the `tmuxagent` pytest plugin.",
        "",
        "## Environment",
        "",
        "| item | value |",
        "| --- | --- |",
        f"| mode | {'LIVE (your tmux, codex and WeCom)' if live else 'embedded default (private tmux socket, fake codex, local WeCom mock, temp SQLite)'} |",
        f"| tmux | {tmux_version()} |",
        f"| Python | {platform.python_version()} ({platform.system()} {platform.machine()}) |",
        f"| xdist workers | {workers or 'none'} |",
        f"| run time | {_dt.datetime.now().timestamp() - started:.1f} s |",
    ]
    out += [f"| {name} | {_version(name)} |" for name in PACKAGES]
    out += [
        "",
        "## Scenarios",
        "",
        "| scenario | result | tests | duration | evidence / why |",
        "| --- | --- | --- | --- | --- |",
    ]
    for letter, summary in summaries.items():
        why = next((t.reason for t in summary.tests if t.outcome == "failed"), "")
        if not why:
            firsts = [
                e
                for t in summary.tests
                for e in t.evidence
                if e.kind in ("notifications", "metrics", "note") and e.text not in ("(none)", "(all zero)")
            ][:1]
            why = (
                f"{firsts[0].title}: {firsts[0].text}" if firsts else (summary.tests[0].reason if summary.tests else "")
            )
        out.append(
            f"| {letter.upper()} {summary.title} | {summary.result} | {len(summary.tests)} | "
            f"{summary.duration:.1f} s | {_cell(why)} |"
        )
    out += ["", "## Acceptance criteria (验收标准)", "", "| criterion | met | decided by |", "| --- | --- | --- |"]
    for c in rows:
        out.append(f"| {c.text} | {'✅ met' if c.met else '❌ not met'} | {_cell(c.decided_by)} |")
    out += ["", "## Evidence by scenario", ""]
    for letter, summary in summaries.items():
        out += [f"### {letter.upper()} — {summary.title}: {summary.result}", ""]
        for test in summary.tests:
            out.append(
                f"- `{test.name}` — **{test.outcome}** in {test.duration:.2f} s"
                + (f": {_cell(test.reason)}" if test.reason else "")
            )
            for item in test.evidence:
                body = redact(item.text).strip() or "(empty)"
                out += [
                    f"  - {item.kind} — {redact(item.title)}",
                    "",
                    "    ```",
                    *[f"    {line}" for line in body.splitlines()[-15:]],
                    "    ```",
                    "",
                ]
        out.append("")
    return "\n".join(out) + "\n"


def write_report(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
