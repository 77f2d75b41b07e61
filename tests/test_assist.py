"""Decision assist in-process (`assist_harness`): AI next actions and their safety verdicts,
`approve`, blockers from streaks, pane scans and command output, and agent sessions' blockers
and next prompts."""

from __future__ import annotations

import time

import pytest

from orchestrator.adapters.ai_client import AIError
from orchestrator.assist.coordinator import CHECK_SECONDS, status_lines
from orchestrator.assist.decision import approve
from orchestrator.dashboard.state import build_state
from orchestrator.errors import UserError
from orchestrator.events import CommandFinished, EventBus
from orchestrator.state.snapshot import StateSnapshot

from .assist_harness import (
    ADVICE,
    AGENT,
    DECIDE,
    SESSION,
)


# decisions ---------------------------------------------------------------------------------
def test_blockers_get_ai_next_actions_with_safety_verdicts(make) -> None:
    h = make(ADVICE)
    h.store.update_metadata(SESSION, {"blockers": ["missing OPENAI_API_KEY"]})
    actions = h.settle()["next_actions"]
    assert actions["source"] == "codex" and actions["blockers"] == ["missing OPENAI_API_KEY"]
    policies = {r["title"]: (r["policy"], r.get("command_id")) for r in actions["recommendations"]}
    [queued] = [r.id for r in h.store.queued(SESSION)]
    assert policies == {
        "Check the key": ("auto_run", queued),
        "Rotate": ("needs_approval", None),
        "Wipe": ("denied", None),
    }
    assert [r.source for r in h.store.queued(SESSION)] == ["decision"]
    [note] = h.notes
    assert note["title"] == f"下一步建议 · {SESSION}" and "Check the key" in note["body"]
    assert "tmux-agent approve weather/bot" in note["body"] and "queued as #" in note["body"]
    [made] = h.events("decision_made")
    assert made["source"] == "codex" and "error_kind" not in made
    assert sorted(e["policy"] for e in h.events("safety_decision")) == ["auto_run", "denied", "needs_approval"]


def test_answered_blockers_are_not_asked_again_and_same_advice_is_not_renotified(make) -> None:
    h = make(ADVICE)
    h.store.update_metadata(SESSION, {"blockers": ["missing OPENAI_API_KEY"]})
    h.settle()
    h.settle()
    assert len(h.assist.ai.backend.requests) == 1
    h.store.update_metadata(SESSION, {"blockers": ["missing OPENAI_API_KEY", "tests fail"]})
    h.settle()
    assert len(h.assist.ai.backend.requests) == 2
    assert len(h.notes) == 1  # the recommendations did not change
    assert len(h.store.queued(SESSION)) == 1  # an auto-run suggestion is queued once, not per decision


@pytest.mark.parametrize(
    "error", ["timeout", "missing_binary", "exit_nonzero", "empty_output", "not_json", "schema_mismatch"]
)
def test_every_ai_error_falls_back_to_rules(make, error: str) -> None:
    reply = (
        AIError(error, "injected")
        if error not in ("not_json", "schema_mismatch", "empty_output")
        else {"not_json": "no json", "schema_mismatch": {"summary": "x"}, "empty_output": ""}[error]
    )
    h = make(reply)
    h.store.update_metadata(SESSION, {"blockers": ["OPENAI_API_KEY is not set"]})
    actions = h.settle()["next_actions"]
    assert actions["source"] == "rules" and actions["ai_error"]["kind"] == error
    assert actions["recommendations"][0]["title"] == "Provide OPENAI_API_KEY"
    assert h.events("decision_made")[0]["error_kind"] == error
    assert (
        h.metrics.registry.get_sample_value(
            "orchestrator_decision_assist_errors_total", {"session": SESSION, "backend": "codex", "kind": error}
        )
        == 1
    )


