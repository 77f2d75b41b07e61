"""One behaviour, two stores: every test here runs on the SQLite `StateStore` and on the
PostgreSQL `PgStateStore` (a real server, see pytest_tmuxagent/postgres.py), so a fleet on
PostgreSQL sees its queue and metadata exactly as one machine on SQLite does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.model import CommandResult
from orchestrator.state.store import StateStore

T0 = "2026-01-01T00:00:00.000000Z"


def result(status: str = "succeeded", exit_code: int | None = 0) -> CommandResult:
    return CommandResult(exit_code, status, T0, "2026-01-01T00:00:01.000000Z", 1.0, "done")  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """Opens stores of one kind on one fresh place (each call another connection to it)."""
    opened: list[Any] = []
    if request.param == "sqlite":

        def make() -> Any:
            opened.append(StateStore(tmp_path / "state.db"))
            return opened[-1]
    else:
        from orchestrator.state.pg_store import PgStateStore

        dsn = request.getfixturevalue("postgres_dsn")

        def make() -> Any:
            opened.append(PgStateStore(dsn))
            return opened[-1]

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def any_store(open_store: Callable[[], Any]) -> Any:
    """A fresh store of each kind."""
    return open_store()


def test_commands_are_queued_and_listed_in_order(any_store: Any) -> None:
    ids = [any_store.enqueue("a/one", f"echo {i}") for i in range(4)]
    other = any_store.enqueue("b/two", "echo other", source="dashboard")
    assert ids == sorted(ids) and other > ids[-1]
    assert [r.command for r in any_store.queued("a/one")] == [f"echo {i}" for i in range(4)]
    assert any_store.next_queued("a/one").id == ids[0]
    assert [r.id for r in any_store.commands("a/one", limit=2)] == [ids[3], ids[2]]
    assert [r.id for r in any_store.commands()][:2] == [other, ids[3]]
    row = any_store.command(other)
    assert (row.session, row.status, row.source, row.attempts, row.started_at) == (
        "b/two",
        "queued",
        "dashboard",
        0,
        None,
    )
    assert any_store.command(other + 1000) is None and any_store.next_queued("c/none") is None


def test_queue_depths_follow_every_status_change(any_store: Any) -> None:
    any_store.ensure_session("a/one", "a:0")
    any_store.ensure_session("idle/two", "idle:0")
    ids = [any_store.enqueue("a/one", f"echo {i}") for i in range(5)]
    assert any_store.queue_depths() == {"a/one": 5, "idle/two": 0}
    depths = []
    for command_id, status in zip(ids[:4], ("succeeded", "failed", "stalled", "cancelled"), strict=True):
        assert any_store.mark_running(command_id, T0)
        depths.append(any_store.queue_depth("a/one"))
        assert any_store.finish(command_id, result(status))
        depths.append(any_store.queue_depth("a/one"))
    assert depths == [4, 4, 3, 3, 2, 2, 1, 1]
    assert [any_store.command(i).status for i in ids] == ["succeeded", "failed", "stalled", "cancelled", "queued"]
    assert any_store.mark_running(ids[4], T0) and any_store.queue_depths() == {"a/one": 0, "idle/two": 0}
    assert [r.id for r in any_store.running()] == [ids[4]]
    assert any_store.revert_to_queued(ids[4]) and any_store.queue_depths() == {"a/one": 1, "idle/two": 0}
    any_store.enqueue("unknown/three", "true")  # queued for a session nobody configured
    assert any_store.queue_depth("unknown/three") == 1 and "unknown/three" not in any_store.queue_depths()


def test_a_command_is_started_and_finished_exactly_once(any_store: Any) -> None:
    any_store.ensure_session("a/one", "a:0")
    command_id = any_store.enqueue("a/one", "true")
    assert any_store.finish(command_id, result()) is False  # never started: nothing to finish
    assert any_store.mark_running(command_id, T0) is True
    assert any_store.mark_running(command_id, T0) is False
    assert any_store.finish(command_id, result()) is True
    assert any_store.finish(command_id, result("failed", 9)) is False
    row = any_store.command(command_id)
    assert (row.status, row.exit_code, row.duration_s, row.output_tail, row.attempts) == (
        "succeeded",
        0,
        1.0,
        "done",
        1,
    )
    last = any_store.metadata("a/one")["last_command_result"]
    assert (last["command_id"], last["command"], last["status"], last["exit_code"]) == (
        command_id,
        "true",
        "succeeded",
        0,
    )
    assert any_store.revert_to_queued(command_id) is False  # a finished command stays finished


def test_a_reverted_command_is_next_again_and_counts_its_attempts(any_store: Any) -> None:
    first, second = any_store.enqueue("a/one", "echo 1"), any_store.enqueue("a/one", "echo 2")
    assert any_store.revert_to_queued(first) is False  # only a running command goes back
    assert any_store.mark_running(first, T0)
    assert any_store.next_queued("a/one").id == second
    assert any_store.revert_to_queued(first) is True
    row = any_store.command(first)
    assert (row.status, row.started_at, row.attempts) == ("queued", None, 1)
    assert any_store.next_queued("a/one").id == first
    assert any_store.mark_running(first, T0) and any_store.command(first).attempts == 2


def test_metadata_merges_and_modifies_one_key(any_store: Any) -> None:
    any_store.ensure_session("a/one", "a:0")
    assert any_store.metadata("a/one") == {}
    assert any_store.update_metadata("a/one", {"blockers": ["x"], "state": "idle"}) == {
        "blockers": ["x"],
        "state": "idle",
    }
    assert any_store.update_metadata("a/one", {"state": "working"}) == {"blockers": ["x"], "state": "working"}
    assert any_store.modify_metadata("a/one", "blockers", lambda old: [*old, "y"]) == ["x", "y"]
    assert any_store.modify_metadata("a/one", "note", lambda old: f"was {old}") == "was None"
    assert [any_store.increment_metadata("a/one", "failure_streak") for _ in range(3)] == [1, 2, 3]
    assert any_store.raw_metadata("a/one") == {
        "blockers": ["x", "y"],
        "state": "working",
        "note": "was None",
        "failure_streak": 3,
    }
    assert any_store.update_metadata("new/two", {"state": "idle"}) == {"state": "idle"}  # makes the session
    assert any_store.session_names() == ["a/one", "new/two"]
    any_store.ensure_session("a/one", "a:1")  # a new target keeps the metadata
    assert any_store.metadata("a/one")["failure_streak"] == 3


def test_heartbeat_is_written_into_each_named_session_only(any_store: Any) -> None:
    for name in ("a/one", "b/two", "c/three"):
        any_store.ensure_session(name, "x:0")
    any_store.update_metadata("a/one", {"state": "idle"})
    any_store.write_heartbeat(["a/one", "b/two", "missing/four"], "2026-01-01T00:00:05.000000Z")
    assert any_store.metadata("a/one") == {"state": "idle", "orchestrator_heartbeat": "2026-01-01T00:00:05.000000Z"}
    assert any_store.metadata("b/two") == {"orchestrator_heartbeat": "2026-01-01T00:00:05.000000Z"}
    assert any_store.metadata("c/three") == {}
    assert any_store.session_names() == ["a/one", "b/two", "c/three"]  # a heartbeat creates no session
    any_store.write_heartbeat(["a/one"], "2026-01-01T00:00:10.000000Z")
    assert any_store.metadata("a/one")["orchestrator_heartbeat"] == "2026-01-01T00:00:10.000000Z"


def test_another_connection_sees_every_write(open_store: Callable[[], Any]) -> None:
    writer, reader = open_store(), open_store()
    writer.ensure_session("a/one", "a:0")
    command_id = writer.enqueue("a/one", "true")
    writer.update_metadata("a/one", {"state": "working"})
    assert reader.next_queued("a/one").id == command_id and reader.metadata("a/one") == {"state": "working"}
    assert reader.mark_running(command_id, T0) and writer.mark_running(command_id, T0) is False
    assert writer.finish(command_id, result()) and reader.finish(command_id, result()) is False


def test_a_batch_is_one_transaction_kept_or_dropped_whole(open_store: Callable[[], Any]) -> None:
    store, other = open_store(), open_store()
    store.ensure_session("a/one", "a:0")
    with store.batch():
        store.update_metadata("a/one", {"state": "working"})
        with store.batch():  # a batch inside a batch joins it
            store.update_metadata("a/one", {"state_detail": "x"})
        assert store.metadata("a/one") == {"state": "working", "state_detail": "x"}  # reads its own writes
        assert other.metadata("a/one") == {}  # nobody else sees it before the commit
    assert other.metadata("a/one") == {"state": "working", "state_detail": "x"}
    with pytest.raises(RuntimeError), store.batch():
        store.enqueue("a/one", "echo lost")
        store.update_metadata("a/one", {"state": "idle"})
        raise RuntimeError("the step failed")
    assert other.queued("a/one") == [] and other.metadata("a/one")["state"] == "working"
    with store.round():  # a loop round reads the same store
        assert store.queue_depths() == {"a/one": 0} and store.metadata_view("a/one")["state"] == "working"


def test_a_value_that_breaks_the_schema_is_absent_to_readers_but_kept_as_stored(any_store: Any) -> None:
    any_store.update_metadata("a/one", {"failure_streak": "three", "blockers": ["x"]})
    assert any_store.metadata("a/one") == {"blockers": ["x"]}
    assert any_store.raw_metadata("a/one") == {"failure_streak": "three", "blockers": ["x"]}
    assert any_store.increment_metadata("a/one", "failure_streak") == 1  # counted again from nothing


def test_the_outbox_queues_dedupes_and_ends_each_message_once(any_store: Any) -> None:
    from orchestrator.state.outbox import Outbox

    outbox = Outbox(any_store)
    first = outbox.add(dedupe_key="k", kind="failure", session="s", title="t", body="b%?", dedupe_seconds=60)
    again = outbox.add(dedupe_key="k", kind="failure", session="s", title="t", body="b", dedupe_seconds=60)
    other = outbox.add(dedupe_key="k2", kind="failure", session=None, title="t2", body="b2", dedupe_seconds=60)
    assert first is not None and other is not None and other > first and again is None
    assert [m.id for m in outbox.due()] == [first, other] and outbox.all()[0].body == "b%?"
    outbox.mark_sent(first, "wecom")
    outbox.mark_sent(first, "wecom")  # a second mark of a sent message changes nothing
    outbox.mark_dead(other, "errcode 93000", "channel")
    assert [(m.status, m.attempts, m.channel) for m in outbox.all()] == [("sent", 1, "wecom"), ("dead", 1, None)]
    assert outbox.revive(since=0) == 1 and [m.id for m in outbox.pending()] == [other]
    outbox.set_health({"state": "ok"})
    assert Outbox(any_store).health() == {"state": "ok"}  # a second opening keeps the tables and rows
