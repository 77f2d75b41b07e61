"""Scenario A (命令执行反馈) for agent sessions: the real Claude Code and the real codex in a tmux
pane, launched by the orchestrator with their feedback wired, driven by the scripted model
server. A prompt's turn lands in `last_command_result` with the agent's reply and tool calls —
from the agent's own hooks, notify program and transcript, never from the screen — exactly once,
with the same metrics and schema-valid audit events as a shell command.
"""

from __future__ import annotations

import pytest

from pytest_tmuxagent.model_server import text
from pytest_tmuxagent.waiting import wait_until
from tmuxagent_scenarios.agent_cases import PROVIDERS, SHELL_TOOL, TURN_TIMEOUT, script, shell_call

pytestmark = pytest.mark.scenario_a

SESSION = "weather/agent"


@pytest.fixture
def agent(agent_under_test):  # type: ignore[no-untyped-def]
    """Factory: a started orchestrator supervising one agent session of `provider`."""
    return lambda provider: agent_under_test(provider, SESSION)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_prompt_turn_lands_with_the_agents_reply(provider, agent, model_server) -> None:  # type: ignore[no-untyped-def]
    pane, service = agent(provider)
    script(model_server, provider, text("The weather bot is ready."))
    command_id = service.send(SESSION, "say whether the weather bot is ready")
    row = service.wait_result(command_id, timeout=TURN_TIMEOUT)
    assert (row.status, row.exit_code) == ("succeeded", None)
    last = service.metadata(SESSION)["last_command_result"]
    assert last["command_id"] == command_id and last["command"] == "say whether the weather bot is ready"
    assert (last["status"], last["exit_code"], last["reply"]) == ("succeeded", None, "The weather bot is ready.")
    assert last["tools"] == []
    assert row.output_tail == "The weather bot is ready."
    assert service.metrics.wait_until_value("orchestrator_commands_total", 1.0, session=SESSION, result="succeeded")
    events = wait_until(
        lambda: (found := service.audit_events(session=SESSION)) and found[-1]["event"] == "command_result" and found,
        timeout=10,
        message="the command_result audit line",
    )  # every line schema-validated
    kinds = [e["event"] for e in events if e.get("command_id") == command_id]
    assert kinds == ["command_queued", "command_dispatched", "command_result"]
    assert events[-1]["reply"] == "The weather bot is ready."
    assert service.metadata(SESSION)["state"] == "idle"
    # the session's API keys went to a 0600 launch script, never onto the typed line or the screen
    screen = "\n".join(pane.capture(500))
    assert pane.secrets and not [secret for secret in pane.secrets if secret in screen]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_read_only_tool_is_listed_and_its_output_reaches_the_model(provider, agent, model_server) -> None:  # type: ignore[no-untyped-def]
    pane, service = agent(provider)
    (pane.workdir / "forecast.txt").write_text("sunny\n")
    script(model_server, provider, shell_call(provider, "cat forecast.txt"), text("It will be sunny."))
    row = service.wait_result(service.send(SESSION, "read the forecast file"), timeout=TURN_TIMEOUT)
    assert row.status == "succeeded"
    last = service.metadata(SESSION)["last_command_result"]
    assert last["reply"] == "It will be sunny."
    assert [(t["name"], t.get("command")) for t in last["tools"]] == [(SHELL_TOOL[provider], "cat forecast.txt")]
    outputs = [r.output for r in model_server.tool_results()]
    assert any("sunny" in output for output in outputs), outputs


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_multi_line_unicode_prompt_arrives_whole(provider, agent, model_server) -> None:  # type: ignore[no-untyped-def]
    pane, service = agent(provider)
    prompt = "Plan the 天气 bot:\n1. fetch \"today\" — and 'tomorrow'\n2. report ☀️ $HOME `x`"
    script(model_server, provider, text("planned"))
    row = service.wait_result(service.send(SESSION, prompt), timeout=TURN_TIMEOUT)
    assert row.status == "succeeded"
    assert model_server.last_user_text() is not None
    assert " ".join(model_server.last_user_text().split()) == " ".join(prompt.split())
    assert service.metadata(SESSION)["last_command_result"]["reply"] == "planned"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_two_queued_prompts_run_in_order_one_turn_at_a_time(provider, agent, model_server) -> None:  # type: ignore[no-untyped-def]
    pane, service = agent(provider)
    script(model_server, provider, shell_call(provider, "echo first-tool"), text("first done"), text("second done"))
    first = service.send(SESSION, "do the first thing")
    second = service.send(SESSION, "do the second thing")
    rows = [service.wait_result(i, timeout=TURN_TIMEOUT) for i in (first, second)]
    assert [r.status for r in rows] == ["succeeded", "succeeded"]
    turns = model_server.requests(kind="turn")
    firsts = [i for i, r in enumerate(turns) if "do the first thing" in (r.last_user_text() or "")]
    seconds = [i for i, r in enumerate(turns) if "do the second thing" in (r.last_user_text() or "")]
    assert firsts and seconds and max(firsts) < min(seconds)
    # the second prompt was typed only after the first turn ended
    assert rows[0].finished_at <= rows[1].started_at  # type: ignore[operator]
    # the audit line follows the DB commit of the result: wait for it, then check both in order
    results = wait_until(
        lambda: (found := service.audit_events(event="command_result", session=SESSION)) and len(found) == 2 and found,
        timeout=10,
        message="both command_result audit lines",
    )
    assert [(e["command_id"], e["reply"]) for e in results] == [(first, "first done"), (second, "second done")]


