"""The SQLite state store under two writers, and results recorded exactly once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from orchestrator.model import CommandResult
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
