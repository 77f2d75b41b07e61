"""Plans with prompt steps across a fleet of agent and shell sessions, in-process
(`assist_harness`): one turn at a time, what stops them, and what the decomposition prompt says
about the fleet; and the idle check's cost per round."""

from __future__ import annotations

import pytest

from orchestrator.assist.plan_executor import short
from orchestrator.model import ResultStatus

from .assist_harness import (
    AGENT,
    PLAN,
    RUN_PLANS,
    SESSION,
    Harness,
    write_doc,
)

# plans with prompt steps --------------------------------------------------------------------------
AGENT_PLAN = """\
# Weather agent plan
## Step 1: Scaffold
```prompt
Create the weather_bot package
with an empty __init__.py.
```
## Step 2: Forecast
Prompt: Write weather_bot/forecast.py with a forecast(city) function.
Prompt: Add a test for forecast().
## Step 3: Check in the shell
Session: weather/bot
```bash
make test
```
"""


def write_agent_doc(h: Harness, text: str) -> None:
    (h.workdir / "agent-plan.md").write_text(text)
    h.store.update_metadata(AGENT, {"requirements_doc": "agent-plan.md"})


def drive_fleet(h: Harness, outcome: dict[str, tuple[ResultStatus, str]] | None = None) -> list[tuple[str, str]]:
    """Run the plan across sessions: each queued unit ends as `outcome` says (default: succeeded,
    "Done."); never more than one queued at a time, and only after the one before ended."""
    ran: list[tuple[str, str]] = []
    for _ in range(30):
        h.settle(AGENT)
        queued = [r for s in h.config.sessions for r in h.store.queued(s.name)]
        if not queued:
            break
        assert len(queued) == 1, queued  # one turn (or command) at a time
        [row] = queued
        ran.append((row.session, row.command))
        if row.session == AGENT:
            status, reply = (outcome or {}).get(row.command, ("succeeded", "Done."))
            h.end_turn(row.id, status, reply)
        else:
            h.finish(row.id, 0)
    return ran


SCAFFOLD = "Create the weather_bot package\nwith an empty __init__.py."
FORECAST = "Write weather_bot/forecast.py with a forecast(city) function."
TEST = "Add a test for forecast()."


def test_prompt_steps_go_to_their_agent_one_turn_at_a_time(make) -> None:
    h = make(toml=RUN_PLANS, agents=(AGENT,))
    write_agent_doc(h, AGENT_PLAN)
    assert drive_fleet(h) == [(AGENT, SCAFFOLD), (AGENT, FORECAST), (AGENT, TEST), (SESSION, "make test")]
    plan = h.store.metadata(AGENT)["task_decomposition"]
    assert plan["state"] == "completed" and plan["progress"] == {"done": 3, "total": 3}
    assert [(s.get("kind"), s.get("session")) for s in plan["steps"]] == [
        ("prompt", None),
        ("prompt", None),
        (None, SESSION),
    ]
    queued = [e["detail"] for e in h.events("command_queued")]
    assert queued[:3] == ["plan step s1 prompt 1/1", "plan step s2 prompt 1/2", "plan step s2 prompt 2/2"]
    assert queued[3] == f"plan step s3 command 1/1 (plan of {AGENT})"
    assert [
        e["detail"].endswith(f"queued → {SESSION}") for e in h.events("plan_step") if e.get("status") == "running"
    ] == [
        False,
        False,
        False,
        True,
    ]


@pytest.mark.parametrize(
    "outcome,why",
    [
        (("failed", "API Error: 400 unsupported parameter"), f"prompt “{short(FORECAST)}” failed"),
        (("stalled", ""), f"prompt “{short(FORECAST)}” stalled"),
        (
            ("succeeded", "I cannot continue: the weather API needs a key."),
            f"prompt “{short(FORECAST)}”: agent reported: I cannot continue: the weather API needs a key.",
        ),
    ],
    ids=["failed", "stalled", "reported-blocker"],
)
def test_a_prompt_step_whose_turn_does_not_succeed_stops_the_plan(make, outcome, why: str) -> None:
    h = make(toml=RUN_PLANS, agents=(AGENT,))
    write_agent_doc(h, AGENT_PLAN)
    assert drive_fleet(h, {FORECAST: outcome}) == [(AGENT, SCAFFOLD), (AGENT, FORECAST)]  # not the rest of s2, not s3
    meta = h.store.metadata(AGENT)
    plan = meta["task_decomposition"]
    assert plan["state"] == "stopped" and [s["status"] for s in plan["steps"]] == ["succeeded", "failed", "pending"]
    assert plan["stopped_reason"] == f"step s2 failed: {why}"
    assert f"plan step s2 “Forecast” failed: {why} (agent-plan.md)"[:300] in meta["blockers"]


