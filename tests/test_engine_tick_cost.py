"""What a loop round costs in SQL, counted, not timed: an idle round runs the same few
statements whatever the number of sessions, and the queue depth is read from the trigger-kept
table, never by scanning a queue of 10,000 commands — and stays exact through every change."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator.events import HeartbeatTick
from orchestrator.model import CommandResult, Readiness
from orchestrator.state.store import StateStore

from .engine_fakes import session
from .engine_rig import Rig, make_rig

IDLE_TICKS = 40  # 4 s of 0.1 s rounds: two heartbeat writes and four liveness rounds included
S = "weather/bot"


@contextmanager
def statements(store: StateStore) -> Iterator[list[str]]:
    """Every SQL statement the store's connection runs inside the block."""
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        store._db.set_trace_callback(None)


def idle_rig(tmp_path: Path, sessions: int) -> Rig:
    rig = make_rig(tmp_path, sessions=[session(f"s/{i}", f"s{i}:0") for i in range(sessions)])
    for _ in range(30):  # past the first probes and the start-up writes
        rig.advance(0.1)
    return rig


def idle_statements(rig: Rig) -> list[str]:
    with statements(rig.store) as seen:
        for _ in range(IDLE_TICKS):
            rig.advance(0.1)
    return seen


def test_an_idle_round_costs_the_same_statements_at_1_and_50_sessions(tmp_path: Path) -> None:
    one = idle_statements(idle_rig(tmp_path / "one", 1))
    fifty = idle_statements(idle_rig(tmp_path / "fifty", 50))
    assert len(fifty) == len(one)
    assert len(one) <= 2 * IDLE_TICKS  # a data_version look a round, plus the heartbeat's share
    assert sum("data_version" in sql for sql in fifty) == IDLE_TICKS
    assert not any("FROM commands" in sql for sql in fifty)  # nothing asks the queue itself


def test_a_command_queued_by_another_process_is_seen_by_the_next_round(tmp_path: Path) -> None:
    rig = idle_rig(tmp_path, 3)
    other = StateStore(rig.store.path)  # another connection: what `tmux-agent send` is
    command_id = other.enqueue("s/1", "make test")
    rig.advance(0.1)
    assert rig.driver.delivered == [(command_id, "%1")]
    other.close()


def test_a_session_with_work_queued_is_served_before_the_idle_probes(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, sessions=[session(f"s/{i}", f"s{i}:0") for i in range(5)])
    order: list[str] = []
    real_probe = rig.driver.probe

    def probe(pane_id: str, *, dispatch: bool = True) -> Readiness:
        order.append(pane_id if dispatch else f"idle {pane_id}")
        return real_probe(pane_id, dispatch=dispatch)

    rig.driver.probe = probe  # type: ignore[method-assign]
    rig.send("make", "s/4")
    rig.advance(0.1)  # the first round after start: every pane is probed, the queued one first
    assert order[0] == "%4" and sorted(order[1:]) == [f"idle %{i}" for i in range(4)]


