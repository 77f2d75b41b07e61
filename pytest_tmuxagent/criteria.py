"""The playbook's acceptance criteria (验收标准): how each is decided from a run's results,
and the one-line summary `tmux-agent validate` prints last.

A criterion has four standings, and only one of them fails the gate:

- `met` (✅) — the tests that decide it ran and passed;
- `not met` (❌) — one of them failed: this fails `--tmuxagent-gate` and `validate`;
- `not decided` (⚪) — they were part of the run but proved nothing (skipped, e.g. a missing
  optional tool): the machine could not check it, the product did not fail it;
- `not run` (⚪) — they were not part of this run at all (`validate --scenario e`, `-m`, `-k`):
  a subset run says what it did not cover instead of calling it a failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .registry import BUILTIN_SCENARIOS

if TYPE_CHECKING:
    from .summaries import ScenarioSummary, TestRecord

__all__ = [
    "MARKS",
    "Criterion",
    "Standing",
    "acceptance_line",
    "criteria",
    "decided_by_tests",
    "scenarios_pass",
]

Standing = Literal["met", "not met", "not decided", "not run"]
MARKS: dict[Standing, str] = {
    "met": "✅ met",
    "not met": "❌ not met",
    "not decided": "⚪ not decided",
    "not run": "⚪ not run",
}


@dataclass
class Criterion:
    """One row of the report's acceptance criteria: what is required, whether this run met it
    (`True`, `False`, or `None`: not decided — the tests that decide it proved nothing, e.g. an
    optional tool is missing), and why. `not_run` says a `None` comes from a subset run: what
    decides it was not part of this run (a project's hook may set it too)."""

    text: str
    met: bool | None
    decided_by: str
    not_run: bool = False

    def __post_init__(self) -> None:
        if self.not_run and self.met is not None:
            raise ValueError(f"criterion {self.text!r}: not_run needs met=None, got met={self.met!r}")

    @property
    def standing(self) -> Standing:
        if self.met is None:
            return "not run" if self.not_run else "not decided"
        return "met" if self.met else "not met"

    @property
    def mark(self) -> str:
        return MARKS[self.standing]

    @property
    def short(self) -> str:
        """The Chinese half of the text (`七大场景全部通过`), as the verdict and the last line name it."""
        return self.text.split(" — ")[0]

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "met": self.met, "standing": self.standing, "decided_by": self.decided_by}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Criterion:
        """The row `to_json` wrote (a twin written before `standing` existed reads as before)."""
        return cls(data["text"], data["met"], data["decided_by"], not_run=data.get("standing") == "not run")


def decided_by_tests(text: str, tests: Sequence[TestRecord], what: str) -> Criterion:
    """Met when the tests that decide it ran and passed; not met when one failed; not decided
    when all of them skipped; not run when none was part of the run (deselected)."""
    ran = [t for t in tests if t.outcome in ("passed", "failed")]
    failed = [t for t in ran if t.outcome == "failed"]
    skipped = [t for t in tests if t.outcome == "skipped"]
    if failed:
        return Criterion(text, False, f"{what}: {len(failed)} of {len(ran)} failed (`{failed[0].name}`)")
    if not tests:
        return Criterion(text, None, f"{what}: not part of this run", not_run=True)
    if not ran:
        return Criterion(text, None, f"{what}: none ran; skipped: {skipped[0].reason}")
    extra = f", {len(skipped)} skipped ({skipped[0].reason})" if skipped else ""
    return Criterion(text, True, f"{what}: {len(ran)} passed{extra}")


def scenarios_pass(text: str, summaries: Mapping[str, ScenarioSummary], *letters: str) -> Criterion:
    """The usual criterion: met when every named scenario passed; not met when one failed; not
    run when the others passed and the rest were not part of this run; else not decided."""
    missing = [x for x in letters if x not in summaries]
    if missing:
        raise KeyError(f"no scenario {missing[0]!r} in this run's registry")
    results = [summaries[x].result for x in letters]
    said = ", ".join(f"scenario {x.upper()} {summaries[x].result}" for x in letters)
    if "FAILED" in results:
        return Criterion(text, False, said)
    if all(r == "passed" for r in results):
        return Criterion(text, True, said)
    return Criterion(text, None, said, not_run=all(r in ("passed", "not run") for r in results))


def criteria(
    summaries: Mapping[str, ScenarioSummary],
    failures: int,
    extra: Iterable[Criterion] = (),
    *,
    tests_run: int | None = None,
    scenario_tests_run: int | None = None,
) -> list[Criterion]:
    """The playbook's five acceptance criteria, then a project's `extra` ones (from the hook).
    Each is decided by the tests that decide it: the alert check by scenario F's Prometheus
    test, replay by the tests that replay the audit log; a criterion whose tests did not run
    is not decided (a missing optional tool) or not run (a subset run), never failed."""
    seven = [s.letter for s in BUILTIN_SCENARIOS]
    f_tests = summaries["f"].tests if "f" in summaries else []

    def by_tests(text: str, word: str, what: str) -> Criterion:
        """Decided by scenario F's tests named for it (`…prometheus…`, `…replay…`); a playbook
        without such names falls back to scenario F's result."""
        named = [t for t in f_tests if word in t.name]
        if named or not [t for t in f_tests if "soak" not in t.name]:  # a soak alone decides neither
            return decided_by_tests(text, named, what)
        return scenarios_pass(text, summaries, "f")

    if tests_run is None:
        what = f"{failures} failed test(s) in this run"
    else:
        scope = (
            f"{tests_run} test(s) run"
            + (f", {scenario_tests_run} of them scenario tests" if scenario_tests_run is not None else "")
            + ("; the unit suite was not part of this run" if scenario_tests_run == tests_run else "")
        )
        what = f"{failures} failed of {scope}"
    return [
        scenarios_pass("七大场景全部通过 — all seven scenarios pass", summaries, *seven),
        by_tests(
            "指标无红色告警 — no alert firing on a healthy run",
            "prometheus",
            "scenario F's real-Prometheus alert checks",
        ),
        scenarios_pass(
            "通知链路稳定，降级策略正确 — notification chain stable, degradation correct", summaries, "b", "e", "g"
        ),
        by_tests(
            "Replay 审计完整 — audit replay complete",
            "replay",
            "`tmux-agent-orchestrator-replay --verify-db` tests",
        ),
        Criterion("全量 pytest 0 失败 — pytest 0 failures", failures == 0, what),
        *extra,
    ]


def acceptance_line(rows: Sequence[Criterion], report: Path | str) -> str:
    """`acceptance: 5/5 criteria met — report: reports/…md`, naming the unmet, undecided and
    unrun ones."""
    met = sum(c.met is True for c in rows)
    tail = "".join(
        f"; {standing}: {', '.join(named)}"
        for standing in ("not met", "not decided", "not run")
        if (named := [c.short for c in rows if c.standing == standing])
    )
    return f"acceptance: {met}/{len(rows)} criteria met{tail} — report: {report}"
