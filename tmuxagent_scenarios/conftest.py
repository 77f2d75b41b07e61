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


@pytest.fixture
def agent_under_test(agent_pane, orchestrator_service, agent_session, model_server):  # type: ignore[no-untyped-def]
    """Factory: `agent_under_test(provider, session, settings=..., env=..., **session_keys)` →
    `(pane, service)`: a started orchestrator supervising one real agent session of `provider`
    (launched by the orchestrator, hooks wired) talking to the `model_server`. The session's
    API keys are kept on `pane.secrets` (they must never reach the screen)."""

    def start(provider: str, session: str, *, settings=None, env=None, **session_keys):  # type: ignore[no-untyped-def]
        pane = agent_pane(session)
        entry = dict(agent_session(provider, pane, model_server))
        pane.secrets = [v for k, v in entry["env"].items() if k.endswith(("TOKEN", "KEY"))]
        entry.update(session_keys)
        service = orchestrator_service(
            [pane],
            session_overrides={session: entry},
            settings={"stall_timeout_seconds": 120, **(settings or {})},
            env=env,
        )
        return pane, service

    return start
