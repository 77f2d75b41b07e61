"""`tmux-agent-orchestrator-replay`: counts, span, rates, episodes, a tolerant
reader, `--session` before `--limit`, and `--verify-db` against a state DB; agent turns, tool
requests (who decided, how long the agent waited) and the time people were waited for."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.assist.approval_policy import ToolApprovalPolicy
from orchestrator.cli.answers import answer_tool_request
from orchestrator.cli.replay_main import main as replay_main
from orchestrator.clock import ManualClock, iso_utc
from orchestrator.config import ApprovalSettings
from orchestrator.model import ApprovalRequest, CommandResult, ExitRecord, ToolCall
from orchestrator.state.audit import AuditLog
from orchestrator.state.audit_read import read_events
from orchestrator.state.replay import replay, seconds_between, select
from orchestrator.state.replay_verify import verify_db
from orchestrator.state.snapshot import StateSnapshot
from orchestrator.state.store import StateStore

from .engine_fakes import session
from .engine_rig import Rig, make_rig

BOT, OPS = "weather/bot", "ops/deploy"


@dataclass
class Recorder:
    """Writes the state DB and the audit log the way the orchestrator does, one step at a time."""

    store: StateStore
    audit: AuditLog
    clock: ManualClock

    def queue(self, session: str, command: str) -> int:
        self.store.ensure_session(session, session.replace("/", ":"))
        command_id = self.store.enqueue(session, command)
        self.audit.record(
            "command_queued",
            session,
            command_id=command_id,
            command=command,
            queue_depth=self.store.queue_depths()[session],
        )
        return command_id

    def dispatch(self, session: str, command_id: int) -> None:
        self.store.mark_running(command_id, iso_utc(self.clock.now()))
        self.audit.record(
            "command_dispatched",
            session,
            command_id=command_id,
            command=self.store.command(command_id).command,
            queue_depth=self.store.queue_depths()[session],
        )

    def finish(self, session: str, command_id: int, exit_code: int, tail: str = "") -> None:
        self.clock.advance(0.5)
        status = "succeeded" if exit_code == 0 else "failed"
        now = iso_utc(self.clock.now())
        self.store.finish(command_id, CommandResult(exit_code, status, now, now, 0.5, tail))
        self.audit.record(
            "command_result",
            session,
            command_id=command_id,
            command=self.store.command(command_id).command,
            status=status,
            exit_code=exit_code,
            duration_s=0.5,
            output_tail=tail,
        )
        streak = 0 if status == "succeeded" else self.store.increment_metadata(session, "failure_streak")
        if status == "succeeded":
            self.store.update_metadata(session, {"failure_streak": 0})
        if streak >= 2:
            self.store.update_metadata(session, {"blocked": True})
            self.audit.record("failure_streak", session, command_id=command_id, command="x", detail="2 failures")
            self.audit.record("session_blocked", session)

    def run(self, session: str, command: str, exit_code: int) -> int:
        command_id = self.queue(session, command)
        self.dispatch(session, command_id)
        self.finish(session, command_id, exit_code, tail=f"tail of {command}")
        return command_id


@pytest.fixture
def recorder(tmp_path: Path) -> Recorder:
    clock = ManualClock()
    return Recorder(StateStore(tmp_path / "state.db", clock=clock), AuditLog(tmp_path / "a.jsonl", clock=clock), clock)


def mixed_run(r: Recorder) -> dict[str, int]:
    ids = {"ok": r.run(BOT, "echo ok", 0), "bad": r.run(BOT, "false", 1), "last": r.run(BOT, "echo last", 0)}
    waiting = [r.queue(BOT, f"echo later {i}") for i in range(3)]
    r.dispatch(BOT, waiting[0])  # running when the log ends
    r.run(OPS, "make deploy", 2)
    r.run(OPS, "make deploy", 3)  # a streak of 2 blocks ops/deploy
    ids["held"] = r.queue(OPS, "echo held")
    ids["running"], ids["queued"] = waiting[0], waiting[1]
    return ids


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = replay_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_counts_span_rates_queue_and_last_command(recorder: Recorder) -> None:
    ids = mixed_run(recorder)
    result = replay(read_events(recorder.audit.path).events)
    summary = result.as_dict()
    assert summary["by_event"]["command_result"] == 5 and summary["by_event"]["command_queued"] == 9
    assert summary["by_session"][OPS]["session_blocked"] == 1
    assert summary["span"]["seconds"] == pytest.approx(2.5)
    assert summary["commands"]["results"] == {"succeeded": 2, "failed": 3}
    assert (summary["commands"]["success_rate"], summary["commands"]["failure_rate"]) == (0.4, 0.6)
    assert summary["commands"]["last_command"]["command"] == "make deploy"
    bot = summary["sessions"][BOT]
    assert bot["max_queue_depth"] == 3 and bot["running"] == [ids["running"]]
    assert bot["queued"] == [ids["queued"], ids["queued"] + 1]
    assert bot["last_command_result"] == {
        "command_id": ids["last"],
        "command": "echo last",
        "status": "succeeded",
        "exit_code": 0,
        "duration_s": 0.5,
        "output_tail": "tail of echo last",
    }
    ops = summary["sessions"][OPS]
    assert (ops["failure_streak"], ops["blocked"], ops["queued"]) == (2, True, [ids["held"]])
    assert [(e["session"], e["failures"], e["outcome"]) for e in summary["streak_episodes"]] == [(OPS, 2, "open")]


def test_stall_episodes_and_an_unblock_closing_a_streak(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl", clock=ManualClock())
    for event in ("stall_detected", "stall_interrupt", "stall_retry", "command_dispatched", "stall_detected"):
        log.record(event, BOT, command_id=7, command="sleep 600")
    log.record(
        "command_result",
        BOT,
        command_id=7,
        command="sleep 600",
        status="stalled",
        exit_code=None,
        duration_s=2.0,
        output_tail="",
    )
    log.record("failure_streak", OPS, command_id=9, command="false", detail="3 consecutive failures")
    log.record("session_blocked", OPS)
    log.record("session_unblocked", OPS)
    summary = replay(read_events(log.path).events).as_dict()
    [stall] = summary["stall_episodes"]
    assert (stall["command_id"], stall["stalls"], stall["outcome"]) == (7, 2, "stalled")
    assert summary["sessions"][BOT]["stall_count"] == 2 and summary["sessions"][BOT]["running"] == []
    [streak] = summary["streak_episodes"]
    assert streak["outcome"] == "unblocked" and summary["sessions"][OPS]["blocked"] is False


def test_session_filters_before_limit(recorder: Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    mixed_run(recorder)
    events = read_events(recorder.audit.path).events
    chosen = select(events, BOT, 2)
    assert [e["session"] for e in chosen] == [BOT, BOT]
    assert chosen == [e for e in events if e["session"] == BOT][-2:]
    code, out, _ = run_cli(capsys, "--log", str(recorder.audit.path), "--session", BOT, "--limit", "2", "--json")
    assert code == 0 and json.loads(out)["events"] == 2 and list(json.loads(out)["sessions"]) == [BOT]


def test_bad_lines_are_reported_by_number_and_skipped(recorder: Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    recorder.run(BOT, "true", 0)
    path = recorder.audit.path
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(1, "{not json\n")
    path.write_text("".join(lines) + '{"ts": "2026-01-01T00:00:0')  # a cut-off last write
    code, out, err = run_cli(capsys, "--log", str(path))
    assert code == 0
    assert f"{path}:2: not JSON (Expecting property name enclosed in double quotes at column 2); skipped" in out
    assert f"{path}:5: cut short at the end of the file" in out
    assert "warning" in err and "Traceback" not in err
    assert "commands: succeeded 1" in out


def test_verify_db_agrees_with_the_log_of_a_mixed_run(recorder: Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    mixed_run(recorder)
    differences = verify_db(replay(read_events(recorder.audit.path).events), StateSnapshot(recorder.store.path))
    assert differences == []
    code, out, _ = run_cli(capsys, "--log", str(recorder.audit.path), "--verify-db", str(recorder.store.path))
    assert code == 0 and "verify-db" in out and "OK" in out


def test_verify_db_names_every_difference(recorder: Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    ids = mixed_run(recorder)
    recorder.store.update_metadata(OPS, {"failure_streak": 5})
    recorder.store.update_metadata(BOT, {"stall_count": 1})
    with sqlite3.connect(recorder.store.path) as db:
        db.execute("UPDATE commands SET status='cancelled' WHERE id=?", (ids["queued"],))
    code, out, _ = run_cli(capsys, "--log", str(recorder.audit.path), "--verify-db", str(recorder.store.path))
    assert code == 1
    assert f"{OPS}: failure_streak: log 2, DB 5" in out
    assert f"{BOT}: stall_count: log 0, DB 1" in out
    assert f"{BOT}: queued commands: log [{ids['queued']}, {ids['queued'] + 1}], DB [{ids['queued'] + 1}]" in out
    assert f"{BOT}: results by status" in out


def test_a_logged_metadata_set_is_not_a_difference(recorder: Recorder) -> None:
    recorder.run(BOT, "false", 1)
    recorder.store.update_metadata(BOT, {"failure_streak": 0})
    recorder.audit.record("metadata_set", BOT, detail="failure_streak")
    differences = verify_db(replay(read_events(recorder.audit.path).events), StateSnapshot(recorder.store.path))
    assert differences == []


def test_a_command_missing_from_the_log_is_a_difference(recorder: Recorder) -> None:
    recorder.run(BOT, "true", 0)
    recorder.store.enqueue(BOT, "queued behind the log's back")
    differences = verify_db(replay(read_events(recorder.audit.path).events), StateSnapshot(recorder.store.path))
    assert differences == [f"{BOT}: queued commands: log [], DB [2]"]


@pytest.mark.parametrize(
    "argv, key",
    [
        (["--log", "{tmp}/missing.jsonl"], "--log"),
        (["--log", "{log}", "--limit", "0"], "--limit"),
        (["--log", "{log}", "--limit", "5", "--verify-db", "{db}"], "--limit"),
        (["--log", "{log}", "--verify-db", "{tmp}/missing.db"], "--verify-db"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], key: str, recorder: Recorder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorder.run(BOT, "true", 0)
    paths = {"tmp": str(tmp_path), "log": str(recorder.audit.path), "db": str(recorder.store.path)}
    code, out, err = run_cli(capsys, *[a.format(**paths) for a in argv])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and f"key '{key}'" in err and "Traceback" not in err


# agents and the moments a person is needed ----------------------------------------------------
# The audit file here is the one the real engine writes: the supervisor with a fake driver, the
# real store, audit trail, safety policy and `tmux-agent approve`'s answer, on a manual clock.
AGENT = "weather/agent"
POLICY = ToolApprovalPolicy(ApprovalSettings(allowlist=(r"touch \S+\.txt",)))


def agent_turn(rig: Rig, cid: int, reply: str, tools: tuple[ToolCall, ...]) -> None:
    """The turn ends the way an agent's does: no exit code, the reply and the tool calls."""
    now = rig.clock.now()
    rig.driver._ends[cid] = ExitRecord(None, now - 1.0, now, status="succeeded", reply=reply, tools=tools)
    rig.driver.completions.put(cid)
    rig.sup.step()


