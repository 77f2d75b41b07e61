"""Fleet dispatch latency: a command queued on one machine, started on another — PostgreSQL's
LISTEN/NOTIFY wake beside one machine's SQLite doorbell, measured in one run (issue 17).

Why this benchmark exists
-------------------------
On a fleet, `tmux-agent send` runs on a laptop and the command's pane is on a host's tmux
server: the send commits into the shared database with a `NOTIFY`, and the owning host's
listener wakes its loop. On one machine, `send` commits into the SQLite file and rings the
doorbell. Both should start the command well before the next poll would.

Each way runs the real `tmux-agent-orchestrator` (the settings `tmux-agent init` writes, its
poll interval included; only the AI backend is `off`) with one pane. `postgresql`: the service
is fleet host `h1` on a throw-away cluster with fsync and synchronous commit on (as SQLite's
`synchronous=FULL`), and this process — the other machine — queues with its own
`PgStateStore.enqueue` (its commit carries the NOTIFY). `sqlite`: this process queues into the
service's file and rings, what `send` does after parsing its arguments. Latency = the pane
shell's start record (`started_at`) − the moment the enqueue returned. Each sample waits for
the command's result and 0.3–0.5 s more, so every dispatch finds an idle pane and loop. The
ways take turns round by round (`--rounds`), so a loaded moment hits both.

A benchmark: it prints p50 / p95 / max per way and PostgreSQL's ratio to SQLite; it asserts nothing.

    .venv/bin/python bench/fleet_dispatch.py [--sends 40] [--rounds 3] [--seed S] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from contextlib import ExitStack
from typing import Any

import common  # this folder is on sys.path when run as a script

from orchestrator.clock import parse_iso_utc
from orchestrator.state import wake
from orchestrator.state.port import Store
from pytest_tmuxagent.postgres import PostgresServer
from pytest_tmuxagent.service import make_service
from pytest_tmuxagent.waiting import wait_until

SOCKET_PREFIX = "bench-fd-"
SETTLE_SECONDS = (0.3, 0.5)
WAYS = ("sqlite", "postgresql")


def one_round(way: str, sends: int, server: PostgresServer, rng: random.Random, notes: list[str]) -> list[float]:
    with ExitStack() as stack:
        tmp = common.temp_dir(stack, SOCKET_PREFIX)
        tmux = common.tmux_server(stack, SOCKET_PREFIX, tmp)
        pane = tmux.agent_pane("h1/job")
        dsn = server.create_schema(f"bench_{way}_{rng.randrange(1 << 30)}") if way == "postgresql" else None
        service = make_service(tmp / "orch", tmux, [pane], base_settings=common.init_settings(), state_dsn=dsn)
        if dsn:
            service.host = "h1"
            service.write_config()
        store = common.start_service(service, stack)
        samples: list[float] = []
        statuses: dict[str, int] = {}
        for _ in range(sends):
            command_id = store.enqueue(pane.name, "true", source="bench")
            committed = time.time()
            if way == "sqlite":
                wake.ring(store.path)
            row = _finished(store, command_id)
            common.count_status(statuses, row.status)
            time.sleep(rng.uniform(*SETTLE_SECONDS))
            if row.started_at is None:
                notes.append(f"{way}: command {command_id} has no started_at")
                continue
            samples.append((parse_iso_utc(row.started_at) - committed) * 1000.0)
        notes += [f"{way}: {note}" for note in common.status_notes(statuses) + common.stop_notes(service)]
        return samples


def _finished(store: Store, command_id: int) -> Any:
    return wait_until(
        lambda: (r := store.command(command_id)) and r.finished_at and r,
        timeout=30,
        interval=0.002,
        message=f"command {command_id} to finish",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=40, help="commands per way per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    common.exit_on_signals()
    rng = random.Random(args.seed)
    samples: dict[str, list[float]] = {way: [] for way in WAYS}
    notes: list[str] = []
    server = PostgresServer(durable=True).start()
    try:
        for round_no in range(args.rounds):
            for way in WAYS if round_no % 2 == 0 else reversed(WAYS):
                common.log(f"round {round_no + 1}: {way}, {args.sends} sends")
                samples[way] += one_round(way, args.sends, server, rng, notes)
    finally:
        server.stop()
    stats = {way: common.Stats.of(values) for way, values in samples.items()}
    load = common.load_line()
    if args.json:
        print(json.dumps({"load": load, "ways": {w: vars(s) for w, s in stats.items()}, "notes": notes}, indent=2))
        return 0
    print(f"queued → started in the pane (ms); {load}")
    print(f"{'way':>11} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for way, st in stats.items():
        print(f"{way:>11} {st.n:>5} {st.p50_ms:>8.1f} {st.p95_ms:>8.1f} {st.max_ms:>8.1f}")
    pg, lite = stats["postgresql"], stats["sqlite"]
    print(f"postgresql / sqlite: p50 ×{pg.p50_ms / lite.p50_ms:.2f}, p95 ×{pg.p95_ms / lite.p95_ms:.2f}")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
