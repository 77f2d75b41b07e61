"""The real-world test report: one Markdown file for the whole run, and its
machine-readable twin (`render_json`, written beside it as `<name>.json`).

Built on the controller from test reports (xdist workers send their evidence
along with each report), so it is correct under `-n 2`. Each scenario also says on which
kinds of session its tests proved it (`KINDS`: shell, claude, codex): a test's kinds are the
agent providers it asked for, or `shell` when it used no agent fixture.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from orchestrator.redact import redact

from .evidence import EvidenceItem
from .registry import BUILTIN_SCENARIOS, Scenario, builtin

__all__ = [
    "KINDS",
    "Criterion",
    "ScenarioSummary",
    "TestRecord",
    "agents_cell",
    "criteria",
    "json_path",
    "render",
    "render_json",
    "scenarios_pass",
    "summarize",
]

KINDS = ("shell", "claude", "codex")  # the report's agents column, in this order; others follow
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
    kinds: list[str] = field(default_factory=lambda: ["shell"])  # the kinds of session it ran on

    @property
    def name(self) -> str:
        return self.nodeid.split("::", 1)[-1]


def _outcome(outcomes: set[str]) -> str:
    """What a group of test outcomes adds up to, as the scenario table says it."""
    if not outcomes:
        return "not run"
    if "failed" in outcomes:
        return "failed"
    if outcomes == {"skipped"}:
        return "skipped"
    return "passed"


@dataclass
class ScenarioSummary:
    letter: str
    tests: list[TestRecord]
    scenario: Scenario | None = None

    @property
    def result(self) -> str:
        result = _outcome({t.outcome for t in self.tests})
        return "FAILED" if result == "failed" else result

    def kind_counts(self, kind: str) -> dict[str, int]:
        """How many of this scenario's tests on `kind` passed, failed and were skipped."""
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        for test in self.tests:
            if kind in test.kinds:
                counts[test.outcome] = counts.get(test.outcome, 0) + 1
        return counts

    @property
    def agents(self) -> dict[str, str]:
        """Per kind of session (shell, claude, codex, then any other seen): `passed`, `failed`,
        `skipped` or `not run`, decided like the scenario's result but over that kind's tests."""
        seen = [k for t in self.tests for k in t.kinds]
        kinds = [*KINDS, *dict.fromkeys(k for k in seen if k not in KINDS)]
        return {kind: _outcome({t.outcome for t in self.tests if kind in t.kinds}) for kind in kinds}

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


def agents_cell(summary: ScenarioSummary) -> str:
    """`shell ✓ · claude ✓ (1 skipped) · codex ✗ (1 failed)`; a kind without tests is `– not run`."""
    parts = []
    for kind, status in summary.agents.items():
        counts = summary.kind_counts(kind)
        if status == "passed":
            parts.append(f"{kind} ✓" + (f" ({counts['skipped']} skipped)" if counts["skipped"] else ""))
        elif status == "failed":
            parts.append(f"{kind} ✗ ({counts['failed']} failed)")
        elif status == "skipped":
            parts.append(f"{kind} – skipped ({counts['skipped']})")
        else:
            parts.append(f"{kind} – not run")
    return " · ".join(parts)


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
        "| scenario | result | tests | duration | agents | evidence / why |",
        "| --- | --- | --- | --- | --- | --- |",
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
            f"{summary.duration:.1f} s | {agents_cell(summary)} | {_cell(why)} |"
        )
    out += [
        "",
        "agents: the kinds of session a scenario's tests proved it on — `shell` (tests without an agent "
        "fixture), `claude` / `codex` (agent tests, by the provider they asked for); ✓ passed, "
        "✗ failed, – skipped or not run.",
    ]
    out += ["", "## Acceptance criteria (验收标准)", "", "| criterion | met | decided by |", "| --- | --- | --- |"]
    for c in rows:
        out.append(f"| {c.text} | {'✅ met' if c.met else '❌ not met'} | {_cell(c.decided_by)} |")
    out += ["", "## Evidence by scenario", ""]
    for letter, summary in summaries.items():
        out += [f"### {letter.upper()} — {summary.title}: {summary.result} · agents: {agents_cell(summary)}", ""]
        for test in summary.tests:
            on = "" if test.kinds == ["shell"] else f" on {', '.join(test.kinds)}"
            out.append(
                f"- `{test.name}`{on} — **{test.outcome}** in {test.duration:.2f} s"
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


def render_json(
    summaries: Mapping[str, ScenarioSummary], rows: Iterable[Criterion], *, live: bool, failures: int
) -> str:
    """The report for programs: per scenario its result and `agents`
    (`{"shell": "passed", "claude": "failed", "codex": "not run"}`) with the counts behind them,
    the acceptance criteria, and each scenario test's outcome and kinds. No evidence (the
    Markdown has it); reasons are redacted."""
    tests = {t.nodeid: t for s in summaries.values() for t in s.tests}
    document: dict[str, Any] = {
        "generated_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": "live" if live else "embedded",
        "kinds": list(KINDS),
        "scenarios": {
            letter: {
                "title": summary.title,
                "result": summary.result.lower(),
                "tests": len(summary.tests),
                "duration_s": round(summary.duration, 3),
                "agents": summary.agents,
                "agent_tests": {kind: summary.kind_counts(kind) for kind in summary.agents},
            }
            for letter, summary in summaries.items()
        },
        "criteria": [{"text": c.text, "met": c.met, "decided_by": redact(c.decided_by)} for c in rows],
        "failures": failures,
        "tests": [
            {
                "nodeid": t.nodeid,
                "scenarios": t.scenarios,
                "kinds": t.kinds,
                "outcome": t.outcome,
                "duration_s": round(t.duration, 3),
                "reason": redact(t.reason),
            }
            for t in tests.values()
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def json_path(report: Path) -> Path:
    """Where the JSON twin of the Markdown report `report` goes: same folder and stem, `.json`."""
    twin = report.with_suffix(".json")
    return twin if twin != report else report.with_name(report.name + ".json")


def write_report(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