def test_an_agent_session_on_a_pane_running_something_else_types_nothing(
    agent_pane, orchestrator_service, agent_session, model_server
) -> None:  # type: ignore[no-untyped-def]
    pane = agent_pane(SESSION)
    pane.type("python3 -q")
    wait_until(lambda: any(line.startswith(">>>") for line in pane.capture()), timeout=15, message="python REPL")
    entry = agent_session("claude", pane, model_server)
    service = orchestrator_service([pane], session_overrides={SESSION: dict(entry)})
    before = pane.capture()
    command_id = service.send(SESSION, "hello agent")
    wait_until(lambda: service.metadata(SESSION).get("state") == "unsupported", timeout=15, message="unsupported")
    assert "python3" in service.metadata(SESSION)["state_detail"]
    assert service.command(command_id).status == "queued"  # type: ignore[union-attr]
    assert pane.capture() == before
    assert model_server.requests(kind="turn") == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_agent_already_running_without_hooks_is_adopted(
    provider, agent_pane, orchestrator_service, tmuxagent_agent_home, model_server
) -> None:  # type: ignore[no-untyped-def]
    """Started by a person, not by the orchestrator: no hook reports its turns, so they are followed
    on its screen (the documented fallback) — the reply from the screen, no tool list."""
    pane = agent_pane(SESSION)
    home = tmuxagent_agent_home(provider, pane, model_server)
    pane.type(home.launch_line())
    entry = dict(home.session_override())
    entry.pop("launch")  # the session does not launch it: the agent is adopted
    script(model_server, provider, text("Adopted and answering."))
    service = orchestrator_service([pane], session_overrides={SESSION: entry})
    row = service.wait_result(service.send(SESSION, "are you there"), timeout=TURN_TIMEOUT)
    assert (row.status, row.exit_code) == ("succeeded", None)
    last = service.metadata(SESSION)["last_command_result"]
    assert last["reply"] == "Adopted and answering." and last["tools"] == []
    assert model_server.last_user_text() == "are you there"


TRUST_QUESTIONS = ("Do you trust the files in this folder?", "Trust this folder?", "Is this a project you")


@pytest.mark.tmuxagent_live_capable
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_prompt_turn_ends_with_the_agents_reply_embedded_or_live(provider, agent, model_server) -> None:  # type: ignore[no-untyped-def]
    """Needs no scripted reply, so `--tmuxagent-live` runs it against the user's own agent and model
    account (once they opt in to spend tokens): the turn must end, exactly, with a reply naming the
    word asked for. Live, the agent may first ask whether to trust the scratch folder: the test
    answers it as the person would (the orchestrator never does)."""
    pane, service = agent(provider)
    script(model_server, provider, text("ready"))  # the embedded model server's answer; unused live
    command_id = service.send(SESSION, "Reply with exactly one word: ready")

    def ended():  # type: ignore[no-untyped-def]
        screen = " ".join(pane.capture(60))
        if any(question in screen for question in TRUST_QUESTIONS):
            pane.type("", enter=True)
        row = service.command(command_id)
        return row if row is not None and row.status not in ("queued", "running") else None

    row = wait_until(ended, timeout=TURN_TIMEOUT * 2, interval=0.5, message="the turn to end")
    assert (row.status, row.exit_code) == ("succeeded", None)
    assert "ready" in service.metadata(SESSION)["last_command_result"]["reply"].lower()
