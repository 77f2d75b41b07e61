"""The SQLite state store under two writers, and results recorded exactly once."""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from orchestrator.model import CommandResult
from orchestrator.state.db_faults import StateDBError
from orchestrator.state.store import StateStore


def _enqueue_many(path: str, session: str, count: int) -> None:
    store = StateStore(Path(path))
    for i in range(count):
        store.enqueue(session, f"echo {session}-{i}")
    store.close()


def test_two_processes_enqueue_at_once_and_nothing_is_lost(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    StateStore(db).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_enqueue_many, args=(str(db), name, 150)) for name in ("a/one", "b/two")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    store = StateStore(db)
    for name in ("a/one", "b/two"):
        assert [r.command for r in store.queued(name)] == [f"echo {name}-{i}" for i in range(150)]
    assert store.path.with_name("state.db-wal").exists()  # WAL mode


def test_a_result_is_recorded_exactly_once(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.ensure_session("weather/bot", "weather:bot")
    command_id = store.enqueue("weather/bot", "true")
    assert store.mark_running(command_id, "2026-01-01T00:00:00.000000Z")
    assert not store.mark_running(command_id, "2026-01-01T00:00:00.000000Z")
    result = CommandResult(0, "succeeded", "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:01.000000Z", 1.0, "")
    assert store.finish(command_id, result) is True
    assert store.finish(command_id, CommandResult(9, "failed", "x", "y", 2.0, "late")) is False
    last = store.metadata("weather/bot")["last_command_result"]
    assert (last["exit_code"], last["status"], last["duration_s"]) == (0, "succeeded", 1.0)


def test_queue_depth_counts_only_queued_commands(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.ensure_session("weather/bot", "weather:bot")
    store.ensure_session("idle/one", "idle:one")
    ids = [store.enqueue("weather/bot", f"echo {i}") for i in range(3)]
    store.mark_running(ids[0], "2026-01-01T00:00:00.000000Z")
    assert store.queue_depths() == {"weather/bot": 2, "idle/one": 0}
    assert store.next_queued("weather/bot").id == ids[1]
    assert store.revert_to_queued(ids[0]) and store.next_queued("weather/bot").id == ids[0]


# faults: every SQLite failure is a StateDBError naming the file, counted, and a failed write is not kept


def _corrupt_files(tmp_path: Path) -> dict[str, Path]:
    real = tmp_path / "real.db"
    store = StateStore(real)
    for i in range(300):
        store.enqueue("weather/bot", f"echo {i} " + "x" * 200)
    store.close()  # the last connection checkpoints: everything is in the main file
    data = real.read_bytes()
    files = {"garbage": b"\x8f" * 5000, "text": b"hello, not a database\n", "truncated": data[: len(data) // 2]}
    out = {}
    for name, content in files.items():
        path = tmp_path / f"{name}.db"
        path.write_bytes(content)
        out[name] = path
    return out


def test_a_corrupt_garbage_or_truncated_db_is_one_fatal_error_naming_the_file(tmp_path: Path) -> None:
    for name, path in _corrupt_files(tmp_path).items():
        with pytest.raises(StateDBError) as caught:
            store = StateStore(path)
            store.check_integrity()
            store.queued("weather/bot")
        error = caught.value
        assert (error.kind, error.exit_code, error.fatal) == ("corrupt", 2, True), name
        assert str(path) in error.render() and "\n" not in error.render(), name


def test_a_lock_held_past_the_busy_timeout_is_a_counted_retryable_error(tmp_path: Path, caplog) -> None:
    db = tmp_path / "state.db"
    store = StateStore(db, busy_timeout_ms=100)
    kinds: list[str] = []
    store.faults.listeners.append(kinds.append)
    other = sqlite3.connect(str(db), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    with caplog.at_level(logging.INFO, logger="orchestrator.state.db"):
        for _ in range(3):
            with pytest.raises(StateDBError) as caught:
                store.enqueue("weather/bot", "true")
        assert (caught.value.kind, caught.value.exit_code, caught.value.fatal) == ("locked", 1, False)
        assert "database is locked (held by another process" in caught.value.render()
        assert store.queued("weather/bot") == []  # reads go on under the writer's lock (WAL)
        other.execute("COMMIT")
        command_id = store.enqueue("weather/bot", "true")
    assert [r.id for r in store.queued("weather/bot")] == [command_id]  # the refused writes left nothing
    assert kinds == ["locked"] * 3 and store.faults.errors == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("state DB fault" in m for m in messages) == 1  # once per episode, not per error
    assert sum("writable again" in m for m in messages) == 1


def test_a_failed_commit_is_rolled_back_whole(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.ensure_session("weather/bot", "weather:bot")
    command_id = store.enqueue("weather/bot", "true")
    store.mark_running(command_id, "2026-01-01T00:00:00.000000Z")
    result = CommandResult(0, "succeeded", "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:01.000000Z", 1.0, "")
    with pytest.raises(StateDBError), store.transaction() as db:  # a write refused mid-transaction
        db.execute("UPDATE commands SET status='succeeded' WHERE id=?", (command_id,))
        raise sqlite3.OperationalError("database or disk is full")
    assert store.command(command_id).status == "running"
    assert store.finish(command_id, result) is True  # the retry records it, once
    assert store.finish(command_id, result) is False


def test_queue_writes_are_synchronous_full(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    assert store.query("PRAGMA synchronous") == [{"synchronous": 2}]  # FULL: the WAL is fsynced per commit
    assert store.query("PRAGMA journal_mode") == [{"journal_mode": "wal"}]


def test_a_state_db_under_a_regular_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StateDBError) as caught:
        StateStore(tmp_path / "file" / "state.db")
    assert caught.value.exit_code == 2 and str(tmp_path / "file") in caught.value.render()


def commits(store: StateStore) -> list[str]:
    """Every COMMIT the store's connection runs from now on (the trace callback sees each)."""
    seen: list[str] = []
    store._db.set_trace_callback(lambda sql: seen.append(sql) if sql.startswith("COMMIT") else None)
    return seen


def test_a_batch_writes_its_updates_in_one_commit(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    for name in ("a/one", "b/two"):
        store.ensure_session(name, "x:0")
    seen = commits(store)
    with store.batch():
        store.update_metadata("a/one", {"state": "working"})
        store.update_metadata("b/two", {"state": "idle"})
        with store.batch():  # a batch inside a batch joins it
            store.update_metadata("a/one", {"state_detail": "x"})
        assert seen == []
        assert store.metadata("a/one")["state_detail"] == "x"  # the batch reads its own writes
    assert seen == ["COMMIT"]
    other = StateStore(store.path)  # another process sees all of it
    assert (other.metadata("a/one"), other.metadata("b/two")) == (
        {"state": "working", "state_detail": "x"},
        {"state": "idle"},
    )


def commit_levels(store: StateStore) -> list[tuple[str, str]]:
    """(the transaction's first write, the `synchronous` level in force) at each COMMIT."""
    seen: list[tuple[str, str]] = []
    level, first = ["FULL"], [""]

    def trace(sql: str) -> None:
        if sql.startswith("PRAGMA synchronous="):
            level[0] = sql.split("=", 1)[1]
        elif sql.startswith(("UPDATE", "INSERT")) and not first[0]:
            first[0] = sql.split()[0] + " " + sql.split()[1]
        elif sql.startswith("COMMIT"):
            seen.append((first[0], level[0]))
            first[0] = ""

    store._db.set_trace_callback(trace)
    return seen


def test_a_batch_and_the_heartbeat_commit_without_their_own_fsync_and_the_rest_with_one(tmp_path: Path) -> None:
    """A batch (the subscribers' view of a step) and the heartbeat commit under
    `synchronous=NORMAL`: in the WAL, not fsynced on their own. A queued command, a dispatch, a
    result and any other write commit under FULL, before and after."""
    store = StateStore(tmp_path / "state.db")
    store.ensure_session("a/one", "x:0")
    levels = commit_levels(store)
    command_id = store.enqueue("a/one", "true", source="test")
    assert store.mark_running(command_id, "2026-01-01T00:00:00Z")
    with store.batch():
        store.update_metadata("a/one", {"state": "working"})
    store.finish(command_id, CommandResult(0, "succeeded", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", 1.0, ""))
    with store.batch():
        store.update_metadata("a/one", {"state": "idle"})
    store.write_heartbeat(["a/one"], "2026-01-01T00:00:02Z")  # a stamp the next beat writes again
    store.update_metadata("a/one", {"state": "working"})
    assert [level for _, level in levels] == ["FULL", "FULL", "NORMAL", "FULL", "NORMAL", "NORMAL", "FULL"]
    assert store.query("PRAGMA synchronous")[0]["synchronous"] == 2  # FULL again after the batch


def _batch_then_die(db: str) -> None:
    import os
    import signal

    store = StateStore(Path(db))
    with store.batch():
        store.update_metadata("a/one", {"state": "working", "state_detail": "kept"})
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint


def test_a_batch_survives_its_process_being_killed_right_after(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    StateStore(db).ensure_session("a/one", "x:0")
    proc = multiprocessing.get_context("spawn").Process(target=_batch_then_die, args=(str(db),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -9
    assert StateStore(db).metadata("a/one") == {"state": "working", "state_detail": "kept"}


def test_a_write_that_fails_in_a_batch_is_rolled_back_alone(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.ensure_session("a/one", "x:0")
    with store.batch():
        store.update_metadata("a/one", {"state": "working"})
        with pytest.raises(StateDBError), store.transaction() as db:
            db.execute("UPDATE sessions SET metadata='{\"broken\": true}' WHERE name='a/one'")
            raise sqlite3.OperationalError("database or disk is full")
        store.update_metadata("a/one", {"state_detail": "after"})
    assert StateStore(store.path).metadata("a/one") == {"state": "working", "state_detail": "after"}


def test_a_batch_that_cannot_start_runs_its_writes_one_by_one(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = StateStore(db, busy_timeout_ms=100)
    store.ensure_session("a/one", "x:0")
    other = sqlite3.connect(str(db), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    with store.batch():  # BEGIN is refused: nothing raised here, each write meets the lock itself
        with pytest.raises(StateDBError):
            store.update_metadata("a/one", {"state": "working"})
        other.execute("COMMIT")
        store.update_metadata("a/one", {"state": "idle"})  # the lock is gone: this one is kept
    assert StateStore(db).metadata("a/one") == {"state": "idle"}
