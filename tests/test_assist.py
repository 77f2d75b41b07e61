"""Decision assist, blockers and plans in-process: `Assist` built from its own parts — a real
state store, audit log and metrics, a manual clock, a scripted AI backend, and fakes for the
notifier and the pane reader. No engine."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters.ai_client import AIClient, AIError, AIRequest
from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.assist.coordinator import CHECK_SECONDS, Assist, status_lines
from orchestrator.assist.decision import approve
from orchestrator.assist.plan_executor import approve_plan, short
from orchestrator.clock import ManualClock
from orchestrator.config import Config, SessionConfig, TmuxConfig, settings_from_mapping
from orchestrator.dashboard.state import build_state
from orchestrator.errors import UserError
from orchestrator.events import CommandFinished, EventBus
from orchestrator.model import CommandResult, ResultStatus
from orchestrator.state.audit import AuditLog, read_events
from orchestrator.state.snapshot import StateSnapshot
from orchestrator.state.store import StateStore

SESSION = "weather/bot"
ADVICE = {
    "summary": "s",
    "recommendations": [
        {"title": "Check the key", "detail": "", "command": "echo check", "priority": "high", "risk": "low"},
        {"title": "Wipe", "detail": "", "command": "rm -rf /", "priority": "low", "risk": "low"},
        {"title": "Rotate", "detail": "", "command": "echo rotate", "priority": "medium", "risk": "high"},
    ],
}


class ScriptedBackend:
    name = "codex"

    def __init__(self, *replies: Any, delay: float = 0.0) -> None:
        self.replies = list(replies)
        self.delay = delay
        self.requests: list[AIRequest] = []
        self.release = threading.Event()

    def complete(self, request: AIRequest, timeout: float) -> str:
        self.requests.append(request)
        if self.delay:
            self.release.wait(self.delay)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, AIError):
            raise reply
        return reply if isinstance(reply, str) else json.dumps(reply)

    def close(self) -> None:
        self.release.set()


class FakeNotify:
    """A `Notify` that records what it was asked to send."""

    def __init__(self) -> None:
        self.notes: list[dict[str, str]] = []

    def notify(self, *, kind: str, session: str, title: str, body: str, dedupe_key: str) -> None:
        self.notes.append({"kind": kind, "session": session, "title": title, "body": body, "dedupe_key": dedupe_key})


class FakePanes:
    """A `PaneReader` showing scripted lines for the sessions whose pane is known."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.lines: list[str] = []
        self.captures = 0

    def capture_session(self, session: str, lines: int) -> list[str] | None:
        if session not in self.known:
            return None
        self.captures += 1
        return self.lines[-lines:]

    def drew_since_last_look(self, session: str) -> bool:
        return True  # scripted lines change whenever the test says; the real check is in test_panes


