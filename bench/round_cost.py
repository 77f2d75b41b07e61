"""What one round of the engine's loop costs: SQL statements and `step()` time per idle round
at 1 / 20 / 100 sessions, and `step()` with 0 and 100,000 commands queued.

The composition root's whole graph (`build_orchestrator`: guards, decision assist, the session
state writer, the shell driver) on a real SQLite file, with the in-process fake panes of
`tests/engine_fakes.py` instead of a tmux server (so the figures are the engine's and the
store's, not tmux's) and the manual clock moved 0.1 s a round (`tmux-agent init`'s poll). The
statements are counted with `sqlite3`'s trace callback on the store's connection. A benchmark,
not a test (`tests/test_engine_tick_cost.py` holds the counts structurally).

Usage::

    .venv/bin/python bench/round_cost.py [--sessions 1 20 100] [--queued 100000] [--rounds 100]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo: tests.engine_fakes

from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.cli.compose import Orchestrator, build_orchestrator
from orchestrator.clock import ManualClock
from orchestrator.config import Config, OrchestratorSettings, SessionConfig, TmuxConfig
from orchestrator.state.audit import AuditLog
from orchestrator.state.store import StateStore
from tests.engine_fakes import FakePanes, RecordingNotify

ROUND_SECONDS = 0.1


def orchestrator(root: Path, sessions: int) -> tuple[Orchestrator, StateStore, ManualClock]:
    fleet = tuple(SessionConfig(f"s/{i}", f"s{i}:0", root) for i in range(sessions))
    config = Config(
        root / "agent-config.yaml",
        root / "orchestrator.toml",
        TmuxConfig(),
        root / "state.db",
        root / "logs",
        fleet,
        OrchestratorSettings(env_file=root / ".env"),
    )
    clock = ManualClock(start=time.time())
    store = StateStore(config.state_db, clock=clock)
    built = build_orchestrator(
        config,
        store=store,
        tmux=FakePanes({s.target: f"%{i}" for i, s in enumerate(fleet)}),
        audit=AuditLog(config.audit_log, clock=clock),
        metrics=OrchestratorMetrics(),
        notify=RecordingNotify(),
        clock=clock,
    )
    built.supervisor.start()
    return built, store, clock


def idle_rounds(built: Orchestrator, store: StateStore, clock: ManualClock, rounds: int) -> tuple[float, float]:
    """(statements per round, ms per step) over `rounds` idle rounds, after 40 to settle."""
    for _ in range(40):
        clock.advance(ROUND_SECONDS)
        built.supervisor.step()
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    started = time.perf_counter()
    for _ in range(rounds):
        clock.advance(ROUND_SECONDS)
        built.supervisor.step()
    elapsed = time.perf_counter() - started
    store._db.set_trace_callback(None)
    return len(seen) / rounds, elapsed * 1000 / rounds


def queue_many(path: Path, session: str, count: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO commands(session, command, source, queued_at) VALUES (?, 'true', 'bench', '2026-01-01T00:00:00Z')",
        [(session,)] * count,
    )
    db.execute("COMMIT")
    db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 20, 100])
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args(argv)
    print(f"{'sessions':>8} {'queued':>8} {'SQL/round':>10} {'SQL/session':>12} {'step ms':>8}")
    with tempfile.TemporaryDirectory(prefix="bench-rc-") as tmp:
        cases = [(n, 0) for n in args.sessions] + [(1, args.queued)]
        for i, (sessions, queued) in enumerate(cases):
            root = Path(tmp) / str(i)
            root.mkdir()
            built, store, clock = orchestrator(root, sessions)
            if queued:  # queued for a session no one supervises: it never dispatches, the queue stays long
                store.ensure_session("parked", "parked:0")
                queue_many(store.path, "parked", queued)
            per_round, ms = idle_rounds(built, store, clock, args.rounds)
            print(f"{sessions:>8} {queued:>8} {per_round:>10.2f} {per_round / sessions:>12.3f} {ms:>8.2f}")
            built.close()
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
