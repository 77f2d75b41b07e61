"""Hooks a project implements (in its conftest.py or a plugin) to extend the playbook.

The `tmuxagent` plugin registers these with `pytest_addhooks`, so implement them like any
pytest hook — a function of that name in a conftest.py; an implementation may take only the
arguments it needs::

    from pytest_tmuxagent import Scenario, scenarios_pass

    def pytest_tmuxagent_scenarios(config):
        return [Scenario("h", "计费对账", "billing reconciliation")]

    def pytest_tmuxagent_acceptance_criteria(config, summaries, failures):
        return [scenarios_pass("计费无差错 — billing reconciles", summaries, "h")]

Scenarios are read when the run is configured (their markers are registered then) and again
when the report is written, so implement them in a conftest.py that pytest loads at start-up
(the rootdir's or the test folder's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .registry import Scenario
    from .report import Criterion, ScenarioSummary

hookspec = pytest.hookspec


@hookspec
def pytest_tmuxagent_scenarios(config: pytest.Config) -> Sequence[Scenario]:
    """Extra playbook scenarios for this run, after the built-in A–G.

    Each gets its marker registered (`scenario_<letter>` unless it names another), Allure
    labels, a row in the report's scenario table and its own evidence section. Return a list
    (empty for none); every implementation's list is used.
    """
    raise NotImplementedError


@hookspec
def pytest_tmuxagent_acceptance_criteria(
    config: pytest.Config, summaries: Mapping[str, ScenarioSummary], failures: int
) -> Sequence[Criterion]:
    """Extra rows for the report's acceptance criteria, after the built-in five.

    `summaries` maps every scenario key (built-in and the project's) to its outcome in this
    run; `failures` counts failed tests. Return evaluated `Criterion` objects —
    `pytest_tmuxagent.scenarios_pass(text, summaries, *letters)` builds the usual "these
    scenarios pass" one. With `--tmuxagent-gate`, an unmet extra criterion fails the run too.
    """
    raise NotImplementedError