class Harness:
    """Assist with real store, audit and metrics; the test drives time and the panes."""

    def __init__(
        self, tmp_path: Path, backend: ScriptedBackend | None, toml: dict[str, Any], agents: tuple[str, ...] = ()
    ) -> None:
        settings = settings_from_mapping(toml, tmp_path)
        workdir = tmp_path / "work"
        workdir.mkdir(parents=True, exist_ok=True)
        fleet = (SessionConfig(SESSION, "weather:bot", workdir),) + tuple(
            SessionConfig(name, name.replace("/", ":"), workdir, kind="agent", provider=provider)
            for name, provider in ((n, "codex" if "codex" in n else "claude") for n in agents)
        )
        self.config = Config(
            tmp_path / "agent-config.yaml",
            tmp_path / "orchestrator.toml",
            TmuxConfig(),
            tmp_path / "state.db",
            tmp_path / "logs",
            fleet,
            settings,
        )
        self.session = self.config.sessions[0]
        self.clock = ManualClock(start=time.time())  # moved by hand where a test needs time to pass
        self.store = StateStore(self.config.state_db, clock=self.clock)
        for session in fleet:
            self.store.ensure_session(session.name, session.target)
        self.audit = AuditLog(self.config.audit_log, clock=self.clock)
        self.metrics = OrchestratorMetrics()
        self.notifier = FakeNotify()
        self.notes = self.notifier.notes
        self.panes = FakePanes({s.name for s in fleet})
        ai = AIClient(settings, lambda: {}, self.metrics, backend=backend) if backend else None
        self.assist = Assist(
            settings=settings,
            sessions=self.config.sessions,
            store=self.store,
            audit=self.audit,
            metrics=self.metrics,
            clock=self.clock,
            notify=self.notifier,
            panes=self.panes,
            ai=ai,
        )
        self.workdir = workdir
        self.bus = EventBus(raise_errors=True)
        self.assist.subscribe(self.bus)

    def settle(self, name: str = SESSION) -> dict[str, Any]:
        """Checks until every job has finished and been handed back (and acted on), then the metadata."""
        for _ in range(2):
            for session in self.config.sessions:
                self.assist.check(session)
            self.assist.jobs.wait(10)
        return self.store.metadata(name)

    def events(self, event: str) -> list[dict[str, Any]]:
        result = read_events(self.config.audit_log, validate=True)
        assert result.problems == []
        return [e for e in result.events if e["event"] == event]

    def result(self, exit_code: int | None, output_tail: str = "", status: ResultStatus | None = None) -> CommandResult:
        return CommandResult(
            exit_code,
            status or ("succeeded" if exit_code == 0 else "failed"),
            "2026-01-01T00:00:00.000000Z",
            "2026-01-01T00:00:01.000000Z",
            1.0,
            output_tail,
        )

    def finish(self, command_id: int, exit_code: int | None, status: ResultStatus | None = None) -> None:
        """The command ends with `exit_code` (and `status`; by default what the code says)."""
        assert self.store.mark_running(command_id, "2026-01-01T00:00:00.000000Z")
        self.store.finish(command_id, self.result(exit_code, status=status))

    def end_turn(self, command_id: int, status: ResultStatus = "succeeded", reply: str = "Done.") -> None:
        """An agent's turn ends as the engine records it: the row, last_command_result, the bus event."""
        assert self.store.mark_running(command_id, "2026-01-01T00:00:00.000000Z")
        result = CommandResult(
            None,
            status,
            "2026-01-01T00:00:00.000000Z",
            "2026-01-01T00:00:05.000000Z",
            5.0,
            "\n".join(reply.splitlines()[-5:]),
            reply=reply,
            tools=(),
        )
        assert self.store.finish(command_id, result)
        row = self.store.command(command_id)
        assert row is not None
        self.bus.publish(CommandFinished(session=row.session, row=row, result=result))

    def turn(self, session: str, prompt: str, status: ResultStatus = "succeeded", reply: str = "Done.") -> int:
        command_id = self.store.enqueue(session, prompt)
        self.end_turn(command_id, status, reply)
        return command_id


DECIDE = {"decision": {"auto_run": True, "allowlist": ["^echo "]}}


@pytest.fixture
def make(tmp_path: Path):
    made: list[Harness] = []

    def factory(
        *replies: Any, toml: dict[str, Any] | None = None, delay: float = 0.0, agents: tuple[str, ...] = ()
    ) -> Harness:
        harness = Harness(
            tmp_path / f"h{len(made)}",
            ScriptedBackend(*replies, delay=delay) if replies else None,
            DECIDE if toml is None else toml,
            agents,
        )
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        harness.assist.close()
        harness.store.close()


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
AGENT = "weather/agent"
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


# plans --------------------------------------------------------------------------------------------
RUN_PLANS = {"ai": {"backend": "off"}, "plan": {"auto_execute": True}}  # plans run without approval
PLAN = """\
# Plan
## Step 1: Build
```bash
make build
make check
```
## Step 2: Ship
Depends on: 3
```bash
make ship
```
## Step 3: Test
```bash
make test
```
"""


def write_doc(h: Harness, text: str) -> None:
    (h.workdir / "plan.md").write_text(text)
    h.store.update_metadata(SESSION, {"requirements_doc": "plan.md"})


Ending = tuple[ResultStatus, int | None]  # how a command ended: status and exit code


def drive(h: Harness, exit_codes: dict[str, int], endings: dict[str, Ending] | None = None) -> list[str]:
    """Run the plan: every queued command 'exits' with its code from exit_codes (default 0), or
    ends as `endings` says (a stall, a cancel)."""
    ran: list[str] = []
    for _ in range(20):
        h.settle()
        queued = h.store.queued(SESSION)
        if not queued:
            break
        for row in queued:
            ran.append(row.command)
            status, code = (endings or {}).get(row.command, (None, exit_codes.get(row.command, 0)))
            h.finish(row.id, code, status)
    return ran


def test_plan_runs_in_dependency_order_one_command_at_a_time(make) -> None:
    h = make(toml=RUN_PLANS)
    write_doc(h, PLAN)
    assert drive(h, {}) == ["make build", "make check", "make test", "make ship"]
    plan = h.store.metadata(SESSION)["task_decomposition"]
    assert plan["state"] == "completed" and plan["progress"] == {"done": 3, "total": 3}
    assert plan["generated_by"] == "markdown" and [s["status"] for s in plan["steps"]] == ["succeeded"] * 3
    assert [e["status"] for e in h.events("plan_finished")] == ["succeeded"]


