"""`tmux-agent-orchestrator-replay`: counts, span, rates, episodes, a tolerant
reader, `--session` before `--limit`, and `--verify-db` against a state DB."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.cli.replay_main import main as replay_main
from orchestrator.clock import ManualClock, iso_utc
from orchestrator.model import CommandResult
from orchestrator.state.audit import AuditLog, read_events
from orchestrator.state.replay import replay, select, verify_db
from orchestrator.state.snapshot import StateSnapshot
from orchestrator.state.store import StateStore

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
    assert f"{path}:2: malformed line skipped" in out and f"{path}:5: truncated last line skipped" in out
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
