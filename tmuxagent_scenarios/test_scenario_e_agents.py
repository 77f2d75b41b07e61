"""Scenario E (连续失败告警) for agent sessions: the model API answers 500/529 (the agent gives up
at once: its retries are turned off) or 400, so each turn ends failed — Claude Code's StopFailure
hook, codex's rollout `task_complete` with an error. At `failure_alert_threshold` failed turns in a
row the streak gauge rises, exactly one "命令连续失败" goes out, and the session is blocked: the
queued prompt is not delivered until `tmux-agent unblock`.
"""

from __future__ import annotations

import pytest

from pytest_tmuxagent.model_server import http_error, overloaded, server_error, text
from tmuxagent_scenarios.agent_cases import PROVIDERS, TURN_TIMEOUT, model_requests, script
from tmuxagent_scenarios.test_scenario_e_streak import heartbeats_pass

pytestmark = pytest.mark.scenario_e

SESSION = "weather/agent"
THRESHOLD = 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_failed_agent_turns_alert_once_block_and_resume(provider, agent_under_test, model_server, wecom_mock) -> None:  # type: ignore[no-untyped-def]
    pane, service = agent_under_test(
        provider,
        SESSION,
        settings={"failure_alert_threshold": THRESHOLD},
        env=wecom_mock.env("webhook"),
        fail_fast=True,
    )
    errors = (server_error(), overloaded(), http_error(400, "weather model unavailable"))
    prompts = [f"forecast attempt {i}" for i in range(THRESHOLD)]
    for prompt, error in zip(prompts, errors, strict=True):
        script(model_server, provider, error, prompt=prompt)
    script(model_server, provider, text("Back in business."), prompt="say you are back")
    failures = [service.send(SESSION, prompt) for prompt in prompts]
    kept = service.send(SESSION, "say you are back")

    rows = [service.wait_result(i, timeout=TURN_TIMEOUT) for i in failures]
    assert [r.status for r in rows] == ["failed"] * THRESHOLD
    last = service.metadata(SESSION)["last_command_result"]
    assert last["command"] == f"forecast attempt {THRESHOLD - 1}"
    assert "weather model unavailable" in last["reply"]  # the agent's own report of the API error
    metrics = service.metrics
    assert metrics.wait_until_value("orchestrator_failure_streak", float(THRESHOLD), session=SESSION) == THRESHOLD
    assert metrics.wait_until_value("orchestrator_session_blocked", 1.0, session=SESSION) == 1.0
    [alert] = wecom_mock.wait_for_messages(1, timeout=15)
    assert "命令连续失败" in alert and SESSION in alert

    heartbeats_pass(service)
    assert service.command(kept).status == "queued"  # type: ignore[union-attr]
    assert service.metadata(SESSION)["state"] == "blocked"
    assert not [e for e in service.audit_events(event="command_dispatched") if e["command_id"] == kept]

    service.cli("unblock", SESSION)
    row = service.wait_result(kept, timeout=TURN_TIMEOUT)
    evidence = (service.metadata(SESSION)["last_command_result"], model_requests(model_server, provider))
    assert row.status == "succeeded", evidence
    assert service.metadata(SESSION)["last_command_result"]["reply"] == "Back in business."
    assert metrics.wait_until_value("orchestrator_failure_streak", 0.0, session=SESSION) == 0.0
    assert len(wecom_mock.messages()) == 1  # one alert per streak