def tool_request(rig: Rig, prompt: str, command: str, key: str) -> int:
    cid = rig.send(prompt, AGENT)
    rig.sup.step()
    rig.driver.approval_requests[cid] = ApprovalRequest(key, "Bash", command, "why")
    rig.sup.step()
    return cid


def agents_and_people(tmp_path: Path) -> Rig:
    """An agent session's turns — approved by the policy, denied by it, escalated and approved by
    a person after 31 s, one still waiting — beside a shell whose question is replied to after 12 s."""
    rig = make_rig(
        tmp_path,
        sessions=[session(AGENT, "weather:agent", kind="agent", provider="claude"), session(BOT, "weather:bot")],
        approvals=POLICY,
    )
    bash = ToolCall(name="Bash", command="touch notes.txt")
    cid = tool_request(rig, "make the notes file", "touch notes.txt", "toolu_1")
    agent_turn(rig, cid, "Notes made.", (bash,))
    cid = tool_request(rig, "clean the build folder", "rm -rf build", "toolu_2")
    agent_turn(rig, cid, "I left build alone.", ())
    cid = tool_request(rig, "deploy the weather bot", "make deploy", "toolu_3")
    rig.advance(30.0)
    answer_tool_request(rig.store, AuditLog(rig.audit_path, clock=rig.clock), AGENT, "approved", None)
    rig.advance(1.0)
    agent_turn(rig, cid, "Deployed.", (ToolCall(name="Bash", command="make deploy"),))

    asked = rig.send("read -p 'continue? [y/N] ' ans", BOT)
    rig.sup.step()
    rig.driver.asking.add(asked)
    for _ in range(20):  # the engine asks about input once the pane has been quiet a while
        rig.advance(0.5)
        if rig.store.metadata(BOT).get("state") == "waiting_input":
            break
    rig.clock.advance(10.5)
    rig.store.update_metadata(BOT, {"pending_reply": {"text": "y", "queued_at": "x"}})
    AuditLog(rig.audit_path, clock=rig.clock).record("reply_queued", BOT, detail="reply of 1 character(s)")
    rig.advance(1.5)  # typed at the next round, while the question is still on the screen
    rig.driver.asking.discard(asked)
    rig.driver.end(asked, 0)
    rig.sup.step()

    tool_request(rig, "push the release", "make release", "toolu_4")  # the log ends while it waits
    rig.advance(5.0)
    return rig


