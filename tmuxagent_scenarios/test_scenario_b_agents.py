"""Scenario B (卡顿检测与自愈) for agent sessions: the model hangs mid-stream, so nothing the agent
does moves — no hook event, no transcript line, no tool writing (its spinner still turns: that is
not activity). After the stall timeout the orchestrator sends the provider's interrupt (Escape),
the agent records the interrupt in its transcript, and the turn is retried with the same prompt
(the session is marked retry-safe) up to `stall_retries_before_notify`; then it ends `stalled`,
"命令卡顿" goes out, the session cools down, and the next queued prompt runs after the cooldown.
A turn whose tool keeps printing is busy, not stalled. An agent's question (Claude Code's
AskUserQuestion menu) is `waiting_input`, never a stall, and `tmux-agent reply` answers it.
"""

from __future__ import annotations

import pytest

from orchestrator.clock import parse_iso_utc
from pytest_tmuxagent.model_server import hang, text, tool_call
from pytest_tmuxagent.waiting import wait_until
from tmuxagent_scenarios.agent_cases import PROVIDERS, TURN_TIMEOUT, script, shell_call
from tmuxagent_scenarios.common import supervised_for

pytestmark = pytest.mark.scenario_b

SESSION = "weather/agent"
STALL = {
    "stall_timeout_seconds": 4,
    "stall_retries_before_notify": 1,
    "cooldown_seconds": 2,
    "interrupt_grace_seconds": 3,
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_hung_model_stream_is_interrupted_retried_alerted_and_cooled_down(  # type: ignore[no-untyped-def]
    provider, agent_under_test, model_server, wecom_mock
) -> None:
    pane, service = agent_under_test(provider, SESSION, settings=STALL, env=wecom_mock.env("webhook"), retry_safe=True)
    first, second = hang("Fetching the forecast"), hang("Fetching the forecast again")
    script(model_server, provider, first, second, text("Recovered and ready."))
    stuck = service.send(SESSION, "fetch the weather forecast")
    after = service.send(SESSION, "say you recovered")

    row = service.wait_result(stuck, timeout=TURN_TIMEOUT)
    assert (row.status, row.exit_code, row.attempts) == ("stalled", None, 2)  # the first turn and one retry
    assert first.hanging and second.hanging
    prompts = [r.last_user_text() for r in model_server.requests(kind="turn", provider=None)]
    assert sum("fetch the weather forecast" in (p or "") for p in prompts) == 2  # the same prompt, twice

    [alert] = wecom_mock.wait_for_messages(1, timeout=15)
    assert "命令卡顿" in alert and SESSION in alert and "fetch the weather forecast" in alert

    nxt = service.wait_result(after, timeout=TURN_TIMEOUT)
    assert (nxt.status, service.metadata(SESSION)["last_command_result"]["reply"]) == (
        "succeeded",
        "Recovered and ready.",
    )
    events = service.audit_events(session=SESSION)
    kinds = [e["event"] for e in events]
    assert kinds.count("stall_detected") == 2 and kinds.count("stall_retry") == 1
    interrupts = [e["detail"] for e in events if e["event"] == "stall_interrupt"]
    assert interrupts == ["sent Escape", "sent Escape"]
    cooldown = next(e for e in events if e["event"] == "cooldown_started")
    until = parse_iso_utc(cooldown["detail"].rsplit(" until ", 1)[1])
    assert parse_iso_utc(nxt.started_at) >= until  # the next prompt waited out the cooldown
    assert service.metrics.value("orchestrator_stall_count_total", session=SESSION) == 2.0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_turn_whose_tool_keeps_printing_is_busy_not_stalled(provider, agent_under_test, model_server) -> None:  # type: ignore[no-untyped-def]
    settings = {**STALL, "stall_timeout_seconds": 2, "approvals": {"allowlist": ["for i in .*"]}}
    pane, service = agent_under_test(provider, SESSION, settings=settings)
    long_run = "for i in $(seq 1 14); do echo building step $i; sleep 0.5; done"
    script(model_server, provider, shell_call(provider, long_run, why="build"), text("Built in 14 steps."))
    row = service.wait_result(service.send(SESSION, "run the long build"), timeout=TURN_TIMEOUT)
    assert row.status == "succeeded" and row.duration_s > 3 * settings["stall_timeout_seconds"]
    assert service.metadata(SESSION)["last_command_result"]["reply"] == "Built in 14 steps."
    assert not service.audit_events(event="stall_detected")
    outputs = [r.output for r in model_server.tool_results()]
    assert any("building step 14" in output for output in outputs), outputs


QUESTION = {
    "questions": [
        {
            "question": "Which city should the weather bot cover?",
            "header": "City",
            "options": [
                {"label": "Berlin", "description": "Germany"},
                {"label": "Lisbon", "description": "Portugal"},
            ],
            "multiSelect": False,
        }
    ]
}


def test_an_agents_question_is_waiting_input_never_a_stall_and_reply_answers_it(  # type: ignore[no-untyped-def]
    agent_under_test, model_server, wecom_mock
) -> None:
    pane, service = agent_under_test(
        "claude", SESSION, settings={**STALL, "stall_timeout_seconds": 1}, env=wecom_mock.env("webhook")
    )
    script(model_server, "claude", tool_call("AskUserQuestion", QUESTION), text("Lisbon it is."))
    command_id = service.send(SESSION, "set up the weather bot")
    wait_until(
        lambda: service.metadata(SESSION).get("state") == "waiting_input", timeout=TURN_TIMEOUT, message="waiting_input"
    )
    assert "Which city should the weather bot cover?" in service.metadata(SESSION)["running"]["question"]
    [alert] = wecom_mock.wait_for_messages(1, timeout=15)
    assert f"需要输入 · {SESSION}" in alert and "Which city" in alert and "Lisbon" in alert
    supervised_for(service, 3, "three stall timeouts pass")
    assert service.command(command_id).status == "running"  # type: ignore[union-attr]
    assert not service.audit_events(event="stall_detected")

    service.cli("reply", SESSION, "--", "Lisbon")
    row = service.wait_result(command_id, timeout=TURN_TIMEOUT)
    assert row.status == "succeeded"
    assert service.metadata(SESSION)["last_command_result"]["reply"] == "Lisbon it is."
    answers = [r.output for r in model_server.tool_results()]
    assert any("Lisbon" in output for output in answers), answers
