"""Defaults for the shipped playbook when the project running it configures none.

Run from an empty folder (`tmux-agent validate`, or `pytest --pyargs tmuxagent_scenarios`),
there is no ini file giving pytest-timeout a timeout; a scenario that hangs must still end.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# provider -> (launch arguments, environment) that make the agent give up on the first API error
FAIL_FAST: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "claude": ((), {"CLAUDE_CODE_MAX_RETRIES": "0"}),
    "codex": (
        (
            "-c",
            "model_providers.tmuxagent.request_max_retries=0",
            "-c",
            "model_providers.tmuxagent.stream_max_retries=0",
        ),
        {},
    ),
}
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
    API keys are kept on `pane.secrets` (they must never reach the screen). `fail_fast=True`:
    the agent does not retry a failed API call (FAIL_FAST), so an error ends the turn at once."""

    def start(provider: str, session: str, *, settings=None, env=None, fail_fast=False, **session_keys):  # type: ignore[no-untyped-def]
        pane = agent_pane(session)
        entry = dict(agent_session(provider, pane, model_server))
        pane.secrets = [v for k, v in entry["env"].items() if k.endswith(("TOKEN", "KEY"))]
        if fail_fast:  # the agent gives up on the first API error instead of retrying for minutes
            launch_args, agent_env = FAIL_FAST[provider]
            entry["launch"] = " ".join([entry["launch"], *launch_args])
            entry["env"] = {**entry["env"], **agent_env}
        entry.update(session_keys)
        service = orchestrator_service(
            [pane],
            session_overrides={session: entry},
            settings={"stall_timeout_seconds": 120, **(settings or {})},
            env=env,
        )
        return pane, service

    return start