def test_agent_turns_approvals_and_person_waits_from_the_engines_audit_file(tmp_path: Path) -> None:
    rig = agents_and_people(tmp_path)
    summary = replay(read_events(rig.audit_path).events).as_dict()
    agent, shell = summary["sessions"][AGENT], summary["sessions"][BOT]
    assert (agent["kind"], agent["turns"], agent["tool_calls"]) == ("agent", 3, 2)
    assert (shell["kind"], shell["turns"]) == ("shell", 0)
    assert agent["approvals"] == {
        "requested": 4,
        "by_verdict": {"approve": 1, "deny": 1, "escalate": 2},
        "answered": 3,
        "decisions": {"approved": {"person": 1, "policy": 1}, "denied": {"policy": 1}},
        "open": 1,
        "wait_s": {
            "person": {"count": 1, "total_s": 31.0, "mean_s": 31.0, "max_s": 31.0},
            "policy": {"count": 2, "total_s": 0.0, "mean_s": 0.0, "max_s": 0.0},
        },
    }
    assert agent["person_wait"] == {
        "seconds": 31.0,
        "approvals": 1,
        "approvals_s": 31.0,
        "questions": 0,
        "questions_s": 0.0,
        "open": 1,
    }
    assert shell["questions"] == {
        "asked": 1,
        "replied": 1,
        "open": 0,
        "wait_s": {"count": 1, "total_s": 12.0, "mean_s": 12.0, "max_s": 12.0},
    }
    assert shell["person_wait"]["seconds"] == 12.0
    assert summary["agents"]["sessions"] == [AGENT] and summary["agents"]["person_wait_s"] == 43.0
    assert summary["agents"]["approvals"]["decisions"] == agent["approvals"]["decisions"]

    episodes = summary["approval_episodes"]
    assert [(e["tool_command"], e["verdict"], e["decision"], e["by"], e["outcome"]) for e in episodes] == [
        ("touch notes.txt", "approve", "approved", "policy", "answered"),
        ("rm -rf build", "deny", "denied", "policy", "answered"),
        ("make deploy", "escalate", "approved", "person", "answered"),
        ("make release", "escalate", None, None, "open"),
    ]
    deploy = episodes[2]
    assert seconds_between(deploy["requested"], deploy["queued"]) == 30.0  # the person's answer
    assert seconds_between(deploy["requested"], deploy["answered"]) == 31.0  # the keys typed
    [question] = summary["input_episodes"]
    assert (question["question"], question["waited_s"], question["outcome"]) == ("continue? [y/N]", 12.0, "replied")
    assert seconds_between(question["requested"], question["queued"]) == 10.5