def test_ai_off_and_the_notification_threshold(make) -> None:
    h = make(toml={"ai": {"backend": "off"}, "decision": {"notify_min_priority": "critical"}})
    h.store.update_metadata(SESSION, {"blockers": "something odd happened"})  # a bare string is accepted
    actions = h.settle()["next_actions"]
    assert actions["source"] == "rules" and "ai_error" not in actions
    assert actions["recommendations"][0]["title"].startswith("Investigate")
    assert h.notes == []  # top priority medium < critical


def test_a_hanging_ai_never_holds_up_the_loop(make) -> None:
    h = make(ADVICE, delay=30)
    h.store.update_metadata(SESSION, {"blockers": ["missing OPENAI_API_KEY"]})
    started = time.monotonic()
    for _ in range(20):
        h.assist.check(h.session)
        h.assist.jobs.drain()
    assert time.monotonic() - started < 1.0
    assert h.assist.busy() and len(h.assist.ai.backend.requests) == 1  # one call in flight, not twenty
    h.assist.ai.backend.release.set()
    assert h.settle()["next_actions"]["source"] == "codex"


# approve --------------------------------------------------------------------------------------
def test_approve_queues_allowed_suggestions_and_refuses_denied_ones(make) -> None:
    h = make(ADVICE)
    h.store.update_metadata(SESSION, {"blockers": ["missing OPENAI_API_KEY"]})
    recs = {r["title"]: r for r in h.settle()["next_actions"]["recommendations"]}
    with pytest.raises(UserError, match="no suggestion 'nope'"):
        approve(h.config, h.store, h.audit, SESSION, "nope")
    with pytest.raises(UserError, match="refused"):
        approve(h.config, h.store, h.audit, SESSION, recs["Wipe"]["id"])
    command_id, command = approve(h.config, h.store, h.audit, SESSION, recs["Rotate"]["id"])
    assert command == "echo rotate" and h.store.command(command_id).source == "approved"
    assert approve(h.config, h.store, h.audit, SESSION, recs["Rotate"]["id"])[0] == command_id  # not twice
    marked = {r["id"]: r for r in h.store.metadata(SESSION)["next_actions"]["recommendations"]}
    assert marked[recs["Rotate"]["id"]]["command_id"] == command_id
    assert [e["recommendation_id"] for e in h.events("suggestion_refused")] == [recs["Wipe"]["id"]]
    assert [e["command_id"] for e in h.events("suggestion_approved")] == [command_id]
    assert "rm -rf /" not in [r.command for r in h.store.commands(SESSION, limit=50)]


# blockers ---------------------------------------------------------------------------------------
def test_failure_streak_blocker_follows_the_block(make) -> None:
    h = make(toml={"ai": {"backend": "off"}})
    h.store.update_metadata(
        SESSION,
        {
            "blocked": True,
            "failure_streak": 3,
            "blockers": ["mine"],
            "last_command_result": {"command": "make", "exit_code": 2},
        },
    )
    blockers = h.settle()["blockers"]
    assert blockers == ["mine", "failure streak: 3 consecutive failures; last `make` exit 2"]
    h.store.update_metadata(SESSION, {"blocked": False})
    assert h.settle()["blockers"] == ["mine"]


def test_advice_for_a_failure_streak_is_cleared_after_unblock_and_successes(make) -> None:
    h = make(toml={"ai": {"backend": "off"}})
    h.store.update_metadata(
        SESSION,
        {"blocked": True, "failure_streak": 3, "last_command_result": {"command": "make", "exit_code": 2}},
    )
    advice = h.settle()["next_actions"]
    assert advice["blockers"] == ["failure streak: 3 consecutive failures; last `make` exit 2"]
    assert advice["recommendations"]

    h.store.update_metadata(SESSION, {"blocked": False, "failure_streak": 0})  # what `tmux-agent unblock` writes
    for _ in range(2):
        h.finish(h.store.enqueue(SESSION, "true"), 0)
        meta = h.settle()
    assert meta["blockers"] == [] and meta["next_actions"] is None
    [cleared] = [e for e in h.events("decision_made") if "cleared" in e.get("detail", "")]
    assert cleared["source"] == "rules" and cleared["detail"].startswith("blockers cleared; next_actions removed")
    assert status_lines(SESSION, meta) == []  # what `tmux-agent status` prints about advice: nothing
    [shown] = build_state(StateSnapshot(h.config.state_db), h.config.audit_log)["sessions"]
    assert shown["next_actions"] is None  # and the dashboard shows none
    h.settle()
    assert len(h.events("decision_made")) == 2  # cleared once, not on every look


