"""The real-world test report: one Markdown file for the whole run.

Built on the controller from test reports (xdist workers send their evidence
along with each report), so it is correct under `-n 2`.
"""

from __future__ import annotations

import datetime as _dt
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from orchestrator.redact import redact

from .evidence import EvidenceItem

SCENARIO_TITLES = {
    "a": "命令执行反馈 — command execution feedback",
    "b": "卡顿检测与自愈 — stall detection and self-healing",
    "c": "决策辅助 — decision assist",
    "d": "需求文档分解 — requirements decomposition",
    "e": "连续失败告警 — failure-streak alerts",
    "f": "指标与审计 — metrics and audit",
    "g": "通知降级验证 — notification degradation",
}
PACKAGES = ("tmuxagent", "libtmux", "prometheus-client", "pytest", "pytest-xdist", "allure-pytest", "openai")


@dataclass
class TestRecord:
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


@dataclass
class Criterion:
    text: str
    met: bool
    decided_by: str


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


def summarize(records: list[TestRecord]) -> dict[str, ScenarioSummary]:
    return {
        letter: ScenarioSummary(letter, [r for r in records if letter in r.scenarios]) for letter in SCENARIO_TITLES
    }


def criteria(summaries: dict[str, ScenarioSummary], failures: int) -> list[Criterion]:
    def passed(*letters: str) -> bool:
        return all(summaries[x].result == "passed" for x in letters)

    def said(*letters: str) -> str:
        return ", ".join(f"scenario {x.upper()} {summaries[x].result}" for x in letters)

    return [
        Criterion("七大场景全部通过 — all seven scenarios pass", passed(*SCENARIO_TITLES), said(*SCENARIO_TITLES)),
        Criterion(
            "指标无红色告警 — no alert firing on a healthy run", passed("f"), said("f") + " (Prometheus alert checks)"
        ),
        Criterion(
            "通知链路稳定，降级策略正确 — notification chain stable, degradation correct",
            passed("b", "e", "g"),
            said("b", "e", "g"),
        ),
        Criterion(
            "Replay 审计完整 — audit replay complete",
            passed("a", "f"),
            said("a", "f") + " (schema-valid audit, replay --verify-db)",
        ),
        Criterion("全量 pytest 0 失败 — pytest 0 failures", failures == 0, f"{failures} failed test(s) in this run"),
    ]


def _cell(text: str) -> str:
    return redact(text).replace("|", "\\|").replace("\n", " ")[:300]


def render(records: list[TestRecord], *, live: bool, workers: int, failures: int, started: float) -> str:
    summaries = summarize(records)
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
            f"| {letter.upper()} {SCENARIO_TITLES[letter]} | {summary.result} | {len(summary.tests)} | "
            f"{summary.duration:.1f} s | {_cell(why)} |"
        )
    out += ["", "## Acceptance criteria (验收标准)", "", "| criterion | met | decided by |", "| --- | --- | --- |"]
    for c in criteria(summaries, failures):
        out.append(f"| {c.text} | {'✅ met' if c.met else '❌ not met'} | {_cell(c.decided_by)} |")
    out += ["", "## Evidence by scenario", ""]
    for letter, summary in summaries.items():
        out += [f"### {letter.upper()} — {SCENARIO_TITLES[letter]}: {summary.result}", ""]
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