def bulk_queue(path: Path, name: str, count: int) -> None:
    """`count` queued commands in one transaction, written by another connection."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO commands(session, command, source, queued_at) VALUES (?, ?, 'bulk', '2026-01-01T00:00:00Z')",
        [(name, f"echo {i}") for i in range(count)],
    )
    db.execute("COMMIT")
    db.close()


def counted(store: StateStore) -> dict[str, int]:
    """The truth, the slow way: a count of the queue."""
    rows = store.query("SELECT session, COUNT(*) AS n FROM commands WHERE status='queued' GROUP BY session")
    return {r["session"]: r["n"] for r in rows}


def test_the_queue_depth_stays_exact_through_10k_queued_without_scanning_them(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    ticks: list[HeartbeatTick] = []
    rig.sup.bus.subscribe(HeartbeatTick, ticks.append)
    bulk_queue(rig.store.path, S, 10_000)
    assert rig.store.queue_depths() == counted(rig.store) == {S: 10_000}

    rig.advance(0.1)  # dispatch: one is running
    [(first, _)] = rig.driver.delivered
    assert rig.status(first) == "running" and ticks[-1].queue_depths == {S: 9_999} == counted(rig.store)
    rig.driver.end(first, 0)
    rig.advance(0.1)  # finish, and the next is dispatched in the same round
    assert rig.status(first) == "succeeded" and ticks[-1].queue_depths == {S: 9_998} == counted(rig.store)

    db = sqlite3.connect(rig.store.path, isolation_level=None)  # cancelled and removed by hand
    db.execute("UPDATE commands SET status='cancelled' WHERE status='queued' AND id % 2 = 0")
    db.execute("DELETE FROM commands WHERE status='queued' AND id % 5 = 0")
    db.close()
    rig.advance(0.1)
    assert ticks[-1].queue_depths == counted(rig.store) == rig.store.queue_depths()
    with statements(rig.store) as seen:
        depth = rig.store.queue_depths()[S]
    assert depth == counted(rig.store)[S] and not any("commands" in sql for sql in seen)


def test_requeue_and_a_move_to_another_session_keep_both_depths(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    for name in ("a", "b"):
        store.ensure_session(name, f"{name}:0")
    ids = [store.enqueue("a", "true") for _ in range(3)]
    store.mark_running(ids[0], "2026-01-01T00:00:00.000000Z")
    assert store.queue_depths() == {"a": 2, "b": 0}
    store.revert_to_queued(ids[0])
    assert store.queue_depths() == {"a": 3, "b": 0}
    store.query("SELECT 1")  # reads change nothing
    with store.transaction() as db:
        db.execute("UPDATE commands SET session='b' WHERE id=?", (ids[1],))
    assert store.queue_depths() == {"a": 2, "b": 1} == {**{"b": 0}, **counted(store)}
    store.mark_running(ids[2], "2026-01-01T00:00:00.000000Z")
    result = CommandResult(0, "succeeded", "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:01.000000Z", 1.0, "")
    assert store.finish(ids[2], result)
    assert store.queue_depths() == {"a": 1, "b": 1} == counted(store)


def test_an_older_db_without_the_depth_table_is_counted_once_on_open(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    store.ensure_session(S, "weather:bot")
    store.close()
    bulk_queue(path, S, 25)
    db = sqlite3.connect(path, isolation_level=None)  # as a version before the table left it
    db.execute("DROP TRIGGER queue_depth_insert")
    db.execute("DROP TABLE queue_depth")
    db.close()
    reopened = StateStore(path)
    assert reopened.queue_depths() == {S: 25}
    reopened.enqueue(S, "true")
    assert reopened.queue_depths() == {S: 26} == counted(reopened)


def test_a_round_reads_its_own_writes_and_the_next_round_everyone_elses(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.ensure_session(S, "weather:bot")
    other = sqlite3.connect(store.path, isolation_level=None)
    with store.round():
        assert store.metadata(S) == {}
        store.update_metadata(S, {"x-mine": 1})
        assert store.metadata(S) == {"x-mine": 1}  # its own commit drops the snapshot
        other.execute("""UPDATE sessions SET metadata='{"x-theirs": 2}'""")
        assert store.metadata(S) == {"x-mine": 1}  # one snapshot per round
        changed = store.metadata(S)
        changed["x-mine"] = 99  # a reader's copy is its own
        assert store.metadata(S) == {"x-mine": 1}
    assert store.metadata(S) == {"x-theirs": 2}  # outside a round: the DB itself
    with store.round():
        assert store.metadata(S) == {"x-theirs": 2}
    other.close()


@pytest.mark.parametrize("stored", ["[1, 2]", "not json"])
def test_the_heartbeat_replaces_metadata_that_is_not_an_object(tmp_path: Path, stored: str) -> None:
    store = StateStore(tmp_path / "state.db")
    for name in ("a", "b"):
        store.ensure_session(name, f"{name}:0")
    store.update_metadata("a", {"x-keep": "ü"})
    db = sqlite3.connect(store.path, isolation_level=None)
    db.execute("UPDATE sessions SET metadata=? WHERE name='b'", (stored,))
    db.close()
    store.write_heartbeat(["a", "b"], "2026-01-01T00:00:00.000000Z")
    assert store.metadata("a") == {"x-keep": "ü", "orchestrator_heartbeat": "2026-01-01T00:00:00.000000Z"}
    assert store.metadata("b") == {"orchestrator_heartbeat": "2026-01-01T00:00:00.000000Z"}


@pytest.mark.parametrize("running", [1, 20])
def test_liveness_asks_tmux_once_a_round_whatever_the_number_of_running_commands(tmp_path: Path, running: int) -> None:
    rig = make_rig(tmp_path, sessions=[session(f"s/{i}", f"s{i}:0") for i in range(running)])
    for i in range(running):
        rig.send("sleep 600", name=f"s/{i}")
    rig.advance(0.1)
    assert len(rig.store.running()) == running
    before = rig.panes.pane_lists
    for _ in range(IDLE_TICKS):  # four liveness rounds
        rig.advance(0.1)
    assert 3 <= rig.panes.pane_lists - before <= 5
    assert len(rig.store.running()) == running  # every pane was found alive


@pytest.mark.parametrize("stored", ['{"x-keep": "ü"}', "[1, 2]"])
def test_the_heartbeat_patches_the_rounds_snapshot_instead_of_dropping_it(tmp_path: Path, stored: str) -> None:
    """Every session's heartbeat is written every two seconds: were that an ordinary commit, each
    one would drop the round's snapshot and bump its generation, and every session's metadata
    would be read, cleaned and judged again (the streak gauges, decision assist). The round still
    reads its own write, exactly as the DB now holds it."""
    store = StateStore(tmp_path / "state.db")
    for name in ("a", "b"):
        store.ensure_session(name, f"{name}:0")
    db = sqlite3.connect(store.path, isolation_level=None)
    db.execute("UPDATE sessions SET metadata=? WHERE name='a'", (stored,))
    db.close()
    stamp = "2026-01-01T00:00:00.000000Z"
    with store.round():
        before = (store.metadata("a"), store.metadata_view("b"), store.generation)
        with statements(store) as seen:
            store.write_heartbeat(["a", "b"], stamp)
            during = (store.metadata("a"), dict(store.metadata_view("b")), store.generation)
        assert not any(sql.lstrip().upper().startswith("SELECT") for sql in seen)  # nothing read again
    assert during[2] == before[2]
    assert during[:2] == (store.metadata("a"), store.metadata("b"))  # what the DB holds outside a round
    assert during[0]["orchestrator_heartbeat"] == during[1]["orchestrator_heartbeat"] == stamp
    store.update_metadata("a", {"x-other": 1})
    assert store.generation > during[2]  # any other write still drops it


def test_every_idle_sessions_probe_falls_in_the_same_round(tmp_path: Path) -> None:
    """Idle probes are scheduled on shared beats of `idle_probe_seconds`, so one round probes the
    whole fleet (one pane table for all) instead of a few sessions in every round."""
    rig = idle_rig(tmp_path, 20)
    for i in range(3):  # commands ending at odd moments put their sessions' next probe anywhere
        rig.advance(0.3)
        cid = rig.send("true", name=f"s/{i}")
        rig.advance(0.1)
        rig.driver.end(cid, 0)
        rig.advance(0.1)
    rounds: list[set[str]] = []
    probe = rig.driver.probe

    def counted(pane_id: str, *, dispatch: bool = True) -> Readiness:
        rounds[-1].add(pane_id)
        return probe(pane_id, dispatch=dispatch)

    rig.driver.probe = counted  # type: ignore[method-assign]
    for _ in range(IDLE_TICKS):
        rounds.append(set())
        rig.advance(0.1)
    probing = [len(r) for r in rounds if r]
    assert probing and set(probing) == {20}, probing  # each probing round probes all 20