def test_advice_made_while_its_blockers_went_away_is_dropped(make) -> None:
    h = make(ADVICE, delay=30)
    h.store.update_metadata(SESSION, {"blockers": ["missing OPENAI_API_KEY"]})
    h.assist.check(h.session)  # the AI is asked and thinks
    h.store.update_metadata(SESSION, {"blockers": []})
    h.assist.ai.backend.release.set()
    meta = h.settle()
    assert meta.get("next_actions") is None and h.store.queued(SESSION) == [] and h.notes == []


def test_pane_scan_sees_only_new_settled_lines(make) -> None:
    h = make(toml={"ai": {"backend": "off"}, "decision": {"pane_scan_seconds": 0.001}})
    watch = h.assist.blockers
    h.panes.lines = ["Error: OPENAI_API_KEY is not set", "$ "]  # before the first look: old news
    assert watch.scan_pane(SESSION) == []
    h.panes.lines += ["$ ./run", "fatal: missing API key for weather servi"]  # still being written
    h.clock.advance(0.01)
    assert watch.scan_pane(SESSION) == []
    h.panes.lines[-1] = "fatal: missing API key for weather service"
    h.clock.advance(0.01)
    assert watch.scan_pane(SESSION) == []  # the cursor line has to stay the same for one look
    h.clock.advance(0.01)
    assert watch.scan_pane(SESSION) == ["fatal: missing API key for weather service"]
    assert watch.from_output(SESSION, "ok\nfatal: missing API key for weather service") == []  # known already


def test_a_command_finished_on_the_bus_adds_a_blocker_from_its_output_tail(make) -> None:
    h = make(toml={"ai": {"backend": "off"}})
    bus = EventBus(raise_errors=True)
    h.assist.subscribe(bus)
    command_id = h.store.enqueue(SESSION, "./run")
    h.finish(command_id, 1)
    row = h.store.command(command_id)
    assert row is not None
    tail = "starting\nError: WEATHER_API_KEY is not set\nbye"
    bus.publish(CommandFinished(session=SESSION, row=row, result=h.result(1, tail)))
    assert h.store.metadata(SESSION)["blockers"] == ["Error: WEATHER_API_KEY is not set"]
    [found] = h.events("blocker_detected")
    assert found["detail"] == "command output: Error: WEATHER_API_KEY is not set"
    bus.publish(CommandFinished(session=SESSION, row=row, result=h.result(0, "all good")))
    assert h.store.metadata(SESSION)["blockers"] == ["Error: WEATHER_API_KEY is not set"]  # nothing new


def test_tick_checks_every_session_at_most_every_check_interval(make) -> None:
    h = make(toml={"ai": {"backend": "off"}, "decision": {"pane_scan_seconds": 0.001}})
    h.panes.lines = ["$ "]
    h.assist.tick()
    assert h.panes.captures == 1
    h.assist.tick()  # no time has passed: no second look
    assert h.panes.captures == 1
    h.clock.advance(CHECK_SECONDS)
    h.assist.tick()
    assert h.panes.captures == 2


def test_a_session_without_a_known_pane_is_not_scanned(make) -> None:
    h = make(toml={"ai": {"backend": "off"}, "decision": {"pane_scan_seconds": 0.001}})
    h.panes.known.clear()
    h.panes.lines = ["fatal: missing API key"]
    assert h.assist.blockers.scan_pane(SESSION) == []
    assert h.panes.captures == 0 and "blockers" not in h.store.metadata(SESSION)


