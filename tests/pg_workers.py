"""The processes of tests/test_pg_store.py (spawned: each its own interpreter and its own
PgStateStore). A module of their own that imports only the store, so a spawned child starts in
well under a second instead of importing pytest and the test module."""

from __future__ import annotations

import time
from typing import Any

from orchestrator.state.pg_errors import PgStateDBError
from orchestrator.state.pg_store import PgStateStore

SESSIONS = ("gpu-1/a", "gpu-2/b", "gpu-3/c")


def claim(dsn: str, how: str, ready: Any, done: Any, out: Any, pace_s: float = 0.0) -> None:
    """A claimer process: claims from every session until `done` is set and a pass finds
    nothing; a retryable fault is waited out (as an orchestrator would). Sends back the ids it
    claimed and how many faults it met."""
    store, claimed, faults = PgStateStore(dsn), [], 0
    ready.put(how)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        finished, got = done.is_set(), 0
        for session in SESSIONS:
            try:
                if how == "claim_next":
                    row = store.claim_next(session)
                    ids = [row.id] if row else []
                else:  # the engine's path today: look, then claim that one
                    row = store.next_queued(session)
                    ids = [row.id] if row and store.mark_running(row.id, "2026-01-01T00:00:00.000000Z") else []
            except PgStateDBError as exc:
                assert exc.retryable, exc.render()
                faults += 1
                time.sleep(0.05)
                continue
            claimed += ids
            got += len(ids)
            if pace_s:
                time.sleep(pace_s)
        if finished and not got:
            break
    store.close()
    out.put((claimed, faults))


def enqueue_one(dsn: str, session: str) -> None:
    PgStateStore(dsn).enqueue(session, "echo wake")