def test_a_failed_step_stops_the_plan_and_an_edit_resumes_it(make) -> None:
    h = make(toml=RUN_PLANS)
    write_doc(h, PLAN)
    assert drive(h, {"make test": 1}) == ["make build", "make check", "make test"]
    meta = h.store.metadata(SESSION)
    plan = meta["task_decomposition"]
    assert plan["state"] == "stopped" and [s["status"] for s in plan["steps"]] == ["succeeded", "pending", "failed"]
    assert meta["blockers"] == ["plan step s3 “Test” failed: `make test` failed (exit 1) (plan.md)"]
    assert meta["next_actions"]["recommendations"][0]["title"] == "Fix the failed plan step"

    write_doc(h, PLAN.replace("make test", "make test-fixed"))
    assert drive(h, {}) == ["make test-fixed", "make ship"]  # Build is kept, not run again
    meta = h.store.metadata(SESSION)
    assert meta["task_decomposition"]["state"] == "completed" and meta["blockers"] == []


@pytest.mark.parametrize(
    "ending,shown",
    [
        (("stalled", None), "`make build` stalled"),
        (("stalled", 130), "`make build` stalled (exit 130)"),  # the interrupt ended it
        (("cancelled", None), "`make build` cancelled"),
    ],
    ids=["stalled", "stalled-by-its-interrupt", "cancelled"],
)
def test_a_step_whose_command_stalled_or_was_cancelled_stops_the_plan(make, ending: Ending, shown: str) -> None:
    """Not only `failed`: the step fails, its next command and the steps after never run, and
    the reason says how the command ended (no exit code when it never exited by itself)."""
    h = make(toml=RUN_PLANS)
    write_doc(h, PLAN)
    assert drive(h, {}, {"make build": ending}) == ["make build"]  # not make check, make test, make ship
    meta = h.store.metadata(SESSION)
    plan = meta["task_decomposition"]
    assert plan["state"] == "stopped" and [s["status"] for s in plan["steps"]] == ["failed", "pending", "pending"]
    assert plan["stopped_reason"] == f"step s1 failed: {shown}"
    assert meta["blockers"] == [f"plan step s1 “Build” failed: {shown} (plan.md)"]
    assert [e["status"] for e in h.events("plan_finished")] == ["failed"]


def test_a_denied_plan_command_is_never_queued(make) -> None:
    h = make(toml=RUN_PLANS)
    write_doc(h, "## Clean\n```bash\nrm -rf ~\n```\n## Next\n```bash\ntrue\n```\n")
    assert drive(h, {}) == []
    plan = h.store.metadata(SESSION)["task_decomposition"]
    assert [s["status"] for s in plan["steps"]] == ["denied", "pending"] and plan["state"] == "stopped"
    assert "denied by the safety policy" in plan["stopped_reason"]


def test_ai_decomposition_is_checked_and_not_repeated_for_the_same_content(make) -> None:
    cyclic = {
        "steps": [
            {"id": "a", "title": "A", "commands": ["true"], "depends_on": ["b"], "acceptance": []},
            {"id": "b", "title": "B", "commands": ["true"], "depends_on": ["a"], "acceptance": []},
        ]
    }
    good = {"steps": [{"id": "only", "title": "Only", "commands": ["make all"], "depends_on": [], "acceptance": []}]}
    h = make(cyclic, good, toml={"plan": {"auto_execute": False}})
    write_doc(h, PLAN)
    plan = h.settle()["task_decomposition"]
    assert plan["generated_by"] == "markdown" and plan["ai_error"]["kind"] == "schema_mismatch"
    assert "cycle" in plan["ai_error"]["detail"] and h.store.queued(SESSION) == []  # auto_execute off
    h.settle()
    assert len(h.assist.ai.backend.requests) == 1  # same content: not asked again
    write_doc(h, PLAN + "\n")
    plan = h.settle()["task_decomposition"]
    assert plan["generated_by"] == "codex" and [s["id"] for s in plan["steps"]] == ["only"]
    assert "<<<DOCUMENT" in h.assist.ai.backend.requests[-1].prompt


def test_an_unreadable_doc_is_reported_once(make) -> None:
    h = make(toml={"ai": {"backend": "off"}})
    h.store.update_metadata(SESSION, {"requirements_doc": "missing.md"})
    h.settle()
    h.settle()
    assert len(h.events("decomposition_failed")) == 1
    assert "task_decomposition" not in h.store.metadata(SESSION)


