"""`tmux-agent send` keeps the user's argv exactly and warns when no orchestrator will run it;
`tmux-agent reply` answers a session that waits for input; `tmux-agent status` shows each
session's state, its running command and the orchestrator's heartbeat, and never a traceback."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from orchestrator.adapters.wecom_errcodes import PERMANENT_ERRCODES
from orchestrator.clock import iso_utc, parse_iso_utc
from orchestrator.model import CommandResult, ToolCall
from pytest_tmuxagent.service import OrchestratorService, OrchestratorServiceFactory
from pytest_tmuxagent.tmux_server import AgentPaneFactory
from pytest_tmuxagent.waiting import wait_until
from pytest_tmuxagent.wecom_mock import WEBHOOK_PATH, WeComMock

SESSION = "weather/bot"
WARNING = "tmux-agent: warning: no orchestrator is running for weather/bot"


@pytest.fixture
def idle(agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory) -> OrchestratorService:
    """A config with a real pane, and no orchestrator running."""
    return orchestrator_service([agent_pane(SESSION)], start=False)


def send(service: OrchestratorService, *words: str) -> tuple[int, str]:
    result = service.cli("send", SESSION, "--", *words)
    return int(result.stdout.strip()), result.stderr


def queued_commands(service: OrchestratorService) -> list[str]:
    store = service.store()
    try:
        return [row.command for row in store.queued(SESSION)]
    finally:
        store.close()


# send ------------------------------------------------------------------------------------------
def test_several_words_reach_the_shell_as_the_user_typed_them(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory
) -> None:
    service = orchestrator_service([agent_pane(SESSION)])
    wait_until(lambda: service.metadata(SESSION).get("orchestrator_heartbeat"), timeout=15)
    command_id, stderr = send(service, "echo", "two  spaces", "and $HOME")
    assert stderr == ""  # an orchestrator is running: no warning
    row = service.wait_result(command_id)
    assert row.command == "echo 'two  spaces' 'and $HOME'"
    assert (row.status, row.output_tail) == ("succeeded", "two  spaces and $HOME")

    one = service.wait_result(send(service, "echo a && echo 'b  c'")[0])
    assert one.command == "echo a && echo 'b  c'" and one.output_tail == "a\nb  c"  # one word: as it is
    assert service.wait_result(send(service, "git", "diff", "--", "x")[0]).command == "git diff -- x"


def test_one_word_is_queued_as_it_is(idle: OrchestratorService) -> None:
    send(idle, "make test")
    send(idle, "printf", "%s\n", "it's")
    assert queued_commands(idle) == ["make test", "printf '%s\n' 'it'\"'\"'s'"]


@pytest.mark.parametrize("words", [(), ("",), ("   ",), ("", " \t")])
def test_an_empty_command_is_refused(idle: OrchestratorService, words: tuple[str, ...]) -> None:
    result = idle.cli("send", SESSION, "--", *words, check=False)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("tmux-agent: error: key 'COMMAND': ") and "Traceback" not in line
    assert queued_commands(idle) == []


def test_without_an_orchestrator_send_still_queues_and_warns_once(idle: OrchestratorService) -> None:
    command_id, stderr = send(idle, "make test")
    assert command_id > 0 and queued_commands(idle) == ["make test"]
    assert stderr.splitlines() == [
        f"{WARNING} (last heartbeat: never); the command waits in the queue until one starts (tmux-agent run)"
    ]


def test_a_stale_heartbeat_is_no_orchestrator(idle: OrchestratorService) -> None:
    old = iso_utc(time.time() - 120)
    idle.meta_set(SESSION, "orchestrator_heartbeat", old)
    [line] = send(idle, "true")[1].splitlines()
    assert line.startswith(f"{WARNING} (last heartbeat: {old}, 2m0") and "waits in the queue" in line
    idle.meta_set(SESSION, "orchestrator_heartbeat", iso_utc(time.time() - 1))
    assert send(idle, "true")[1] == ""  # fresh: no warning


# reply -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("state", "shown"), [(None, "in no reported state"), ("working", "working"), (3, "in no")])
def test_reply_is_refused_unless_the_session_waits_for_input(idle: OrchestratorService, state: Any, shown: str) -> None:
    if state is not None:
        store_raw(idle, SESSION, {"state": state})
    result = idle.cli("reply", SESSION, "--", "yes", check=False)
    assert result.returncode == 2
    *warnings, line = result.stderr.splitlines()  # a stored state that does not fit is warned about
    assert all("treated as absent" in w for w in warnings)
    assert SESSION in line and f"is {shown}" in line and "not waiting_input" in line
    assert "pending_reply" not in idle.metadata(SESSION)


def test_reply_queues_the_text_for_the_orchestrator(idle: OrchestratorService) -> None:
    idle.meta_set(SESSION, "state", "waiting_input")
    before = time.time()
    result = idle.cli("reply", SESSION, "--", "yes", "it's me")
    assert result.stdout.strip() == f"reply queued for {SESSION}"
    assert result.stderr.startswith(WARNING) and "the reply waits" in result.stderr  # nobody runs to type it
    pending = idle.metadata(SESSION)["pending_reply"]
    assert pending["text"] == "yes 'it'\"'\"'s me'"
    assert before - 1 <= parse_iso_utc(pending["queued_at"]) <= time.time() + 1
    [audited] = idle.audit_events(event="reply_queued")  # validated against the audit schema
    assert audited["session"] == SESSION and "it's me" not in json.dumps(audited)
    assert idle.cli("reply", SESSION, "--", " ", check=False).returncode == 2


# status ----------------------------------------------------------------------------------------
def store_raw(service: OrchestratorService, session: str, changes: dict[str, Any]) -> None:
    """Write metadata straight into the DB, around `meta set`'s schema check (as an older version
    or a hand-edited DB would): readers must cope with whatever is stored."""
    store = service.store()
    try:
        store.ensure_session(session, "")
        store.update_metadata(session, changes)
    finally:
        store.close()


def status_json(service: OrchestratorService) -> dict[str, Any]:
    [session] = service.status()["sessions"]
    return dict(session)


def test_status_shows_state_running_command_output_and_question(idle: OrchestratorService) -> None:
    store = idle.store()
    try:
        store.ensure_session(SESSION, idle.panes[0].target)
        command_id = store.enqueue(SESSION, "read -p 'Deploy? [y/N] ' answer")
        started = iso_utc(time.time() - 42)
        assert store.mark_running(command_id, started)
        store.update_metadata(
            SESSION,
            {
                "state": "waiting_input",
                "state_detail": "a y/N prompt",
                "running": {
                    "command_id": command_id,
                    "command": "read -p 'Deploy? [y/N] ' answer",
                    "started_at": started,
                    "output_tail": "building\nDeploy? [y/N] ",
                    "question": "Deploy? [y/N]",
                },
                "orchestrator_heartbeat": iso_utc(time.time() - 3),
            },
        )
    finally:
        store.close()
    session = status_json(idle)
    for key in ("name", "target", "metadata", "queue_depth", "queued", "recent", "plan_progress"):
        assert key in session  # every key status had before
    assert (session["state"], session["state_detail"], session["question"]) == (
        "waiting_input",
        "a y/N prompt",
        "Deploy? [y/N]",
    )
    running = session["running"]
    assert (running["id"], running["command"], running["started_at"]) == (
        command_id,
        session["recent"][0]["command"],
        started,
    )
    assert 42 <= running["elapsed_s"] < 60 and running["output_tail"] == "building\nDeploy? [y/N] "
    assert session["heartbeat"]["at"] and session["heartbeat"]["fresh"] is True
    assert 3 <= session["heartbeat"]["age_s"] < 10

    text = idle.cli("status").stdout
    assert "  state: waiting_input — a y/N prompt" in text
    elapsed = re.search(rf"  running: #{command_id} for (\d+)s", text)  # started 42 s before status ran
    assert elapsed is not None and 42 <= int(elapsed.group(1)) < 90 and "    | building" in text
    assert "  question: Deploy? [y/N]" in text and f"tmux-agent reply {SESSION} -- TEXT" in text
    # written 3 s before status ran; status is a fresh process, slow on a loaded machine
    ago = re.search(r"  orchestrator heartbeat (\d+)s ago", text)
    assert ago is not None and 3 <= int(ago.group(1)) < 15


def test_status_says_when_the_heartbeat_is_stale_or_missing(idle: OrchestratorService) -> None:
    idle.cli("send", "--no-check", SESSION, "--", "true")
    assert "  no orchestrator heartbeat" in idle.cli("status").stdout
    assert status_json(idle)["heartbeat"] == {"at": None, "age_s": None, "fresh": False}
    assert status_json(idle)["running"] is None and status_json(idle)["state"] is None
    old = iso_utc(time.time() - 3700)
    idle.meta_set(SESSION, "orchestrator_heartbeat", old)
    assert f"  STALE (last heartbeat {old}, 1h01m ago)" in idle.cli("status").stdout
    assert status_json(idle)["heartbeat"]["fresh"] is False


def test_odd_metadata_is_shown_as_absent_never_a_traceback(idle: OrchestratorService) -> None:
    odd = {
        "state": 5,
        "state_detail": ["x"],
        "running": "busy",
        "orchestrator_heartbeat": "yesterday",
        "last_command_result": "oops",
        "next_actions": {"recommendations": ["not an object", {"id": "a1", "title": "t"}]},
        "task_decomposition": {"steps": "none"},
        "blocked": "yes",
    }
    store_raw(idle, SESSION, odd)
    store = idle.store()
    try:
        command_id = store.enqueue(SESSION, "sleep 1")
        assert store.mark_running(command_id, "not a time")
    finally:
        store.close()
    text = idle.cli("status")
    assert text.returncode == 0 and "Traceback" not in text.stderr
    # one warning per stored value that does not fit, naming the key and how to fix it
    warned = text.stderr.splitlines()
    assert warned and all("treated as absent" in line and "tmux-agent meta set" in line for line in warned)
    assert "  state: (not reported)" in text.stdout and "  no orchestrator heartbeat" in text.stdout
    assert f"  running: #{command_id}  sleep 1" in text.stdout
    assert "a1 t" not in text.stdout  # next_actions does not fit its schema: absent, not half shown
    session = status_json(idle)
    assert (session["state"], session["state_detail"], session["question"]) == (None, None, None)
    assert session["running"]["elapsed_s"] is None and session["running"]["output_tail"] is None
    assert session["heartbeat"] == {"at": None, "age_s": None, "fresh": False}


def test_status_of_a_real_running_command(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory
) -> None:
    # a silent `sleep` is a stall after the test default's few seconds: this one must stay running
    service = orchestrator_service([agent_pane(SESSION)], settings={"stall_timeout_seconds": 120})
    command_id = service.send(SESSION, "sleep 30")
    wait_until(lambda: (row := service.command(command_id)) is not None and row.status == "running", timeout=15)
    # each status is a fresh CLI process: seconds apiece on a loaded machine
    session = wait_until(lambda: (s := status_json(service))["heartbeat"]["fresh"] and s["running"] and s, timeout=60)
    assert session["running"]["id"] == command_id and session["running"]["command"] == "sleep 30"
    assert session["running"]["elapsed_s"] >= 0
    text = service.cli("status").stdout
    assert f"  running: #{command_id} for " in text and "  orchestrator heartbeat " in text


# agent sessions --------------------------------------------------------------------------------
AGENT = "weather/agent"
REPLY = "Here is what I found:\n" + "the README explains the weather bot. " * 12 + "END"


@pytest.fixture
def agents(agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory) -> OrchestratorService:
    """A shell session and a codex agent session, and no orchestrator running."""
    return orchestrator_service(
        [agent_pane(SESSION), agent_pane(AGENT)],
        session_overrides={AGENT: {"kind": "agent", "provider": "codex", "launch": "codex"}},
        start=False,
    )


def sessions_json(service: OrchestratorService) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in service.status()["sessions"]}


def agent_turn_done(service: OrchestratorService, prompt: str) -> int:
    store = service.store()
    try:
        store.ensure_session(AGENT, service.panes[1].target)
        command_id = store.enqueue(AGENT, prompt)
        assert store.mark_running(command_id, iso_utc(time.time() - 30))
        tools: tuple[ToolCall, ...] = (
            {"name": "exec_command", "command": "ls -la", "input": {"cmd": "ls -la"}},
            {"name": "update_plan", "input": {"plan": []}},
        )
        result = CommandResult(
            None, "succeeded", iso_utc(time.time() - 30), iso_utc(time.time() - 20), 10.0, "", REPLY, tools
        )
        assert store.finish(command_id, result)
    finally:
        store.close()
    return command_id


def test_status_of_an_agent_shows_provider_prompt_reply_tools_and_question(agents: OrchestratorService) -> None:
    done = agent_turn_done(agents, "List the files\nand explain them")
    store = agents.store()
    try:
        running_id = store.enqueue(AGENT, "Deploy to which environment?")
        started = iso_utc(time.time() - 75)
        assert store.mark_running(running_id, started)
        store.update_metadata(
            AGENT,
            {
                "state": "waiting_input",
                "state_detail": "codex asks a question",
                "running": {
                    "command_id": running_id,
                    "command": "Deploy to which environment?",
                    "started_at": started,
                    "question": "staging or prod?",
                },
            },
        )
    finally:
        store.close()
    sessions = sessions_json(agents)
    agent = sessions[AGENT]
    for key in ("name", "target", "metadata", "queue_depth", "queued", "recent", "plan_progress", "state"):
        assert key in agent  # every key status had before
    for key in ("state_detail", "question", "running", "heartbeat"):
        assert key in agent
    assert (agent["kind"], agent["provider"], agent["state"]) == ("agent", "codex", "waiting_input")
    assert agent["running"]["id"] == running_id and agent["running"]["command"] == "Deploy to which environment?"
    assert 75 <= agent["running"]["elapsed_s"] < 140  # started 75 s before; the CLI is slow under load
    assert agent["question"] == "staging or prod?"
    assert agent["last_reply"] == REPLY  # whole in --json
    assert agent["last_tools"] == [
        {"name": "exec_command", "command": "ls -la"},
        {"name": "update_plan", "command": None},
    ]
    assert agent["metadata"]["last_command_result"]["exit_code"] is None
    shell = sessions[SESSION]
    assert (shell["kind"], shell["provider"], shell["last_reply"], shell["last_tools"]) == ("shell", None, None, None)

    text = agents.cli("status", AGENT).stdout
    assert "  kind: agent  provider: codex" in text
    assert "  state: waiting_input — codex asks a question" in text
    assert (
        re.search(rf"  prompt: #{running_id} for (1m[1-5]\ds|2m\d+s)", text) and "Deploy to which environment?" in text
    )
    assert "  question: staging or prod?  (answer: tmux-agent reply weather/agent -- TEXT)" in text
    assert f"  last: #{done} succeeded 10.0s  List the files and explain them" in text
    [reply] = [line for line in text.splitlines() if line.startswith("  reply: ")]
    assert reply.startswith("  reply: Here is what I found: the README") and reply.endswith("…")
    assert len(reply) <= len("  reply: ") + 200 and "END" not in reply  # shortened in the text
    assert "  tools: exec_command: ls -la; update_plan" in text
    assert "exit=" not in text
    assert "  kind: shell" in agents.cli("status", SESSION).stdout


def test_an_agent_without_a_finished_turn_and_odd_results(agents: OrchestratorService) -> None:
    agents.meta_set(AGENT, "state", "idle")
    agent = sessions_json(agents)[AGENT]
    assert (agent["last_reply"], agent["last_tools"], agent["running"], agent["question"]) == (None, None, None, None)
    text = agents.cli("status", AGENT).stdout
    assert "  kind: agent  provider: codex" in text and "reply:" not in text and "tools:" not in text
    store_raw(
        agents,
        AGENT,
        {"last_command_result": {"command_id": 1, "command": "p", "reply": 5, "tools": ["x", {"name": 3}]}},
    )
    agent = sessions_json(agents)[AGENT]
    assert agent["last_reply"] is None and agent["last_tools"] is None  # a result that does not fit is absent
    agents.meta_set(AGENT, "last_command_result", {"command_id": 2, "command": "p", "reply": "", "tools": []})
    result = agents.cli("status", AGENT)
    assert result.returncode == 0 and "  reply: (empty)" in result.stdout and "  tools: none" in result.stdout


def test_status_shows_a_pending_tool_approval_and_how_to_answer_it(idle: OrchestratorService) -> None:
    store = idle.store()
    pending = {
        "key": "toolu_1",
        "tool": "Bash",
        "command": "make deploy",
        "verdict": "escalate",
        "reason": "not allowlisted",
    }
    try:
        store.ensure_session(SESSION, idle.panes[0].target)
        store.update_metadata(SESSION, {"state": "waiting_approval", "pending_approval": pending})
    finally:
        store.close()
    assert status_json(idle)["pending_approval"] == pending
    text = idle.cli("status", SESSION).stdout
    assert "approval: Bash: make deploy  (not allowlisted)" in text
    assert f"tmux-agent approve {SESSION}  |  tmux-agent deny {SESSION}" in text
    denied = idle.cli("deny", SESSION, "--reason", "not today", check=False)
    assert denied.returncode == 0 and f"denial queued for {SESSION}: Bash make deploy" in denied.stdout
    store = idle.store()
    try:
        answer = store.metadata(SESSION)["approval_answer"]
    finally:
        store.close()
    assert (answer["decision"], answer["key"], answer["reason"]) == ("denied", "toolu_1", "not today")


def test_approve_without_a_pending_request_is_one_line_and_exit_2(idle: OrchestratorService) -> None:
    result = idle.cli("approve", SESSION, check=False)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "not waiting_approval: nothing to approve" in line and "SESSION" in line


def test_a_secret_typed_into_a_command_is_masked_in_status_but_kept_in_the_queue(idle: OrchestratorService) -> None:
    secret = "sk-live-0123456789abcdefghijklmn"
    store = idle.store()
    try:
        store.ensure_session(SESSION, idle.panes[0].target)
        queued = store.enqueue(SESSION, f"export OPENAI_API_KEY={secret}; make deploy")
        assert store.command(queued).command.endswith("make deploy") and secret in store.command(queued).command  # type: ignore[union-attr]
    finally:
        store.close()
    session = status_json(idle)
    shown = json.dumps({k: session[k] for k in ("queued", "recent")})
    assert secret not in shown and "make deploy" in shown
    assert secret not in idle.cli("status", SESSION).stdout


# dead notifications ------------------------------------------------------------------------------
WRONG_KEY = "wrong-webhook-key-0093"
REMOVED_ROBOT = PERMANENT_ERRCODES[93000]


def wrong_webhook(wecom_mock: WeComMock) -> dict[str, str]:
    """A robot key WeCom does not know: every message to it is refused with 93000, for good."""
    wecom_mock.expect_violation(93000)
    return {**wecom_mock.env("webhook"), "WECOM_WEBHOOK": f"https://qyapi.weixin.qq.com{WEBHOOK_PATH}?key={WRONG_KEY}"}


def test_status_counts_dead_notifications_with_the_last_errcode_and_its_fix(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory, wecom_mock: WeComMock
) -> None:
    settings = {
        "failure_alert_threshold": 1,
        "notifications": {"retry_backoff_seconds": 0.2, "env_reload_seconds": 0.2},
    }
    service = orchestrator_service([agent_pane(SESSION)], settings=settings, env=wrong_webhook(wecom_mock))
    assert service.status()["notifications"]["dead"] == {"count": 0, "last": None}
    assert "dead" not in service.cli("status").stdout

    send(service, "false")  # one failure: a 命令连续失败 alert, refused by the unknown robot
    dead = wait_until(lambda: (d := service.status()["notifications"]["dead"])["count"] and d, timeout=15)
    assert dead["count"] == 1 and dead["last"]["title"] == f"命令连续失败 · {SESSION}"
    assert dead["last"]["refusals"] == [
        {"channel": "webhook", "errcode": 93000, "meaning": REMOVED_ROBOT.meaning, "fix": REMOVED_ROBOT.fix}
    ]
    text = service.cli("status").stdout
    [line] = [line for line in text.splitlines() if " dead " in line]
    assert line.startswith("notifications: 1 dead") and "webhook errcode 93000" in line
    assert line.endswith(f"fix: {REMOVED_ROBOT.fix}")
    assert WRONG_KEY not in text + json.dumps(dead)


def test_doctor_send_test_prints_the_errcodes_fix(idle: OrchestratorService, wecom_mock: WeComMock) -> None:
    idle.env_file.write_text("".join(f"{k}={v}\n" for k, v in wrong_webhook(wecom_mock).items()))
    result = idle.cli("doctor", "--send-test", "--dashboard-port", "0", check=False)
    [line] = [line for line in result.stdout.splitlines() if line.split()[1:2] == ["WeCom"]]  # not `reach WeCom`
    assert line.startswith("FAIL") and "errcode 93000" in line and line.endswith(f"fix: {REMOVED_ROBOT.fix}"), line
    assert WRONG_KEY not in result.stdout + result.stderr
