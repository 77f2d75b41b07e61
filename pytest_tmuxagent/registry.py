"""The one scenario registry: letter, Chinese title, English title and marker of each
playbook scenario.

The plugin registers the markers and Allure labels from it, the report has a row per
entry, and `tmux-agent validate` checks `--scenario` letters against it. A project adds
its own scenarios with the `pytest_tmuxagent_scenarios(config)` hook (see hookspecs.py);
`scenarios(config)` returns the built-in seven followed by those. What each built-in
scenario's tests prove, in the playbook's words (a red report row names it), is in
playbook_capabilities.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

__all__ = ["BUILTIN_SCENARIOS", "EPIC", "MARKER_PREFIX", "Scenario", "builtin", "scenarios"]

EPIC = "Orchestrator real-world validation playbook"
MARKER_PREFIX = "scenario_"


@dataclass(frozen=True)
class Scenario:
    """One playbook scenario. `letter` is its key (`a`…`g` built in; a project's may be any
    identifier such as `h` or `billing`); its marker is `scenario_<letter>` unless given."""

    letter: str
    title_zh: str
    title_en: str
    marker: str = ""

    def __post_init__(self) -> None:
        if not self.letter or not self.letter.isidentifier() or self.letter != self.letter.lower():
            raise ValueError(f"scenario key must be a lower-case identifier, got {self.letter!r}")
        if not self.marker:
            object.__setattr__(self, "marker", f"{MARKER_PREFIX}{self.letter}")
        if not self.marker.isidentifier():
            raise ValueError(f"scenario marker must be an identifier, got {self.marker!r}")

    @property
    def label(self) -> str:
        """`A`, `B`, … — how the report and the terminal name it."""
        return self.letter.upper()

    @property
    def title(self) -> str:
        """The report's title: `命令执行反馈 — command execution feedback`."""
        return f"{self.title_zh} — {self.title_en}"

    @property
    def allure_title(self) -> str:
        """Allure's feature and suite: `command execution feedback (命令执行反馈)`."""
        return f"{self.title_en} ({self.title_zh})"

    @property
    def feature(self) -> str:
        """`Scenario A — command execution feedback (命令执行反馈)`."""
        return f"Scenario {self.label} — {self.allure_title}"

    @property
    def marker_line(self) -> str:
        """The `markers` ini line that registers its marker."""
        return f"{self.marker}: playbook scenario {self.label} — {self.allure_title}"


BUILTIN_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("a", "命令执行反馈", "command execution feedback"),
    Scenario("b", "卡顿检测与自愈", "stall detection and self-healing"),
    Scenario("c", "决策辅助", "decision assist"),
    Scenario("d", "需求文档分解", "requirements decomposition"),
    Scenario("e", "连续失败告警", "failure-streak alerts"),
    Scenario("f", "指标与审计", "metrics and audit"),
    Scenario("g", "通知降级验证", "notification degradation"),
)


def builtin() -> dict[str, Scenario]:
    """The built-in seven, by letter."""
    return {s.letter: s for s in BUILTIN_SCENARIOS}


def merge(extra: Iterable[Iterable[Scenario]]) -> dict[str, Scenario]:
    """The built-in scenarios followed by a project's; a key or marker used twice is an error."""
    found = builtin()
    markers = {s.marker: s.letter for s in found.values()}
    for group in extra:
        for scenario in group:
            if not isinstance(scenario, Scenario):
                raise TypeError(f"pytest_tmuxagent_scenarios must return Scenario objects, got {scenario!r}")
            if scenario.letter in found or scenario.marker in markers:
                if found.get(scenario.letter) == scenario:
                    continue  # the same entry from two conftests
                raise ValueError(f"scenario {scenario.letter!r} ({scenario.marker}) is already registered")
            found[scenario.letter] = scenario
            markers[scenario.marker] = scenario.letter
    return found


def scenarios(config: pytest.Config | None = None) -> dict[str, Scenario]:
    """Every scenario of this run: the built-in seven, then those the hook adds."""
    if config is None:
        return builtin()
    return merge(config.hook.pytest_tmuxagent_scenarios(config=config))