# plans that wait for approval (the default) ------------------------------------------------------
def test_a_plan_waits_for_approval_by_default_and_approve_starts_it(make) -> None:
    h = make(toml={"ai": {"backend": "off"}})
    write_doc(h, PLAN)
    assert drive(h, {}) == []  # nothing queued, however many rounds
    meta = h.store.metadata(SESSION)
    assert meta["task_decomposition"]["state"] == "waiting_approval" and not meta.get("blockers")
    assert "    answer: tmux-agent approve weather/bot plan" in status_lines(SESSION, meta)
    [created] = h.events("decomposition_created")
    assert created["detail"].endswith("; waits for `tmux-agent approve weather/bot plan`")

    plan, started = approve_plan(h.store, h.audit, SESSION)
    assert started and plan["state"] == "running"
    assert approve_plan(h.store, h.audit, SESSION)[1] is False  # approving again changes nothing
    [approved] = h.events("plan_approved")
    assert (approved["by"], approved["detail"]) == (
        "person",
        f"approved with tmux-agent approve: 3 step(s) to run from plan.md (sha256 {plan['source_sha256'][:12]})",
    )
    assert drive(h, {}) == ["make build", "make check", "make test", "make ship"]
    assert h.store.metadata(SESSION)["task_decomposition"]["state"] == "completed"
    with pytest.raises(UserError, match="the plan of weather/bot is completed, not waiting_approval"):
        approve_plan(h.store, h.audit, SESSION)


def test_a_changed_document_is_a_new_plan_that_waits_again(make) -> None:
    h = make(toml={"ai": {"backend": "off"}})
    write_doc(h, PLAN)
    h.settle()
    approve_plan(h.store, h.audit, SESSION)
    assert drive(h, {"make test": 1}) == ["make build", "make check", "make test"]
    write_doc(h, PLAN.replace("make test", "make test-fixed"))
    assert drive(h, {}) == []
    plan = h.store.metadata(SESSION)["task_decomposition"]
    assert plan["state"] == "waiting_approval" and [s["status"] for s in plan["steps"]] == [
        "succeeded",
        "pending",
        "pending",
    ]
    approve_plan(h.store, h.audit, SESSION)
    assert drive(h, {}) == ["make test-fixed", "make ship"]  # Build is kept, not run again

    write_doc(h, PLAN.replace("make test", "make test-fixed") + "\n")  # same steps, all done: nothing to approve
    plan = h.settle()["task_decomposition"]
    assert plan["state"] == "completed" and h.store.queued(SESSION) == []


def test_approving_a_plan_does_not_approve_what_the_safety_policy_denies(make) -> None:
    h = make(toml={"ai": {"backend": "off"}})
    write_doc(h, "## Clean\n```bash\nrm -rf ~\n```\n")
    h.settle()
    approve_plan(h.store, h.audit, SESSION)
    assert drive(h, {}) == []
    plan = h.store.metadata(SESSION)["task_decomposition"]
    assert plan["state"] == "stopped" and plan["steps"][0]["status"] == "denied"


def test_a_pending_plan_an_older_version_left_waits_too(make) -> None:
    h = make(toml={"ai": {"backend": "off"}})
    write_doc(h, PLAN)
    plan = h.settle()["task_decomposition"]
    h.store.update_metadata(SESSION, {"task_decomposition": plan | {"state": "pending"}})
    assert drive(h, {}) == []
    assert approve_plan(h.store, h.audit, SESSION)[1] is True
    assert drive(h, {})[:1] == ["make build"]


def test_only_a_waiting_plan_can_be_approved(make) -> None:
    h = make(toml={"ai": {"backend": "off"}})
    with pytest.raises(UserError, match=r"session weather/bot has no plan \(task_decomposition\): nothing to approve"):
        approve_plan(h.store, h.audit, SESSION)
    write_doc(h, "# Nothing to do here\nJust prose.\n")
    assert h.settle()["task_decomposition"]["state"] == "empty"
    with pytest.raises(UserError, match="the plan of weather/bot is empty, not waiting_approval") as refused:
        approve_plan(h.store, h.audit, SESSION)
    assert refused.value.key == "plan" and h.events("plan_approved") == []


def test_auto_execute_runs_a_plan_that_waits(make) -> None:
    waiting = make(toml={"ai": {"backend": "off"}})
    write_doc(waiting, PLAN)
    plan = waiting.settle()["task_decomposition"]
    assert plan["state"] == "waiting_approval"
    h = make(toml=RUN_PLANS)  # the same plan, seen by an orchestrator with auto_execute = true
    h.store.update_metadata(SESSION, {"task_decomposition": plan})
    write_doc(h, PLAN)
    assert drive(h, {}) == ["make build", "make check", "make test", "make ship"]
    assert len(h.events("decomposition_created")) == 0  # the same content: not decomposed again


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
