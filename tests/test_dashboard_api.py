"""The dashboard over HTTP (no browser): the JSON API, normalised metadata, live
updates on the SSE stream, /healthz, /metrics, the token, and its CLI's errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters.wecom_errcodes import PERMANENT_ERRCODES
from orchestrator.config import AgentProvider, SessionConfig
from orchestrator.dashboard.server import DashboardApp, DashboardServer
from orchestrator.model import CommandResult, ToolCall
from orchestrator.notify.dead import verdict
from orchestrator.state.audit import AuditLog
from orchestrator.state.outbox import Outbox
from orchestrator.state.store import StateStore
from pytest_tmuxagent.dashboard import http_get
from tests.test_metrics_promtool import promtool_check

BOT = "weather/bot"
NEXT_ACTIONS = {
    "generated_at": "2026-11-01T08:00:00Z",
    "source": "codex",
    "blockers": ["OPENAI_API_KEY missing"],
    "recommendations": [
        {
            "title": "Set the key",
            "detail": "export it in ~/.env",
            "command": "echo OPENAI_API_KEY=... >> ~/.env",
            "priority": "high",
            "risk": "low",
            "kind": "command",
        }
    ],
}
PLAN = {
    "source": "docs/plan.md",
    "steps": [
        {"id": "s1", "title": "scaffold", "status": "done"},
        {"id": "s2", "title": "fetch weather", "status": "running"},
        {"id": "s3", "title": "reply", "status": "pending"},
    ],
}


def finish(store: StateStore, session: str, command: str, exit_code: int, tail: str = "") -> int:
    command_id = store.enqueue(session, command)
    store.mark_running(command_id, "2026-11-01T08:00:00.000000Z")
    store.finish(
        command_id,
        CommandResult(
            exit_code,
            "succeeded" if exit_code == 0 else "failed",
            "2026-11-01T08:00:00.000000Z",
            "2026-11-01T08:00:01.000000Z",
            1.0,
            tail,
        ),
    )
    return command_id


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    store = StateStore(tmp_path / "state.db")
    store.ensure_session(BOT, "weather:bot")
    yield store
    store.close()


class Running:
    def __init__(self, server: DashboardServer) -> None:
        self.server = server
        self.url = server.url

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.url + path.lstrip("/"), headers)

    def json(self, path: str, **headers: str) -> Any:
        code, _, body = self.get(path, headers)
        assert code == 200, (code, body)
        return json.loads(body)


@pytest.fixture
def dashboard(tmp_path: Path, store: StateStore) -> Iterator[Any]:
    started: list[DashboardServer] = []

    def start(token: str | None = None, db: Path | None = None, sessions: tuple[SessionConfig, ...] = ()) -> Running:
        app = DashboardApp(
            db=db or store.path, audit_log=tmp_path / "logs" / "a.jsonl", token=token, interval=0.05, sessions=sessions
        )
        server = DashboardServer(app, "127.0.0.1", 0)
        threading.Thread(target=server.serve, daemon=True).start()
        started.append(server)
        return Running(server)

    yield start
    for server in started:
        server.stop()


def test_state_api_carries_results_cards_plan_and_events(dashboard, store: StateStore, tmp_path: Path) -> None:
    finish(store, BOT, "make test", 2, "2 failed")
    store.update_metadata(
        BOT,
        {
            "next_actions": NEXT_ACTIONS,
            "task_decomposition": PLAN,
            "failure_streak": 1,
            "blockers": ["waiting for API key"],
        },
    )
    store.enqueue(BOT, "echo next")
    AuditLog(tmp_path / "logs" / "a.jsonl").record("metadata_set", BOT, detail="next_actions")
    state = dashboard().json("api/state")
    [session] = state["sessions"]
    assert session["last_command_result"]["command"] == "make test"
    assert (session["last_command_result"]["exit_code"], session["last_command_result"]["status"]) == (2, "failed")
    assert (session["failure_streak"], session["queue_depth"], session["blockers"]) == (1, 1, ["waiting for API key"])
    shown = json.loads(json.dumps(NEXT_ACTIONS).replace("OPENAI_API_KEY=...", "OPENAI_API_KEY=***"))
    assert session["next_actions"] == shown  # every text is shown redacted
    assert (session["task_decomposition"]["done"], session["task_decomposition"]["total"]) == (1, 3)
    assert state["events"][0]["event"] == "metadata_set"
    assert state["totals"]["failure_rate"] == 1.0


AGENT = "weather/agent"
TOOLS: list[ToolCall] = [
    {"name": "Bash", "command": "ls -la && cat README.md", "input": {"command": "ls -la && cat README.md"}},
    {"name": "Read", "input": {"file_path": "/w/README.md"}},
]


def agent_turn(store: StateStore, prompt: str, reply: str, tools: list[ToolCall]) -> int:
    """A finished agent turn as the engine records it: the prompt as command, no exit code, reply and tools."""
    command_id = store.enqueue(AGENT, prompt)
    store.mark_running(command_id, "2026-11-01T08:00:00.000000Z")
    result = CommandResult(
        None, "succeeded", "2026-11-01T08:00:00.000000Z", "2026-11-01T08:00:04.500000Z", 4.5, reply, reply, tuple(tools)
    )
    assert store.finish(command_id, result)
    return command_id


@pytest.fixture
def agent_store(store: StateStore) -> StateStore:
    """An agent session with a finished turn, a prompt running and a question pending."""
    store.ensure_session(AGENT, "weather:agent")
    agent_turn(store, "List the files\nand read the README", "There are 3 files; README says hi.", TOOLS)
    running_id = store.enqueue(AGENT, "Deploy it?")
    store.mark_running(running_id, "2026-11-01T08:01:00.000000Z")
    store.update_metadata(
        AGENT,
        {
            "state": "waiting_input",
            "state_detail": "claude asks a question",
            "running": {
                "command_id": running_id,
                "command": "Deploy it?",
                "started_at": "2026-11-01T08:01:00.000000Z",
                "question": "Which environment: staging or prod?",
            },
        },
    )
    return store


def agent_config(provider: AgentProvider = "claude") -> tuple[SessionConfig, ...]:
    return (
        SessionConfig(BOT, "weather:bot", Path(".")),
        SessionConfig(AGENT, "weather:agent", Path("."), kind="agent", provider=provider, launch=provider),
    )


def test_an_agent_session_shows_provider_state_prompt_reply_tools_and_question(
    dashboard, agent_store: StateStore
) -> None:
    finish(agent_store, BOT, "make test", 0, "ok")
    sessions = {s["name"]: s for s in dashboard(sessions=agent_config("codex")).json("api/state")["sessions"]}
    agent = sessions[AGENT]
    assert (agent["kind"], agent["provider"]) == ("agent", "codex")
    assert (agent["state"], agent["state_detail"]) == ("waiting_input", "claude asks a question")
    assert agent["running"]["command"] == "Deploy it?"
    assert agent["running"]["started_at"] == "2026-11-01T08:01:00.000000Z"
    assert agent["question"] == "Which environment: staging or prod?"
    last = agent["last_command_result"]
    assert (last["command"], last["exit_code"], last["status"]) == (
        "List the files\nand read the README",
        None,
        "succeeded",
    )
    assert last["reply"] == "There are 3 files; README says hi."
    assert last["tools"] == [{"name": "Bash", "command": "ls -la && cat README.md"}, {"name": "Read", "command": None}]
    for key in ("queued", "results", "failure_streak", "blockers", "next_actions", "task_decomposition"):
        assert key in agent  # the keys every session has
    shell = sessions[BOT]
    assert (shell["kind"], shell["provider"], shell["question"]) == ("shell", None, None)
    assert (shell["last_command_result"]["reply"], shell["last_command_result"]["tools"]) == (None, None)


def test_without_the_config_an_agent_is_known_by_its_turn(dashboard, agent_store: StateStore) -> None:
    sessions = {s["name"]: s for s in dashboard().json("api/state")["sessions"]}
    assert (sessions[AGENT]["kind"], sessions[AGENT]["provider"]) == ("agent", None)
    assert (sessions[BOT]["kind"], sessions[BOT]["provider"]) == (None, None)  # nothing finished: unknown
    agent_store.update_metadata(AGENT, {"provider": "claude"})
    finish(agent_store, BOT, "true", 0)
    sessions = {s["name"]: s for s in dashboard().json("api/state")["sessions"]}
    assert (sessions[AGENT]["kind"], sessions[AGENT]["provider"]) == ("agent", "claude")
    assert sessions[BOT]["kind"] == "shell"


def test_the_question_shows_only_while_the_session_waits(dashboard, agent_store: StateStore) -> None:
    agent_store.update_metadata(AGENT, {"state": "working"})
    [agent] = [s for s in dashboard().json("api/state")["sessions"] if s["name"] == AGENT]
    assert agent["question"] is None and agent["running"]["command"] == "Deploy it?"


def test_odd_agent_values_become_text(dashboard, store: StateStore) -> None:
    store.ensure_session(AGENT, "weather:agent")
    store.update_metadata(
        AGENT,
        {
            "kind": "robot",
            "provider": ["claude"],
            "state": {"x": 1},
            "running": {"question": "<b>?</b>"},  # nothing runs: no question
            "last_command_result": {
                "command_id": 1,
                "command": "p",
                "status": "succeeded",
                "reply": {"text": "hi"},
                "tools": ["Bash", {"name": 5, "command": ["ls"]}, {"command": "<img src=x>"}],
            },
        },
    )
    [agent] = [s for s in dashboard().json("api/state")["sessions"] if s["name"] == AGENT]
    assert (agent["kind"], agent["provider"], agent["state"], agent["question"]) == ("agent", None, '{"x": 1}', None)
    assert agent["last_command_result"]["reply"] == '{"text": "hi"}'
    assert agent["last_command_result"]["tools"] == [
        {"name": "Bash", "command": None},
        {"name": "5", "command": '["ls"]'},
        {"name": "?", "command": "<img src=x>"},
    ]


def test_the_page_renders_agent_values_as_text(dashboard) -> None:
    script = dashboard().get("static/app.js")[2].decode()
    for needed in ("last-reply", "tool-command", "question-text", "running-prompt", "provider"):
        assert needed in script
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script


def test_other_apis_and_quoted_session_names(dashboard, store: StateStore) -> None:
    finish(store, BOT, "true", 0)
    running = dashboard()
    assert running.json("api/sessions/weather%2Fbot")["name"] == BOT
    assert running.json("api/sessions")[0]["name"] == BOT
    assert running.get("api/sessions/nobody")[0] == 404
    assert running.get("api/nothing")[0] == 404
    assert running.json("api/notifications") == {"pending": 0, "dead": {"count": 0, "last": None}}
    assert running.json("api/events?limit=5&session=weather/bot") == []
    assert running.get("api/events?limit=x")[0] == 400


@pytest.mark.parametrize(
    "value, expected",
    [
        ("just a string", None),
        (
            [{"title": "a list of cards"}],
            [
                {
                    "title": "a list of cards",
                    "detail": None,
                    "command": None,
                    "priority": None,
                    "risk": None,
                    "kind": None,
                }
            ],
        ),
        (
            {"recommendations": [{"title": {"nested": 1}, "priority": 3}, "plain text card"]},
            [
                {
                    "title": '{"nested": 1}',
                    "detail": None,
                    "command": None,
                    "priority": "3",
                    "risk": None,
                    "kind": None,
                },
                {
                    "title": "plain text card",
                    "detail": None,
                    "command": None,
                    "priority": None,
                    "risk": None,
                    "kind": None,
                },
            ],
        ),
    ],
)
def test_odd_next_actions_shapes_become_text(value: Any, expected: Any, dashboard, store: StateStore) -> None:
    store.update_metadata(BOT, {"next_actions": value, "task_decomposition": "not a plan"})
    session = dashboard().json("api/state")["sessions"][0]
    assert (session["next_actions"] or {}).get("recommendations") == expected
    assert session["task_decomposition"] is None


def test_stream_pushes_a_new_state_when_the_db_changes(dashboard, store: StateStore) -> None:
    running = dashboard()
    host, port = running.server.server_address[:2]
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reader = sock.makefile("rb")
        assert b"text/event-stream" in b"".join(iter(reader.readline, b"\r\n"))
        first = read_event(reader)
        assert first["sessions"][0]["last_command_result"] is None
        finish(store, BOT, "echo changed", 0)
        while True:  # the next state event carries the change
            state = read_event(reader)
            if state["sessions"][0]["last_command_result"]:
                break
        assert state["sessions"][0]["last_command_result"]["command"] == "echo changed"


def read_event(reader: Any) -> dict[str, Any]:
    data = None
    for line in iter(reader.readline, b""):
        if line.startswith(b"data: "):
            data = json.loads(line[6:])
        elif line == b"\n" and data is not None:
            return data
    raise AssertionError("stream closed")


def test_page_has_a_strict_content_security_policy(dashboard) -> None:
    code, headers, body = dashboard().get("")
    assert code == 200 and b"static/app.js" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    assert dashboard().get("static/app.js")[1]["Content-Type"].startswith("application/javascript")


def test_healthz_and_a_missing_db(dashboard, tmp_path: Path) -> None:
    assert dashboard().json("healthz")["status"] == "ok"
    missing = dashboard(db=tmp_path / "nope" / "state.db")
    code, _, body = missing.get("healthz")
    assert code == 503 and "state DB not found" in json.loads(body)["error"]
    assert missing.json("api/state")["sessions"] == []


def test_metrics_are_clean_under_promtool(dashboard, store: StateStore) -> None:
    store.update_metadata(BOT, {"orchestrator_heartbeat": "2026-11-01T08:00:00.000000Z"})
    running = dashboard()
    running.json("api/state")
    code, _, body = running.get("metrics")
    assert code == 200 and b"tmuxagent_dashboard_sessions 1.0" in body
    assert b'tmuxagent_dashboard_heartbeat_age_seconds{session="weather/bot"}' in body
    result = promtool_check(body)
    assert result.returncode == 0, result.stdout + result.stderr


def test_token_guards_everything_but_healthz(dashboard) -> None:
    running = dashboard(token="s3cret-token-1")
    assert running.get("api/state")[0] == 401
    assert running.get("metrics")[0] == 401
    assert running.get("")[0] == 401
    assert running.get("healthz")[0] == 200
    assert running.get("api/state", {"Authorization": "Bearer wrong-token"})[0] == 401
    assert running.get("api/state", {"Authorization": "Bearer s3cret-token-1"})[0] == 200
    code, headers, _ = running.get("?token=s3cret-token-1")
    assert code == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"]
    assert running.get("api/state", {"Cookie": cookie})[0] == 200


def dashboard_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.dashboard", *args], capture_output=True, text=True, timeout=30
    )


def test_cli_refuses_a_public_bind_without_token(tmp_path: Path) -> None:
    result = dashboard_cli("--db", str(tmp_path / "state.db"), "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2 and "key '--host'" in result.stderr and "--token" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_port_in_use_is_one_line_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = dashboard_cli("--db", str(tmp_path / "state.db"), "--port", str(taken.getsockname()[1]))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "key '--port'" in result.stderr and "Traceback" not in result.stderr


def test_tmux_agent_has_the_dashboard_subcommand() -> None:
    from orchestrator.cli.main import build_parser

    args = build_parser().parse_args(["dashboard", "--db", "x.db", "--port", "9"])
    assert (args.db, args.port, args.host) == ("x.db", 9, "127.0.0.1")


def test_a_pending_tool_approval_is_on_the_agents_card(dashboard, agent_store: StateStore) -> None:
    pending = {"key": "toolu_9", "tool": "Bash", "command": "make deploy", "verdict": "escalate", "reason": "ask"}
    agent_store.update_metadata(AGENT, {"state": "waiting_approval", "pending_approval": pending})
    sessions = {s["name"]: s for s in dashboard(sessions=agent_config()).json("api/state")["sessions"]}
    assert sessions[AGENT]["approval"] == {
        "tool": "Bash",
        "command": "make deploy",
        "verdict": "escalate",
        "reason": "ask",
    }
    assert sessions[BOT]["approval"] is None
    agent_store.update_metadata(AGENT, {"state": "working"})  # answered: no longer shown
    sessions = {s["name"]: s for s in dashboard(sessions=agent_config()).json("api/state")["sessions"]}
    assert sessions[AGENT]["approval"] is None


def test_dead_notifications_show_their_count_and_the_last_ones_errcodes_with_fixes(
    dashboard, store: StateStore
) -> None:
    outbox = Outbox(store)

    def queue(title: str) -> int:
        message_id = outbox.add(dedupe_key=title, kind="failure", session=BOT, title=title, body="b", dedupe_seconds=0)
        assert message_id is not None
        return message_id

    too_long = PERMANENT_ERRCODES[40058]
    outbox.mark_dead(queue("命令失败 · weather/bot"), verdict("webhook", 40058, too_long), "message")
    both = [("webhook", 93000), ("app", 40001)]  # every channel refused the newest one
    last_error = "; ".join(verdict(channel, code, PERMANENT_ERRCODES[code]) for channel, code in both)
    outbox.mark_dead(queue("命令卡顿 · weather/bot"), last_error, "channel")
    queue("下一步建议 · weather/bot")  # pending, not dead

    notifications = dashboard().json("api/notifications")
    assert notifications["pending"] == 1 and notifications["dead"]["count"] == 2
    last = notifications["dead"]["last"]
    assert last["title"] == "命令卡顿 · weather/bot" and last["session"] == BOT
    assert last["refusals"] == [
        {
            "channel": c,
            "errcode": code,
            "meaning": PERMANENT_ERRCODES[code].meaning,
            "fix": PERMANENT_ERRCODES[code].fix,
        }
        for c, code in both
    ]
    assert "dead-fix" in dashboard().get("static/app.js")[2].decode()  # the banner shows each fix