# agent sessions: blockers from turns, prompts as suggestions -----------------------------------------
OFF = {"ai": {"backend": "off"}, "decision": {"auto_run": True, "allowlist": [".*"]}}
KEY_REPLY = "Looked at the bot.\nI cannot continue: OPENAI_API_KEY is not set."
KEY_BLOCKER = "agent reported: I cannot continue: OPENAI_API_KEY is not set."


def test_an_agent_reply_reporting_a_blocker_gets_a_next_prompt_that_approve_queues(make) -> None:
    h = make(toml=OFF, agents=(AGENT,))
    h.turn(AGENT, "wire the weather API", reply=KEY_REPLY)
    assert h.store.metadata(AGENT)["blockers"] == [KEY_BLOCKER]
    assert [e["detail"] for e in h.events("blocker_detected")] == [f"agent reply: {KEY_BLOCKER}"]
    actions = h.settle(AGENT)["next_actions"]
    assert actions["source"] == "rules" and actions["blockers"] == [KEY_BLOCKER]
    recs = {r["title"]: r for r in actions["recommendations"]}
    assert "command" not in recs["Provide OPENAI_API_KEY"]
    nudge = recs["Tell the agent to continue once OPENAI_API_KEY is set"]
    # a prompt, never auto-run, even with auto_run on and an allowlist matching everything
    assert (nudge["kind"], nudge["policy"]) == ("prompt", "suggested") and "command_id" not in nudge
    assert nudge["command"].startswith("OPENAI_API_KEY has been provided.")
    assert h.store.queued(AGENT) == []
    [note] = h.notes
    assert note["title"] == f"下一步建议 · {AGENT}" and f"prompt “{nudge['command']}”" in note["body"]
    assert f"tmux-agent approve {AGENT} {nudge['id']}" in note["body"]
    assert any(f"prompt “{nudge['command']}”" in line for line in status_lines(AGENT, h.store.metadata(AGENT)))
    [shown] = [
        s for s in build_state(StateSnapshot(h.config.state_db), h.config.audit_log)["sessions"] if s["name"] == AGENT
    ]
    assert nudge["command"] in [r["command"] for r in shown["next_actions"]["recommendations"]]  # the dashboard card

    command_id, prompt = approve(h.config, h.store, h.audit, AGENT, nudge["id"])
    [queued] = h.store.queued(AGENT)
    assert (queued.id, queued.command, queued.source, prompt) == (
        command_id,
        nudge["command"],
        "approved",
        nudge["command"],
    )
    [approved] = h.events("suggestion_approved")
    assert approved["policy"] == "suggested" and approved["command_id"] == command_id

    # the approved prompt's turn ends without the blocker: the agent moved on, so do blockers and advice
    h.end_turn(command_id, reply="The key is set; the bot answers again.")
    meta = h.settle(AGENT)
    assert meta["blockers"] == [] and meta["next_actions"] is None


def test_a_failed_agent_turn_is_a_blocker_whose_prompt_can_be_sent_again(make) -> None:
    h = make(toml=OFF, agents=(AGENT,))
    h.turn(AGENT, "summarise the forecast", status="failed", reply="API Error: 400 unsupported parameter")
    [blocker] = h.store.metadata(AGENT)["blockers"]
    assert blocker == "agent turn failed: “summarise the forecast”: API Error: 400 unsupported parameter"
    assert h.events("blocker_detected")[0]["detail"].startswith("agent turn: agent turn failed:")
    recs = h.settle(AGENT)["next_actions"]["recommendations"]
    assert [r["title"] for r in recs] == ["Read the agent's error", "Send the prompt again"]
    again = recs[1]
    assert (again["command"], again["kind"], again["policy"]) == ("summarise the forecast", "prompt", "suggested")
    command_id, _ = approve(h.config, h.store, h.audit, AGENT, again["id"])
    assert h.store.command(command_id).command == "summarise the forecast"

    # another failure replaces the blocker (one per session, the latest); a stalled turn changes nothing
    h.end_turn(command_id, status="failed", reply="API Error: 529 overloaded")
    assert h.store.metadata(AGENT)["blockers"] == [
        "agent turn failed: “summarise the forecast”: API Error: 529 overloaded"
    ]
    h.turn(AGENT, "try something else", status="stalled", reply="")
    assert len(h.store.metadata(AGENT)["blockers"]) == 1
    h.turn(AGENT, "try once more", reply="Done, the summary is in forecast.md.")
    assert h.store.metadata(AGENT)["blockers"] == []


