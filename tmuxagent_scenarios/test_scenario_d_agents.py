"""Scenario D (需求文档分解) for agent sessions: a requirements document whose steps are prompts
(```prompt blocks, `Prompt:` lines) is decomposed into `task_decomposition` and driven into the
real Claude Code and the real codex, one turn at a time — each prompt sent only after the turn
before it ended — and a turn that fails (an API error) or reports a blocker stops the plan there.
"""

from __future__ import annotations

import hashlib
import textwrap
from datetime import datetime

import pytest

from pytest_tmuxagent.model_server import http_error, text
from pytest_tmuxagent.waiting import wait_until

pytestmark = [pytest.mark.scenario_d, pytest.mark.timeout(180)]

SESSION = "weather/agent"
PROVIDERS = ["claude", "codex"]
DOC = "docs/weather_agent_plan.md"
SCAFFOLD = "Create the weather_bot package with an empty __init__.py file."
FORECAST = 'Write weather_bot/forecast.py with forecast(city) returning "sunny in <city>".'
SUMMARY = "Summarise what you built in one sentence."
PLAN = textwrap.dedent(f"""\
    # Weather agent plan

    ## Step 1: Scaffold
    ```prompt
    {SCAFFOLD}
    ```
    - [ ] `weather_bot/` exists

    ## Step 2: Forecast
    Depends on: 1
    Prompt: {FORECAST}

    ## Step 3: Summary
    Prompt: {SUMMARY}
    """)
PROMPTS = [SCAFFOLD, FORECAST, SUMMARY]
PLAN_TIMEOUT = 100  # three real agent turns


def script(model_server, provider: str, *replies: object) -> None:  # type: ignore[no-untyped-def]
    (model_server.anthropic if provider == "claude" else model_server.openai).script(*replies)


@pytest.fixture
def agent(agent_pane, orchestrator_service, agent_session, model_server, wecom_mock):  # type: ignore[no-untyped-def]
    def start(provider: str):  # type: ignore[no-untyped-def]
        pane = agent_pane(SESSION)
        entry = agent_session(provider, pane, model_server)
        service = orchestrator_service(
            [pane],
            session_overrides={SESSION: dict(entry)},
            settings={"stall_timeout_seconds": 120, "decision": {"enabled": True}, "plan": {"auto_execute": True}},
            env=wecom_mock.env("webhook"),
        )
        return pane, service

    return start


def write_plan(pane) -> str:  # type: ignore[no-untyped-def]
    doc = pane.workdir / DOC
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(PLAN)
    return hashlib.sha256(doc.read_bytes()).hexdigest()


def plan_settled(service, sha: str) -> dict:  # type: ignore[no-untyped-def]
    def settled():  # type: ignore[no-untyped-def]
        plan = service.metadata(SESSION).get("task_decomposition") or {}
        return plan if plan.get("source_sha256") == sha and plan.get("state") in ("completed", "stopped") else None

    return wait_until(settled, timeout=PLAN_TIMEOUT, interval=0.1, message=f"plan of {DOC} to finish or stop")


def first_request_times(model_server) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """When the model server first saw each plan prompt as a turn's user text."""
    seen: dict[str, float] = {}
    for request in model_server.requests(kind="turn"):
        said = " ".join((request.last_user_text() or "").split())
        for prompt in PROMPTS:
            if said == " ".join(prompt.split()):
                seen.setdefault(prompt, request.time)
    return seen


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_d_prompt_steps_run_in_order_one_turn_after_the_other(provider, agent, model_server) -> None:  # type: ignore[no-untyped-def]
    pane, service = agent(provider)
    script(model_server, provider, text("Scaffolded."), text("Forecast written."), text("A tiny weather bot."))
    sha = write_plan(pane)
    service.meta_set(SESSION, "requirements_doc", DOC)
    plan = plan_settled(service, sha)

    assert (plan["state"], plan["generated_by"], plan["progress"]) == ("completed", "markdown", {"done": 3, "total": 3})
    assert [(s["id"], s["kind"], s["commands"]) for s in plan["steps"]] == [
        ("s1", "prompt", [SCAFFOLD]),
        ("s2", "prompt", [FORECAST]),
        ("s3", "prompt", [SUMMARY]),
    ]
    rows = [service.command(s["command_ids"][0]) for s in plan["steps"]]
    assert [(r.status, r.source, r.command) for r in rows] == [("succeeded", "plan", p) for p in PROMPTS]  # type: ignore[union-attr]
    replies = [e["reply"] for e in service.audit_events(event="command_result", session=SESSION)]
    assert replies == ["Scaffolded.", "Forecast written.", "A tiny weather bot."]
    # the model saw the prompts in order, each only after the turn before had ended
    seen = first_request_times(model_server)
    assert list(seen) == PROMPTS
    for i in range(1, len(rows)):
        before, after = rows[i - 1], rows[i]
        assert seen[PROMPTS[i]] >= epoch(before.finished_at)  # type: ignore[union-attr, arg-type]
        assert epoch(after.started_at) >= epoch(before.finished_at)  # type: ignore[union-attr, arg-type]
    assert "plan: 3/3 done (completed" in service.cli("status", SESSION).stdout
    assert not service.metadata(SESSION).get("blockers")


FAILURES = {
    # 400 is not retried by either agent: the turn ends `failed`
    "api-error": (http_error(400, "unsupported parameter: temperature"), "failed"),
    # the turn ends normally, but the agent says it cannot go on
    "blocker-reply": (text("I cannot continue: the weather API needs a key."), "succeeded"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_d_a_failed_turn_stops_the_plan_there(provider, failure, agent, model_server, wecom_mock) -> None:  # type: ignore[no-untyped-def]
    pane, service = agent(provider)
    reply, status = FAILURES[failure]
    script(model_server, provider, text("Scaffolded."), reply, text("should never be asked"))
    sha = write_plan(pane)
    service.meta_set(SESSION, "requirements_doc", DOC)
    plan = plan_settled(service, sha)

    assert plan["state"] == "stopped"
    assert [s["status"] for s in plan["steps"]] == ["succeeded", "failed", "pending"]
    row = service.command(plan["steps"][1]["command_ids"][-1])
    assert row is not None and row.status == status
    assert plan["stopped_reason"].startswith("step s2 failed: prompt “Write weather_bot/forecast.py")
    if failure == "blocker-reply":
        assert plan["stopped_reason"].endswith("agent reported: I cannot continue: the weather API needs a key.")
    assert list(first_request_times(model_server)) == PROMPTS[:2]  # s3 was never sent
    assert "plan: 1/3 done (stopped, failed s2)" in service.cli("status", SESSION).stdout
    blocker = next(b for b in service.metadata(SESSION)["blockers"] if b.startswith("plan step s2"))
    assert blocker.startswith("plan step s2 “Forecast” failed: prompt")
    # decision assist answers the stopped plan as for shell steps
    actions = wait_until(
        lambda: (n := service.metadata(SESSION).get("next_actions")) and blocker in n.get("blockers", []) and n,
        timeout=15,
        message="next_actions for the stopped plan",
    )
    assert "Fix the failed plan step" in [r["title"] for r in actions["recommendations"]]
    assert any(f"下一步建议 · {SESSION}" in m for m in wecom_mock.wait_for_messages(1))
    assert [e["status"] for e in service.audit_events(event="plan_finished", session=SESSION)] == ["failed"]