def test_the_text_report_says_who_decided_and_how_long_people_were_waited_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rig = agents_and_people(tmp_path)
    code, out, _ = run_cli(capsys, "--log", str(rig.audit_path))
    assert code == 0
    assert (
        "    agent: 3 turn(s), 2 tool call(s); 4 tool request(s) (approved by person 1, approved by policy 1, "
        "denied by policy 1), 1 open; person waited 1× mean 31.0 s max 31.0 s; "
        "policy waited 2× mean 0.0 s max 0.0 s"
    ) in out
    assert "    waiting for a person: 31.0 s (1 approval(s) 31.0 s); 1 still waiting" in out
    assert "    questions: 1 asked, 1 replied" in out
    assert "    waiting for a person: 12.0 s (1 question(s) 12.0 s)" in out
    assert "approval episodes: 4" in out and "input episodes: 1" in out
    assert f"  {AGENT} #3 Bash `make deploy`: escalate → approved by person after 31.0 s" in out
    assert f"  {AGENT} #5 Bash `make release`: escalate → still waiting since" in out
    assert f"  {BOT} #4 `continue? [y/N]`: replied after 12.0 s" in out


def test_the_agent_run_verifies_against_its_db_and_filters_by_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rig = agents_and_people(tmp_path)
    assert verify_db(replay(read_events(rig.audit_path).events), StateSnapshot(rig.store.path)) == []
    code, out, _ = run_cli(capsys, "--log", str(rig.audit_path), "--session", BOT, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["approval_episodes"] == [] and len(summary["input_episodes"]) == 1
    assert summary["agents"] == {
        "sessions": [],
        "turns": 0,
        "tool_calls": 0,
        "approvals": {"requested": 0, "by_verdict": {}, "decisions": {}, "wait_s": {}},
        "person_wait_s": 12.0,
    }


def test_undelivered_answers_a_window_cut_mid_wait_and_waits_the_command_outlived(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl", clock=(clock := ManualClock()))
    ids = {"command_id": 7, "command": "deploy", "tool": "Bash", "tool_command": "make deploy"}
    log.record("approval_requested", AGENT, verdict="escalate", **ids)
    clock.advance(4.0)
    person = {**ids, "decision": "approved", "by": "person"}
    log.record("approval_answered", AGENT, waited_s=4.0, detail="keys not delivered: x", **person)
    clock.advance(1.0)
    log.record("approval_answered", AGENT, waited_s=5.0, detail="approved", **person)
    log.record("approval_requested", AGENT, verdict="escalate", **ids)
    clock.advance(2.0)
    result = {"status": "cancelled", "exit_code": None, "duration_s": 9.0, "output_tail": ""}
    log.record("command_result", AGENT, command_id=7, command="deploy", **result)
    log.record("input_requested", BOT, command_id=8, command="read x", detail="name?")
    log.record("reply_sent", BOT, command_id=8, command="read x", detail="not delivered: tmux is gone")
    clock.advance(3.0)
    log.record("input_requested", BOT, command_id=8, command="read x", detail="name again?")
    clock.advance(1.0)
    log.record("reply_sent", BOT, command_id=8, command="read x", detail="typed into the pane")
    events = read_events(log.path).events
    summary = replay(events).as_dict()
    assert [(e["outcome"], e["waited_s"]) for e in summary["approval_episodes"]] == [("answered", 5.0), ("ended", None)]
    assert [(e["question"], e["outcome"], e["waited_s"]) for e in summary["input_episodes"]] == [
        ("name?", "ended", None),  # asked again with no reply typed: answered in the pane, length unknown
        ("name again?", "replied", 1.0),
    ]
    assert summary["sessions"][AGENT]["person_wait"]["seconds"] == 5.0
    # a window that starts after the request still counts the answer, with the engine's waited_s
    [answer_only] = replay(select(events, AGENT)[1:3]).as_dict()["approval_episodes"]
    assert (answer_only["requested"], answer_only["waited_s"], answer_only["by"]) == (None, 5.0, "person")


def test_a_queued_line_landing_after_the_engines_lines_does_not_requeue(recorder: Recorder) -> None:
    """`send` commits the command, then appends its `command_queued` line from its own process; a
    fast engine can dispatch and finish it first, so the log may hold the command's later lines
    before its queued one. Replay must not put a dispatched or finished command back in the queue."""
    done, running = recorder.store.enqueue(BOT, "echo fast"), recorder.store.enqueue(BOT, "sleep 5")
    recorder.store.ensure_session(BOT, "weather:bot")
    recorder.dispatch(BOT, done)
    recorder.finish(BOT, done, 0, tail="fast")
    recorder.dispatch(BOT, running)
    for command_id, command in ((done, "echo fast"), (running, "sleep 5")):  # the senders' lines, late
        recorder.audit.record("command_queued", BOT, command_id=command_id, command=command, queue_depth=1)
    replayed = replay(read_events(recorder.audit.path).events)
    assert verify_db(replayed, StateSnapshot(recorder.store.path)) == []
    bot = replayed.sessions[BOT]
    assert (dict(bot.results), bot.queued, bot.running) == ({"succeeded": 1}, {}, {running: "sleep 5"})


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (("--verify-db", "state.db", "--dsn", "dbname=fleet"), "--dsn"),
        (("--dsn", "host=/nonexistent-socket-folder dbname=fleet connect_timeout=2"), "--dsn"),
        (("--dsn", "dbname=fleet", "--limit", "3"), "--limit"),
    ],
    ids=["both-dbs", "unreachable-fleet-db", "partial-replay"],
)
def test_a_bad_fleet_database_is_one_line_and_exit_2(
    recorder: Recorder, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], named: str
) -> None:
    mixed_run(recorder)
    code, out, err = run_cli(capsys, "--log", str(recorder.audit.path), *extra)
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert named in line, line


def test_several_logs_replay_as_one_fleet_in_time_order(
    recorder: Recorder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mixed_run(recorder)
    lines = recorder.audit.path.read_text().splitlines()
    bot = [line for line in lines if f'"session": "{BOT}"' in line or f'"session":"{BOT}"' in line]
    assert bot and len(bot) < len(lines)
    (tmp_path / "h1.jsonl").write_text("".join(f"{line}\n" for line in bot))
    (tmp_path / "h2.jsonl").write_text("".join(f"{line}\n" for line in lines if line not in bot))
    db = str(tmp_path / "state.db")
    whole = run_cli(capsys, "--log", str(recorder.audit.path), "--verify-db", db, "--json")
    split = run_cli(
        capsys, "--log", str(tmp_path / "h2.jsonl"), "--log", str(tmp_path / "h1.jsonl"), "--verify-db", db, "--json"
    )
    assert whole[0] == split[0] == 0
    one, two = json.loads(whole[1]), json.loads(split[1])
    assert two["log"] == [str(tmp_path / "h2.jsonl"), str(tmp_path / "h1.jsonl")]
    assert {k: v for k, v in one.items() if k != "log"} == {k: v for k, v in two.items() if k != "log"}
