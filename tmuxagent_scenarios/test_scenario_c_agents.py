"""Scenario C (决策辅助) for agent sessions: the real Claude Code and the real codex, driven by the
scripted model server. A turn whose reply reports a blocker ("I cannot continue: OPENAI_API_KEY
is not set"), or that ends in an API error, becomes a blocker → `next_actions` (rules, or codex)
→ a "下一步建议" notification; the suggestion for an agent is its next *prompt*, judged by the
safety policy as a prompt, and `tmux-agent approve SESSION ID` queues it as the session's next
turn — which the model server then receives.
"""

from __future__ import annotations

import pytest

from orchestrator.dashboard.state import build_state
from orchestrator.state.snapshot import StateSnapshot
from pytest_tmuxagent.fake_codex import FakeCodex
from pytest_tmuxagent.model_server import http_error, text
from pytest_tmuxagent.waiting import wait_until

pytestmark = pytest.mark.scenario_c

SESSION = "weather/agent"
PROVIDERS = ["claude", "codex"]
TURN_TIMEOUT = 60
KEY_REPLY = "I looked at the weather bot.\nI cannot continue: OPENAI_API_KEY is not set."
KEY_BLOCKER = "agent reported: I cannot continue: OPENAI_API_KEY is not set."
NUDGE_TITLE = "Tell the agent to continue once OPENAI_API_KEY is set"
NUDGE = (
    "OPENAI_API_KEY has been provided. Check that it is set without printing its value, then continue "
    "the task where you stopped."
)


def script(model_server, provider: str, *replies: object) -> None:  # type: ignore[no-untyped-def]
    (model_server.anthropic if provider == "claude" else model_server.openai).script(*replies)


