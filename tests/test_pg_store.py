"""What only the PostgreSQL store has to prove, on a real server: claims racing across
processes, NOTIFY waking a listener at commit, a restart and a dropped connection, and the
schema version check."""

from __future__ import annotations

import multiprocessing
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from orchestrator.state.db_faults import StateDBError
from orchestrator.state.pg_errors import PgStateDBError
from orchestrator.state.pg_store import SCHEMA_VERSION, PgStateStore
from pytest_tmuxagent.postgres import PostgresServer
from pytest_tmuxagent.waiting import wait_until

from .pg_workers import SESSIONS, claim, enqueue_one

CTX = multiprocessing.get_context("spawn")


def _from(channel: Any, procs: list[Any]) -> Any:
    """The next message from the claimers; fails at once when one of them died instead."""

    deadline = time.monotonic() + 60
    while True:
        try:
            return channel.get(timeout=0.1)
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            assert not dead, f"a claimer process died: exit codes {dead}"
            assert time.monotonic() < deadline, "no message from the claimers in 60 s"


def _run_claimers(dsn: str, hows: tuple[str, ...], during: Any, pace_s: float = 0.0) -> tuple[list[int], int]:
    """Start the claimer processes, run `during()` while they claim, then collect their ids."""
    ready, done, out = CTX.Queue(), CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=claim, args=(dsn, how, ready, done, out, pace_s)) for how in hows]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:  # every claimer has its store before anything happens
            _from(ready, procs)
        during()
    finally:
        done.set()
        results = [_from(out, procs) for _ in procs]
        for proc in procs:
            proc.join(30)
    assert [proc.exitcode for proc in procs] == [0] * len(procs)
    return [i for ids, _ in results for i in ids], sum(faults for _, faults in results)


def test_three_processes_claiming_at_once_take_each_command_exactly_once(postgres_dsn: str) -> None:
    store = PgStateStore(postgres_dsn)
    queued: list[int] = []

    def enqueue_300() -> None:
        for i in range(100):
            queued.extend(store.enqueue(session, f"echo {i}") for session in SESSIONS)

    claimed, faults = _run_claimers(postgres_dsn, ("claim_next", "claim_next", "mark_running"), enqueue_300)
    assert faults == 0
    assert len(queued) == 300 and sorted(claimed) == sorted(queued)  # none lost
    assert [i for i, n in Counter(claimed).items() if n > 1] == []  # none twice
    rows = store.commands(limit=1000)
    assert {(r.status, r.attempts) for r in rows} == {("running", 1)} and len(rows) == 300


def test_an_enqueue_from_another_process_wakes_the_listener_with_the_command_visible(postgres_dsn: str) -> None:
    store = PgStateStore(postgres_dsn)
    woken: queue.Queue[tuple[str | None, int | None]] = queue.Queue()
    reader = PgStateStore(postgres_dsn)
    reader_lock = threading.Lock()

    def on_queued(session: str | None) -> None:
        with reader_lock:
            row = reader.next_queued(session) if session else None
        woken.put((session, row.id if row else None))

    listener = store.listen(on_queued)
    try:
        assert listener.listening.wait(10)
        with pytest.raises(RuntimeError), store.batch():  # rolled back: no command, so no ring
            store.enqueue("rolled/back", "echo never")
            raise RuntimeError("the step failed")
        proc = CTX.Process(target=enqueue_one, args=(postgres_dsn, "gpu-2/b"))
        proc.start()
        proc.join(30)
        assert proc.exitcode == 0
        session, seen_id = woken.get(timeout=10)  # NOTIFY is delivered in commit order: this is the first
        assert session == "gpu-2/b"
        assert seen_id is not None and seen_id == store.next_queued("gpu-2/b").id  # visible when rung
    finally:
        listener.close()
    assert not listener._thread.is_alive()


def test_a_listener_whose_connection_drops_listens_again_and_says_so(postgres_dsn: str) -> None:
    store = PgStateStore(postgres_dsn)
    woken: queue.Queue[str | None] = queue.Queue()
    listener = store.listen(woken.put)
    try:
        assert listener.listening.wait(10)
        store.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
        assert woken.get(timeout=10) is None  # "anything may have been queued meanwhile"
        wait_until(listener.listening.is_set, timeout=10, message="LISTEN again")
        store.enqueue("gpu-1/a", "echo after")
        assert woken.get(timeout=10) == "gpu-1/a"
    finally:
        listener.close()