def test_a_step_that_does_not_fit_its_session_stops_the_plan_before_anything_runs(make) -> None:
    h = make(toml=RUN_PLANS, agents=(AGENT,))
    write_agent_doc(
        h,
        AGENT_PLAN.replace("## Step 2: Forecast\n", "## Step 2: Forecast\n```bash\nmake forecast\n```\n")
        .replace("Prompt: Write", "Write")
        .replace("Prompt: Add", "Add"),
    )
    assert drive_fleet(h) == []
    plan = h.store.metadata(AGENT)["task_decomposition"]
    assert plan["state"] == "stopped" and [s["status"] for s in plan["steps"]] == ["pending", "failed", "pending"]
    assert plan["stopped_reason"].startswith(f"step s2 has shell commands, but {AGENT} is an agent session")

    write_agent_doc(
        h,
        "## Ask the shell\nSession: weather/bot\n```prompt\nhello\n```\n## Elsewhere\nSession: nowhere\n```bash\ntrue\n```\n",
    )
    assert drive_fleet(h) == []
    plan = h.store.metadata(AGENT)["task_decomposition"]
    assert (
        plan["stopped_reason"]
        == f"step s1 has prompts, but {SESSION} is a shell session (prompts go to agent sessions)"
    )
    write_agent_doc(h, "## Elsewhere\nSession: nowhere\n```prompt\nhello\n```\n")
    assert drive_fleet(h) == []
    assert h.store.metadata(AGENT)["task_decomposition"]["stopped_reason"] == (
        "step s1 names session 'nowhere', which is not configured"
    )


def test_a_denied_prompt_step_is_never_sent(make) -> None:
    h = make(toml=RUN_PLANS, agents=(AGENT,))
    write_agent_doc(
        h, "## Reset\nPrompt: Clean the repo with `git reset --hard` and `git clean -fd`.\n## Next\nPrompt: go on\n"
    )
    assert drive_fleet(h) == []
    plan = h.store.metadata(AGENT)["task_decomposition"]
    assert [s["status"] for s in plan["steps"]] == ["denied", "pending"]
    assert plan["stopped_reason"].startswith("step s1 denied by the safety policy: prompt “Clean the repo with")


def test_a_prompt_step_waits_while_its_target_session_is_blocked(make) -> None:
    h = make(toml=RUN_PLANS, agents=(AGENT,))
    (h.workdir / "plan.md").write_text("## Ask the agent\nSession: weather/agent\n```prompt\nsay hi\n```\n")
    h.store.update_metadata(AGENT, {"blocked": True})
    h.store.update_metadata(SESSION, {"requirements_doc": "plan.md"})
    h.settle()
    assert h.store.queued(AGENT) == [] and h.store.metadata(SESSION)["task_decomposition"]["state"] == "pending"
    h.store.update_metadata(AGENT, {"blocked": False})
    h.settle()
    [row] = h.store.queued(AGENT)
    assert (row.command, row.source) == ("say hi", "plan")


def test_ai_decomposition_for_a_fleet_with_agents_says_session_and_kind(make) -> None:
    unknown = {
        "steps": [
            {
                "id": "a",
                "title": "A",
                "commands": ["hi"],
                "depends_on": [],
                "acceptance": [],
                "session": "nope",
                "kind": None,
            }
        ]
    }
    good = {
        "steps": [
            {
                "id": "ask",
                "title": "Ask",
                "commands": ["Write the bot"],
                "depends_on": [],
                "acceptance": [],
                "session": None,
                "kind": None,
            },
            {
                "id": "run",
                "title": "Run",
                "commands": ["make test"],
                "depends_on": ["ask"],
                "acceptance": [],
                "session": SESSION,
                "kind": "command",
            },
        ]
    }
    h = make(unknown, good, toml={"plan": {"auto_execute": False}}, agents=(AGENT,))
    write_agent_doc(h, AGENT_PLAN)
    plan = h.settle(AGENT)["task_decomposition"]
    assert plan["generated_by"] == "markdown" and plan["ai_error"]["kind"] == "schema_mismatch"
    assert "session 'nope'" in plan["ai_error"]["detail"]
    [request] = h.assist.ai.backend.requests
    item = request.schema["properties"]["steps"]["items"]
    assert sorted(item["required"]) == sorted(item["properties"]) and {"session", "kind"} <= set(item["required"])
    assert f"`{AGENT}` (agent claude)" in request.prompt and f"this plan belongs to `{AGENT}`" in request.prompt
    write_agent_doc(h, AGENT_PLAN + "\n")
    plan = h.settle(AGENT)["task_decomposition"]
    assert plan["generated_by"] == "codex"
    # a null kind follows the session: prompts for the agent; a shell step keeps the shape it always had
    assert [(s["id"], s.get("kind"), s.get("session")) for s in plan["steps"]] == [
        ("ask", "prompt", None),
        ("run", None, SESSION),
    ]


def test_a_shell_only_fleet_gets_the_schema_as_shipped(make) -> None:
    from orchestrator.assist.decompose import DECOMPOSITION_SCHEMA

    good = {"steps": [{"id": "only", "title": "Only", "commands": ["make all"], "depends_on": [], "acceptance": []}]}
    h = make(good, toml={"plan": {"auto_execute": False}})
    write_doc(h, PLAN)
    assert h.settle()["task_decomposition"]["generated_by"] == "codex"
    assert h.assist.ai.backend.requests[0].schema is DECOMPOSITION_SCHEMA
    assert "session" not in h.assist.ai.backend.requests[0].prompt


def test_the_idle_check_reads_each_sessions_plan_once_a_round(make, monkeypatch) -> None:
    """`busy()` (the loop's idle check, every round) asks every session whether its plan will
    queue more: inside a round that is the round's shared view of the metadata, parsed once per
    session, not once per question."""
    import orchestrator.state.store as store_module

    h = make(agents=("fleet/claude", "fleet/codex"))
    parsed: list[object] = []
    real = store_module._metadata_dict
    monkeypatch.setattr(store_module, "_metadata_dict", lambda row: parsed.append(row) or real(row))
    with h.store.round():
        for _ in range(5):
            assert not h.assist.busy()
    assert len(parsed) == len(h.config.sessions)
