"""What a run's scenario tests came to, gathered on the controller from their reports: one
`TestRecord` per test (outcome, reason, evidence, kinds of session), one `ScenarioSummary` per
registered scenario (its result, deciding sentence, what a failed test broke, per-kind
outcomes), and the figures its passed tests measured. report.py renders them; criteria.py
decides the acceptance criteria from them.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .capabilities import what_broke
from .evidence import EvidenceItem
from .registry import Scenario, builtin

__all__ = [
    "KINDS",
    "MISSING_TOOL",
    "ScenarioSummary",
    "TestRecord",
    "figures",
    "missing_tool",
    "summarize",
]

STORES = ("sqlite", "postgresql")  # the report's stores line, in this order
STORE_PROPERTY = "tmuxagent_store"
"""The user property naming the store a test ran on (it rides over xdist to the report)."""
KINDS = ("shell", "claude", "codex")  # the report's agents column, in this order; others follow
MISSING_TOOL = "missing tool: "  # how a test that skips for lack of an optional tool says so


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
    store: str = "sqlite"  # the state store its orchestrators ran on (postgres_plugin's `tmuxagent_each_store`)

    @property
    def name(self) -> str:
        return self.nodeid.split("::", 1)[-1]

    def items(self, kind: str) -> list[EvidenceItem]:
        return [e for e in self.evidence if e.kind == kind]

    @property
    def decisions(self) -> list[str]:
        return list(dict.fromkeys(e.text for e in self.evidence if e.kind == "decision"))

    @property
    def headline(self) -> str | None:
        return next((e.text for e in self.evidence if e.kind == "decision" and e.title == "headline"), None)

    @property
    def tool_skip(self) -> bool:
        return self.outcome == "skipped" and missing_tool(self.reason) is not None


def missing_tool(reason: str) -> str | None:
    """The tool a skip reason says is missing (`missing tool: prometheus — …`), else None."""
    if not reason.startswith(MISSING_TOOL):
        return None
    return reason[len(MISSING_TOOL) :].split(" ", 1)[0].strip(",;:")


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
        """`passed`, `FAILED`, `skipped` or `not run`. A scenario with a test skipped because an
        optional tool is missing (`missing tool: …`) is `skipped`, not passed: part of it was
        not proven."""
        result = _outcome({t.outcome for t in self.tests})
        if result == "failed":
            return "FAILED"
        if result == "passed" and any(t.tool_skip for t in self.tests):
            return "skipped"
        return result

    @property
    def missing_tools(self) -> list[str]:
        return list(dict.fromkeys(tool for t in self.tests if (tool := missing_tool(t.reason)) and t.tool_skip))

    @property
    def decision(self) -> str:
        """The scenario's deciding fact for the table: a failure's reason, else the headline
        decision, else the first decision a test wrote, else a skip's reason."""
        failed = next((t for t in self.tests if t.outcome == "failed"), None)
        if failed is not None:
            return f"{self.what_broke(failed)} — `{failed.name}` failed: {failed.reason}"
        passed = [t for t in self.tests if t.outcome == "passed"]
        found = next((h for t in passed if (h := t.headline)), None) or next(
            (d for t in passed for d in t.decisions), None
        )
        tools = self.missing_tools
        if tools:
            skipped = sum(t.tool_skip for t in self.tests)
            why = f"{skipped} test(s) skipped: {', '.join(tools)} not installed"
            return f"{found} ({why}.)" if found else why + "."
        if found:
            return found
        if passed:
            return f"{len(passed)} test(s) passed (they recorded no decision)."
        if not self.tests:
            return "Not part of this run (deselected)."
        return next((t.reason for t in self.tests if t.reason), "")

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

    def store_counts(self, store: str) -> dict[str, int]:
        """How many of this scenario's tests on `store` passed, failed and were skipped."""
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        for test in self.tests:
            if test.store == store:
                counts[test.outcome] = counts.get(test.outcome, 0) + 1
        return counts

    @property
    def stores(self) -> dict[str, str]:
        """Per state store (sqlite, postgresql): the outcome over the tests that ran on it."""
        return {store: _outcome({t.outcome for t in self.tests if t.store == store}) for store in STORES}

    @property
    def duration(self) -> float:
        return sum(t.duration for t in self.tests)

    def what_broke(self, test: TestRecord) -> str:
        """A failed test's capability in the playbook's words: `B: stall detected but 命令卡顿
        not delivered` (capabilities.py says where it comes from)."""
        return what_broke(self.letter, test.name, test.evidence, test.reason, self.scenario)

    @property
    def title(self) -> str:
        return self.scenario.title if self.scenario is not None else self.letter


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


def _quantile(values: Sequence[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def figures(summary: ScenarioSummary) -> dict[str, dict[str, float]]:
    """Per figure name the scenario's passed tests recorded: n, p50, p95, max (seconds)."""
    values: dict[str, list[float]] = {}
    for test in summary.tests:
        if test.outcome != "passed":
            continue
        for item in test.items("figure"):
            try:
                values.setdefault(item.title, []).append(float(item.text))
            except ValueError:
                continue
    return {
        name: {"n": len(v), "p50": _quantile(v, 0.5), "p95": _quantile(v, 0.95), "max": max(v)}
        for name, v in values.items()
    }