def test_a_restart_mid_run_loses_nothing_and_claims_nothing_twice(
    tmuxagent_postgres: PostgresServer, postgres_dsn: str
) -> None:
    store = PgStateStore(postgres_dsn)
    queued = [store.enqueue(SESSIONS[i % 3], f"echo {i}") for i in range(150)]

    before: list[int] = []

    def restart_after_some_claims() -> None:
        before.append(wait_until(lambda: len(store.running()) >= 20 and len(store.running()), timeout=30))
        tmuxagent_postgres.restart()

    claimed, faults = _run_claimers(postgres_dsn, ("claim_next", "claim_next"), restart_after_some_claims, 0.008)
    print(f"claimed before the restart: {before[0]}, faults met by the claimers: {faults}")
    assert before[0] < len(queued) and faults >= 1  # the restart came mid-run, and the claimers met it
    assert [i for i, n in Counter(claimed).items() if n > 1] == []  # none twice
    rows = {r.id: r for r in store.commands(limit=1000)}  # the store reconnects on its own
    assert set(rows) == set(queued) and {r.status for r in rows.values()} == {"running"}
    assert {r.attempts for r in rows.values()} == {1}
    # a claim whose COMMIT was cut off is running but was never reported to its claimer: at most
    # one per fault the claimers met (the engine's restart recovery owns those), never lost silently
    orphans = set(queued) - set(claimed)
    print(f"claims committed but never reported to a claimer: {len(orphans)}")
    assert len(orphans) <= faults


def test_a_dropped_connection_is_a_retryable_fault_and_the_next_call_reconnects(postgres_dsn: str) -> None:
    store = PgStateStore(postgres_dsn)
    kinds: list[str] = []
    store.faults.listeners.append(kinds.append)
    killer = PgStateStore(postgres_dsn)

    def kill_the_store_connection() -> None:
        killer.query("SELECT pg_terminate_backend(?)", (store._connection().info.backend_pid,))

    with pytest.raises(StateDBError) as caught, store.transaction() as db:  # mid-transaction: cut off
        db.execute("INSERT INTO sessions(name, target, updated_at) VALUES ('lost/one', '', 'x')")
        kill_the_store_connection()
        db.execute("SELECT 1")
    error = caught.value
    assert isinstance(error, PgStateDBError) and (error.kind, error.retryable, error.exit_code) == ("io", True, 1)
    assert "\n" not in error.render() and kinds == ["io"]
    assert store.session_names() == []  # the cut-off transaction left nothing; this call reconnected
    kill_the_store_connection()  # dies while idle: the next write reconnects before it starts
    command_id = store.enqueue("gpu-1/a", "true")
    assert store.next_queued("gpu-1/a").id == command_id and kinds == ["io"]


def test_an_unreachable_server_is_one_retryable_line_without_the_password(tmp_path: Any) -> None:
    dsn = f"host={tmp_path} port=1 user=tmuxagent password=s3cret-pw dbname=nowhere"
    with pytest.raises(PgStateDBError) as caught:
        PgStateStore(dsn, connect_timeout_s=2)
    line = caught.value.render()
    assert (caught.value.kind, caught.value.retryable) == ("io", True)
    assert "s3cret-pw" not in line and "\n" not in line and "postgresql://tmuxagent@" in line


def test_a_database_from_a_newer_version_is_one_fatal_line(postgres_dsn: str) -> None:
    store = PgStateStore(postgres_dsn)
    assert store.schema_version() == SCHEMA_VERSION
    PgStateStore(postgres_dsn).close()  # opening again applies nothing twice
    assert store.query("SELECT version FROM schema_version") == [{"version": v} for v in range(1, SCHEMA_VERSION + 1)]
    with store.transaction() as db:
        db.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(PgStateDBError) as caught:
        PgStateStore(postgres_dsn)
    error = caught.value
    assert (error.exit_code, error.fatal, error.retryable) == (2, True, False)
    assert f"schema version {SCHEMA_VERSION + 1}" in error.render() and "upgrade tmuxagent" in error.render()


def test_stores_opening_a_new_database_at_once_migrate_it_once(postgres_dsn: str) -> None:
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            PgStateStore(postgres_dsn).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone() == (SCHEMA_VERSION,)


def test_the_cli_never_imports_psycopg() -> None:
    probe = "import sys, orchestrator.cli.main, orchestrator.state.store; print('psycopg' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"
