"""Defaults for the shipped playbook when the project running it configures none.

Run from an empty folder (`tmux-agent validate`, or `pytest --pyargs tmuxagent_scenarios`),
there is no ini file giving pytest-timeout a timeout; a scenario that hangs must still end.
"""

from __future__ import annotations

from pathlib import Path

import pytest

DEFAULT_TIMEOUT = 120.0  # seconds per scenario test, as the repo's pyproject sets
HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("timeout"):
        return
    if config.getoption("timeout", None) is not None or config.getini("timeout"):
        return  # the command line or the ini file decides
    for item in items:
        if item.path.is_relative_to(HERE) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT))