def test_only_an_agents_own_report_is_a_blocker_and_its_pane_is_not_scanned(make) -> None:
    h = make(toml={"ai": {"backend": "off"}, "decision": {"pane_scan_seconds": 0.001}}, agents=(AGENT,))
    h.store.update_metadata(AGENT, {"blockers": ["set by a person"]})
    # a coding agent talks about code that checks keys: that is no blocker (the built-in key patterns are for program output)
    h.turn(AGENT, "add a key check", reply="Added a check that raises when OPENAI_API_KEY is missing.")
    h.turn(AGENT, "deploy", reply="Blocker: the staging server refuses SSH.\nI am stuck until someone opens port 22.")
    assert h.store.metadata(AGENT)["blockers"] == [
        "set by a person",
        "agent reported: I am stuck until someone opens port 22.",
        "agent reported: Blocker: the staging server refuses SSH.",
    ]
    h.panes.lines = ["● I cannot continue: OPENAI_API_KEY is not set."]
    for _ in range(3):
        h.clock.advance(0.01)
        assert h.assist.blockers.scan_pane(AGENT) == []
    assert h.panes.captures == 0
    h.turn(AGENT, "deploy again", reply="Deployed.")
    assert h.store.metadata(AGENT)["blockers"] == ["set by a person"]  # a person's blockers stay


def test_the_ai_is_told_it_advises_an_agent_and_its_prompts_are_judged_as_prompts(make) -> None:
    advice = {
        "summary": "s",
        "recommendations": [
            {
                "title": "Continue",
                "detail": "",
                "command": "The key is set now; continue.",
                "priority": "high",
                "risk": "low",
            },
            {
                "title": "Force it",
                "detail": "",
                "command": "Run `git push --force` to publish",
                "priority": "medium",
                "risk": "low",
            },
            {
                "title": "Clean up",
                "detail": "",
                "command": "please rm -rf ~ and start over",
                "priority": "low",
                "risk": "low",
            },
            {"title": "Install", "detail": "", "command": "use sudo apt install jq", "priority": "low", "risk": "low"},
        ],
    }
    h = make(advice, toml=DECIDE | {"decision": {"auto_run": True, "allowlist": [".*"]}}, agents=(AGENT,))
    h.turn(AGENT, "wire the weather API", reply=KEY_REPLY)
    recs = {r["title"]: r for r in h.settle(AGENT)["next_actions"]["recommendations"]}
    assert {t: (r["kind"], r["policy"]) for t, r in recs.items()} == {
        "Continue": ("prompt", "suggested"),
        "Force it": ("prompt", "denied"),
        "Clean up": ("prompt", "denied"),
        "Install": ("prompt", "needs_approval"),
    }
    assert h.store.queued(AGENT) == []
    [request] = h.assist.ai.backend.requests
    assert "next prompt to send to the claude agent" in request.prompt and KEY_REPLY.splitlines()[0] in request.prompt
    assert 'Last prompt: "wire the weather API" -> succeeded.' in request.prompt
    with pytest.raises(UserError, match="refused"):
        approve(h.config, h.store, h.audit, AGENT, recs["Clean up"]["id"])
    assert approve(h.config, h.store, h.audit, AGENT, recs["Install"]["id"])[1] == "use sudo apt install jq"


def test_a_failure_streak_of_an_agent_names_its_last_prompt(make) -> None:
    h = make(toml={"ai": {"backend": "off"}}, agents=(AGENT,))
    h.store.update_metadata(
        AGENT,
        {"blocked": True, "failure_streak": 3, "last_command_result": {"command": "fix it", "status": "failed"}},
    )
    assert h.settle(AGENT)["blockers"] == ["failure streak: 3 consecutive failures; last prompt `fix it` failed"]