@pytest.fixture
def agent(agent_pane, orchestrator_service, agent_session, model_server, wecom_mock):  # type: ignore[no-untyped-def]
    """Factory: an orchestrator with decision assist on, supervising one agent session of `provider`."""

    def start(provider: str, backend: str = "off", env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        pane = agent_pane(SESSION)
        entry = agent_session(provider, pane, model_server)
        service = orchestrator_service(
            [pane],
            session_overrides={SESSION: dict(entry)},
            settings={
                "stall_timeout_seconds": 120,
                "ai": {"backend": backend},
                # auto_run with an allowlist matching everything: a prompt still never runs by itself
                "decision": {"enabled": True, "auto_run": True, "allowlist": [".*"]},
            },
            env={**wecom_mock.env("webhook"), **(env or {})},
        )
        return pane, service

    return start


def next_actions(service, **match) -> dict:  # type: ignore[no-untyped-def]
    def ready():  # type: ignore[no-untyped-def]
        actions = service.metadata(SESSION).get("next_actions")
        return actions if actions and all(actions.get(k) == v for k, v in match.items()) else None

    return wait_until(ready, timeout=15, message=f"next_actions {match} for {SESSION}")


def turn_texts(model_server) -> list[str]:  # type: ignore[no-untyped-def]
    return [" ".join((r.last_user_text() or "").split()) for r in model_server.requests(kind="turn")]


def approve_and_deliver(service, model_server, rec: dict, timeout: float = TURN_TIMEOUT):  # type: ignore[no-untyped-def]
    """`tmux-agent approve SESSION ID` → the prompt queued (source approved) → its turn ran."""
    out = service.cli("approve", SESSION, rec["id"]).stdout
    command_id = int(out.split("\t", 1)[0])
    assert out.split("\t", 1)[1].strip() == rec["command"]
    row = service.wait_result(command_id, timeout=timeout)
    assert (row.source, row.command) == ("approved", rec["command"])
    assert " ".join(rec["command"].split()) in turn_texts(model_server)  # the agent sent it to the model
    return row


@pytest.mark.parametrize("provider", PROVIDERS)
def test_c_a_reply_reporting_a_blocker_gets_a_next_prompt_that_approve_delivers(
    provider, agent, model_server, wecom_mock
) -> None:  # type: ignore[no-untyped-def]
    pane, service = agent(provider)
    script(model_server, provider, text(KEY_REPLY), text("The key is set; the weather bot answers again."))
    first = service.wait_result(service.send(SESSION, "wire the weather bot to the OpenAI API"), timeout=TURN_TIMEOUT)
    assert first.status == "succeeded"

    actions = next_actions(service, blockers=[KEY_BLOCKER])
    assert actions["source"] == "rules"
    recs = {r["title"]: r for r in actions["recommendations"]}
    assert recs["Provide OPENAI_API_KEY"]["priority"] == "high" and "command" not in recs["Provide OPENAI_API_KEY"]
    nudge = recs[NUDGE_TITLE]
    assert (nudge["command"], nudge["kind"], nudge["policy"]) == (NUDGE, "prompt", "suggested")
    assert "command_id" not in nudge  # a prompt is never auto-run
    assert [e["detail"] for e in service.audit_events(event="blocker_detected", session=SESSION)] == [
        f"agent reply: {KEY_BLOCKER}"
    ]

    [message] = wecom_mock.wait_for_messages(1)
    assert f"下一步建议 · {SESSION}" in message and f"prompt “{NUDGE}”" in message
    assert f"tmux-agent approve {SESSION} {nudge['id']}" in message
    status = service.cli("status", SESSION).stdout
    assert f"prompt “{NUDGE}”" in status and f"tmux-agent approve {SESSION} {nudge['id']}" in status
    # the dashboard's recommendation cards (what /api/state serves)
    [card] = [
        s for s in build_state(StateSnapshot(service.state_db), service.audit_log)["sessions"] if s["name"] == SESSION
    ]
    assert [r["title"] for r in card["next_actions"]["recommendations"]] == [
        r["title"] for r in actions["recommendations"]
    ]
    assert NUDGE in [r["command"] for r in card["next_actions"]["recommendations"]]

    second = approve_and_deliver(service, model_server, nudge)
    assert second.status == "succeeded" and second.started_at >= first.finished_at  # type: ignore[operator]
    assert service.metadata(SESSION)["last_command_result"]["reply"] == "The key is set; the weather bot answers again."
    # the turn ended without the blocker: blockers and advice are gone
    wait_until(
        lambda: not service.metadata(SESSION).get("blockers") and service.metadata(SESSION).get("next_actions") is None,
        timeout=10,
        message="the agent's blocker and its advice cleared after a good turn",
    )
    [approved] = service.audit_events(event="suggestion_approved", session=SESSION)
    assert (approved["command_id"], approved["policy"]) == (second.id, "suggested")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_c_a_turn_ending_in_an_api_error_is_a_blocker_and_its_prompt_can_be_sent_again(
    provider, agent, model_server, wecom_mock
) -> None:  # type: ignore[no-untyped-def]
    pane, service = agent(provider)
    # 400 is not retried by either agent: the turn ends in the API error
    script(
        model_server, provider, http_error(400, "unsupported parameter: temperature"), text("Summary: sunny all week.")
    )
    prompt = "summarise the forecast for the week"
    first = service.wait_result(service.send(SESSION, prompt), timeout=TURN_TIMEOUT)
    assert first.status == "failed"

    blocker = wait_until(
        lambda: [b for b in service.metadata(SESSION).get("blockers", []) if b.startswith("agent turn failed:")],
        timeout=10,
        message="the failed turn's blocker",
    )[0]
    assert blocker.startswith(f"agent turn failed: “{prompt}”")
    actions = next_actions(service, blockers=[blocker])
    assert [r["title"] for r in actions["recommendations"]] == ["Read the agent's error", "Send the prompt again"]
    again = actions["recommendations"][1]
    assert (again["command"], again["kind"], again["policy"]) == (prompt, "prompt", "suggested")
    assert any(f"下一步建议 · {SESSION}" in m for m in wecom_mock.wait_for_messages(1))

    second = approve_and_deliver(service, model_server, again)
    assert second.status == "succeeded"
    assert turn_texts(model_server).count(prompt) >= 2  # the failed prompt, then the approved one
    wait_until(
        lambda: not service.metadata(SESSION).get("blockers"), timeout=10, message="the failed-turn blocker cleared"
    )


CODEX_ADVICE = {
    "summary": "The agent has no OpenAI key.",
    "recommendations": [
        {
            "title": "Ask the agent to check its environment",
            "detail": "Without printing the key.",
            "command": "Check whether OPENAI_API_KEY is set (never print its value) and tell me.",
            "priority": "high",
            "risk": "low",
        },
        {
            "title": "Start over",
            "detail": "Throw everything away.",
            "command": "Run `git reset --hard` and start over.",
            "priority": "medium",
            "risk": "low",
        },
        {
            "title": "Add the key to ~/.env",
            "detail": "Needs a person.",
            "command": None,
            "priority": "critical",
            "risk": "low",
        },
    ],
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_c_codex_advises_the_agents_next_prompt_and_the_safety_policy_judges_it(
    provider, agent, model_server, fake_codex, wecom_mock
) -> None:  # type: ignore[no-untyped-def]
    if not isinstance(fake_codex, FakeCodex):
        pytest.skip("live: needs the scripted answers of the bundled fake codex")
    fake_codex.script([{"kind": "json", "payload": CODEX_ADVICE}])
    pane, service = agent(provider, backend="codex", env={"CODEX_TIMEOUT_SECONDS": "10"})
    script(model_server, provider, text(KEY_REPLY), text("OPENAI_API_KEY is not set in my environment."))
    assert (
        service.wait_result(service.send(SESSION, "wire the weather bot"), timeout=TURN_TIMEOUT).status == "succeeded"
    )

    recs = {r["title"]: r for r in next_actions(service, source="codex")["recommendations"]}
    assert [r["priority"] for r in recs.values()] == ["critical", "high", "medium"]
    ask, reset = recs["Ask the agent to check its environment"], recs["Start over"]
    assert (ask["kind"], ask["policy"]) == ("prompt", "suggested") and "command_id" not in ask
    assert (reset["kind"], reset["policy"]) == ("prompt", "denied")
    [call] = fake_codex.wait_for_calls(1)
    assert f"next prompt to send to the {provider} agent" in call["stdin"] and KEY_BLOCKER in call["stdin"]
    assert "I looked at the weather bot." in call["stdin"]  # the agent's reply is part of the question

    refused = service.cli("approve", SESSION, reset["id"], check=False)
    assert refused.returncode == 2 and "refused" in refused.stderr and "Traceback" not in refused.stderr
    assert approve_and_deliver(service, model_server, ask).status == "succeeded"
    assert "git reset --hard" not in " ".join(turn_texts(model_server))  # the denied prompt never reached the agent
    verdicts = {e["recommendation_id"]: e["policy"] for e in service.audit_events(event="safety_decision")}
    assert verdicts == {ask["id"]: "suggested", reset["id"]: "denied"}
