"""The moment a person is needed, for agents: a tool request (Claude Code's permission dialog,
codex's approval prompt) makes the session `waiting_approval`. The safety policy answers what it
can with the agent's own keys — an allowlisted command is approved, a destructive one refused and
the agent told why — and escalates the rest: `需要确认 · SESSION` with the command, answered by
`tmux-agent approve SESSION` / `tmux-agent deny SESSION`. The turn's result records each
decision and who made it. Real agents, scripted model server, real WeCom mock.
"""

from __future__ import annotations

import pytest

from pytest_tmuxagent.model_server import text
from pytest_tmuxagent.waiting import wait_until
from tmuxagent_scenarios.agent_cases import PROVIDERS, TURN_TIMEOUT, approve_and_finish, script, shell_call
from tmuxagent_scenarios.common import supervised_for

pytestmark = pytest.mark.scenario_b

SESSION = "weather/agent"
APPROVALS = {"approvals": {"allowlist": [r"touch \S+\.txt"]}}


def tool_results(model_server) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.output for r in model_server.tool_results()]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_allowlisted_tool_request_is_approved_by_the_policy(provider, agent_under_test, model_server) -> None:  # type: ignore[no-untyped-def]
    pane, service = agent_under_test(provider, SESSION, settings=APPROVALS)
    script(model_server, provider, shell_call(provider, "touch approved.txt", escalate=True), text("File made."))
    row = service.wait_result(service.send(SESSION, "make the approved file"), timeout=TURN_TIMEOUT)
    assert row.status == "succeeded"
    assert (pane.workdir / "approved.txt").exists()
    last = service.metadata(SESSION)["last_command_result"]
    assert last["reply"] == "File made."
    assert [(a["decision"], a["by"], a["command"]) for a in last["approvals"]] == [
        ("approved", "policy", "touch approved.txt")
    ]
    requested = service.audit_events(event="approval_requested", session=SESSION)
    assert [(e["verdict"], e["tool_command"]) for e in requested] == [("approve", "touch approved.txt")]
    assert service.metrics.wait_until_value(
        "orchestrator_approvals_total", 1.0, session=SESSION, decision="approved", by="policy"
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_destructive_tool_request_is_refused_and_the_agent_told_why(provider, agent_under_test, model_server) -> None:  # type: ignore[no-untyped-def]
    pane, service = agent_under_test(provider, SESSION, settings=APPROVALS)
    (pane.workdir / "build").mkdir()
    script(
        model_server,
        provider,
        shell_call(provider, "rm -rf build", escalate=True, why="clean up"),
        text("Understood, I left build alone."),
    )
    row = service.wait_result(service.send(SESSION, "clean the build folder"), timeout=TURN_TIMEOUT)
    assert row.status == "succeeded"
    assert (pane.workdir / "build").is_dir()  # never run
    told = model_server.last_user_text()
    assert told is not None and "safety policy denied `rm -rf build`" in told
    last = service.metadata(SESSION)["last_command_result"]
    assert last["reply"] == "Understood, I left build alone."
    assert [(a["decision"], a["by"]) for a in last["approvals"]] == [("denied", "policy")]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_escalated_tool_request_waits_for_a_person_who_approves_it(  # type: ignore[no-untyped-def]
    provider, agent_under_test, model_server, wecom_mock
) -> None:
    pane, service = agent_under_test(
        provider, SESSION, settings={"stall_timeout_seconds": 1.0}, env=wecom_mock.env("webhook")
    )
    script(
        model_server, provider, shell_call(provider, "touch deploy.txt", escalate=True, why="deploy"), text("Deployed.")
    )
    command_id = service.send(SESSION, "deploy the weather bot")
    wait_until(
        lambda: service.metadata(SESSION).get("state") == "waiting_approval",
        timeout=TURN_TIMEOUT,
        message="waiting_approval",
    )
    pending = service.metadata(SESSION)["pending_approval"]
    assert (pending["command"], pending["verdict"]) == ("touch deploy.txt", "escalate")
    assert "touch deploy.txt" in service.metadata(SESSION)["state_detail"]
    [alert] = wecom_mock.wait_for_messages(1, timeout=15)
    assert f"需要确认 · {SESSION}" in alert and "touch deploy.txt" in alert and f"tmux-agent approve {SESSION}" in alert
    # waiting for a person is never a stall, whatever the stall timeout
    supervised_for(service, 3, "three stall timeouts pass")
    assert service.command(command_id).status == "running"  # type: ignore[union-attr]
    assert not service.audit_events(event="stall_detected") and not (pane.workdir / "deploy.txt").exists()

    approve_and_finish(service, SESSION, command_id, pane.workdir / "deploy.txt", "Deployed.", "touch deploy.txt")
    answered = service.audit_events(event="approval_answered", session=SESSION)
    assert [(e["decision"], e["by"]) for e in answered] == [("approved", "person")]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_person_denies_an_escalated_request(provider, agent_under_test, model_server, wecom_mock) -> None:  # type: ignore[no-untyped-def]
    pane, service = agent_under_test(provider, SESSION, env=wecom_mock.env("webhook"))
    script(
        model_server,
        provider,
        shell_call(provider, "touch release.txt", escalate=True, why="release"),
        text("Not releasing, as asked."),
    )
    command_id = service.send(SESSION, "release the weather bot")
    wait_until(
        lambda: service.metadata(SESSION).get("state") == "waiting_approval",
        timeout=TURN_TIMEOUT,
        message="waiting_approval",
    )
    service.cli("deny", SESSION, "--reason", "no releases today")
    row = service.wait_result(command_id, timeout=TURN_TIMEOUT)
    assert row.status == "succeeded" and not (pane.workdir / "release.txt").exists()
    told = model_server.last_user_text()
    assert told is not None and "denied `touch release.txt`: no releases today" in told
    last = service.metadata(SESSION)["last_command_result"]
    assert [(a["decision"], a["by"], a["reason"]) for a in last["approvals"]] == [
        ("denied", "person", "no releases today")
    ]
