"""Queue pickup: how long after `tmux-agent send` commits a command does the pane's shell start it?

Why this benchmark exists
-------------------------
Between a command's commit and its start lie the orchestrator's wait for its next round and the
round itself. Waiting for the next poll costs half the poll interval on average; the doorbell
(`orchestrator.state.wake`: `send` rings it after its commit) removes that wait, and a round
that no longer runs SQL per session keeps the rest flat in the number of panes.

The real `tmux-agent-orchestrator` runs with the settings `tmux-agent init` writes (its poll
interval included; decision assist on; only the AI backend is `off`, so nothing reaches a real
codex, and the metrics port is any free one). Each sample is one command, `true`, queued for
one pane (the panes take turns; the others stay idle), then waiting for its
result and 0.3–0.5 s more before the next one (its prompt redrawn, the next command queued at a
random phase of the poll), so every pickup finds an idle pane and an idle loop. The benchmark does what
`tmux-agent send` does after parsing its arguments — the enqueue (a `synchronous=FULL` commit)
and the ring — in its own process, so neither the CLI's start-up nor its commit's fsync is in
the sample. Latency = the shell's start record (`started_at`, written by the pane's shell) − the
moment the enqueue's commit returned: commit → shell start. `--no-ring` queues without ringing
(pickup by the poll alone, what a build before the doorbell does).

It prints p50 / p95 / max per pane count (or `--json`). A benchmark, not a test: nothing here
asserts on timing. Target (issue 15): `send` → command started p95 ≤ 20 ms.

Usage::

    .venv/bin/python bench/pickup_latency.py [--panes 1 20] [--sends 100] [--no-ring] [--seed S] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any

import common  # this folder is on sys.path when run as a script
import tomllib

from orchestrator.cli.starter import ORCHESTRATOR_TOML
from orchestrator.clock import parse_iso_utc
from pytest_tmuxagent.service import make_service
from pytest_tmuxagent.waiting import wait_until

try:
    from orchestrator.state import wake
except ImportError:  # a build from before the doorbell: measure it with --no-ring
    wake = None  # type: ignore[assignment]

SOCKET_PREFIX = "bench-pk-"
SETTLE_SECONDS = (0.3, 0.5)  # a pane idle again, as a person's next send finds it
TARGET_P95_MS = 20.0


@dataclass
class Pickup:
    """One pane count's pickup latencies (ms) and what went wrong on the way."""

    panes: int
    ring: bool
    stats: common.Stats
    poll_interval_seconds: float
    notes: list[str]

    def record(self) -> dict[str, Any]:
        head = {"panes": self.panes, "ring": self.ring, "poll_interval_seconds": self.poll_interval_seconds}
        return {**head, **asdict(self.stats), "notes": self.notes}


def init_settings() -> dict[str, Any]:
    """`tmux-agent init`'s orchestrator.toml, with only what a benchmark must not touch changed
    (the service writes its own temp `env_file`)."""
    settings = tomllib.loads(ORCHESTRATOR_TOML)
    settings["metrics_port"] = 0
    settings["ai"] = {**settings.get("ai", {}), "backend": "off"}
    return settings


def measure(n_panes: int, sends: int, ring: bool, seed: int) -> Pickup:
    with ExitStack() as stack:
        tmp = common.temp_dir(stack, SOCKET_PREFIX)
        tmux = common.tmux_server(stack, SOCKET_PREFIX, tmp)
        panes = [tmux.agent_pane(f"bench/p{i}") for i in range(n_panes)]
        settings = init_settings()
        service = make_service(tmp / "orch", tmux, panes, base_settings=settings)
        store = common.start_service(service, stack)
        common.log(f"{n_panes} pane(s): {sends} sends, poll_interval_seconds={settings['poll_interval_seconds']}")
        samples: list[float] = []
        statuses: dict[str, int] = {}
        notes: list[str] = []
        rng = random.Random(seed)
        for i in range(sends):
            pane = panes[i % n_panes]
            command_id = store.enqueue(pane.name, "true", source="bench")  # committed when it returns
            committed = time.time()
            if ring:
                wake.ring(store.path)  # what `tmux-agent send` does right after its commit
            row = wait_until(
                lambda cid=command_id: (r := store.command(cid)) and r.finished_at and r,
                timeout=30,
                interval=0.002,
                message=f"command {command_id} to finish",
            )
            common.count_status(statuses, row.status)
            time.sleep(rng.uniform(*SETTLE_SECONDS))  # the prompt redrawn; the next send at a random phase of the poll
            if row.started_at is None:
                notes.append(f"command {command_id}: no started_at")
                continue
            samples.append((parse_iso_utc(row.started_at) - committed) * 1000.0)
        notes += common.status_notes(statuses)
        notes += common.stop_notes(service)
        return Pickup(n_panes, ring, common.Stats.of(samples), settings["poll_interval_seconds"], notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--panes", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--sends", type=int, default=100)
    parser.add_argument("--no-ring", action="store_true", help="queue without ringing: pickup by the poll alone")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    common.exit_on_signals()
    results = [measure(n, args.sends, not args.no_ring, args.seed) for n in args.panes]
    if args.json:
        print(json.dumps([r.record() for r in results], indent=2))
        return 0
    print("commit → shell start (ms), " + ("poll only (no ring)" if args.no_ring else "rung after the commit"))
    print(f"{'panes':>6} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  p95 ≤ {TARGET_P95_MS:g} ms")
    for r in results:
        st = r.stats
        verdict = "met" if st.p95_ms <= TARGET_P95_MS else "not met"
        print(f"{r.panes:>6} {st.n:>5} {st.p50_ms:>8.1f} {st.p95_ms:>8.1f} {st.max_ms:>8.1f}  {verdict}")
        for note in r.notes:
            print(f"       note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
