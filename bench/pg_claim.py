"""Claim throughput and wake latency of the PostgreSQL state store, beside SQLite, in one run.

Claims: N commands queued for 3 sessions, then 3 processes (spawned, each its own store) claim
them all at once; commands claimed per second from the start signal to the last claim. Three
ways: PostgreSQL's `claim_next` (one UPDATE … FOR UPDATE SKIP LOCKED), PostgreSQL's
`next_queued` + `mark_running` (the engine's path today), and SQLite's `next_queued` +
`mark_running` (the product's store, synchronous=FULL on this disk). The PostgreSQL servers are
throw-away clusters (pytest_tmuxagent/postgres.py): the tests' one with fsync and synchronous
commit off, and a durable one (both on, as SQLite's FULL) for the fair comparison.

Wake: a listener (`PgStateStore.listen`) in this process, another process enqueues one command
every few milliseconds; the time from just before `enqueue` to the notification's callback.

The machine may be shared: each way runs `--repeat` times, the ways interleaved round by round,
and the median (with the range) is shown. A benchmark: it prints numbers, it asserts nothing.

    .venv/bin/python bench/pg_claim.py [--commands 2000] [--repeat 3] [--wakes 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.state.pg_store import PgStateStore
from orchestrator.state.store import StateStore
from pytest_tmuxagent.postgres import PostgresServer

SESSIONS = ("host-1/a", "host-2/b", "host-3/c")
CLAIMERS = 3
STARTED = "2026-01-01T00:00:00.000000Z"
CTX = multiprocessing.get_context("spawn")


def _open(where: str) -> Any:
    return StateStore(Path(where)) if where.endswith(".db") else PgStateStore(where)


def _claimer(where: str, how: str, ready: Any, go: Any, out: Any) -> None:
    """Claim until a pass over every session finds nothing; report (count, time of the last claim)."""
    store = _open(where)
    ready.put(1)
    go.wait()
    count, last = 0, time.time()
    while True:
        got = 0
        for session in SESSIONS:
            if how == "claim_next":
                got += store.claim_next(session) is not None
            else:
                row = store.next_queued(session)
                got += bool(row and store.mark_running(row.id, STARTED))
        if not got:
            break
        count, last = count + got, time.time()
    store.close()
    out.put((count, last))


def claim_rate(where: str, how: str, commands: int) -> dict[str, Any]:
    store = _open(where)
    for i in range(commands):
        store.enqueue(SESSIONS[i % len(SESSIONS)], f"echo {i}")
    ready, go, out = CTX.Queue(), CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=_claimer, args=(where, how, ready, go, out)) for _ in range(CLAIMERS)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=60)
    start = time.time()
    go.set()
    results = [out.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(30)
    claimed = sum(count for count, _ in results)
    elapsed = max(last for _, last in results) - start
    left = sum(store.queue_depth(s) for s in SESSIONS)
    store.close()
    return {"claimed": claimed, "left": left, "seconds": round(elapsed, 3), "per_s": round(claimed / elapsed, 1)}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [run["per_s"] for run in runs]
    return {
        "per_s": round(statistics.median(rates), 1),
        "min_per_s": min(rates),
        "max_per_s": max(rates),
        "left": sum(run["left"] for run in runs),
        "runs": runs,
    }


def _waker(dsn: str, wakes: int, out: Any) -> None:
    store = PgStateStore(dsn)
    sent = []
    for i in range(wakes):
        sent.append(time.time())
        store.enqueue(f"wake/{i}", "true")
        time.sleep(0.005)
    out.put(sent)


def wake_latency(dsn: str, wakes: int) -> dict[str, Any]:
    received: dict[str, float] = {}
    all_in = threading.Event()

    def on_queued(session: str | None) -> None:
        if session is not None:
            received[session] = time.time()
            if len(received) == wakes:
                all_in.set()

    listener = PgStateStore(dsn).listen(on_queued)
    listener.listening.wait(10)
    out = CTX.Queue()
    proc = CTX.Process(target=_waker, args=(dsn, wakes, out))
    proc.start()
    sent = out.get(timeout=120)
    all_in.wait(30)
    proc.join(30)
    listener.close()
    ms = sorted((received[f"wake/{i}"] - t) * 1000 for i, t in enumerate(sent) if f"wake/{i}" in received)
    return {
        "received": len(ms),
        "sent": wakes,
        "p50_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
        "max_ms": round(ms[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--wakes", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with (
        PostgresServer() as fast,
        PostgresServer(durable=True) as durable,
        tempfile.TemporaryDirectory(prefix="pg-claim-") as tmp,
    ):
        ways = {
            "postgresql durable claim_next (SKIP LOCKED)": (durable, "claim_next"),
            "postgresql durable next_queued+mark_running": (durable, "mark_running"),
            "postgresql fsync=off claim_next": (fast, "claim_next"),
            "sqlite next_queued+mark_running": (None, "mark_running"),
        }
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in ways}
        for i in range(args.repeat):
            for n, (name, (server, how)) in enumerate(ways.items()):  # a fresh place per run
                where = server.create_schema(f"r{i}_{n}") if server else str(Path(tmp) / f"state-{i}.db")
                rounds[name].append(claim_rate(where, how, args.commands))
        claims = {name: summary(runs) for name, runs in rounds.items()}
        wake = wake_latency(durable.create_schema("wake"), args.wakes)
    sqlite = claims["sqlite next_queued+mark_running"]["per_s"]
    for row in claims.values():
        row["vs_sqlite"] = round(row["per_s"] / sqlite, 2)
    if args.json:
        print(json.dumps({"claims": claims, "wake": wake}, indent=2))
        return
    print(
        f"claims: {args.commands} commands, {len(SESSIONS)} sessions, {CLAIMERS} claiming processes, "
        f"median of {args.repeat} (range)"
    )
    for name, row in claims.items():
        print(
            f"  {name:44} {row['per_s']:>8.1f}/s ({row['min_per_s']:.0f}–{row['max_per_s']:.0f}, "
            f"{row['left']} left)  ×{row['vs_sqlite']} of sqlite"
        )
    print(
        f"wake: enqueue in another process → NOTIFY callback, {wake['received']}/{wake['sent']} received: "
        f"p50 {wake['p50_ms']:.2f} ms, p95 {wake['p95_ms']:.2f} ms, max {wake['max_ms']:.2f} ms"
    )


if __name__ == "__main__":
    main()
