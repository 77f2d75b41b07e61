"""Feedback latency: how long after a command exits is its result known, and how long after
`send` does it start — the product beside the best other ways of watching tmux, in one run.

Why this benchmark exists
-------------------------
Issue 15 asks the product to be as quick as tmux's own event stream, not merely quicker than a
poller. So every pane count is measured five ways on one isolated tmux server, back to back:

* **orchestrator** - the real ``tmux-agent-orchestrator`` with the settings ``tmux-agent init``
  writes (poll interval, decision assist on; only the AI backend is ``off`` and the metrics
  port any free one). *exit → result*: ``sleep S`` commands queued round-robin straight into its
  state DB, every pane busy at once; latency = ``recorded_at`` (the orchestrator's commit of the
  result) − ``finished_at`` (the pane's shell saw the exit). *send → start*: the queue-pickup
  benchmark (``pickup_latency.measure``: one command at a time, enqueue and ring as ``tmux-agent
  send`` does) — commit → the shell's start record.
* three peers, each typing ``echo "T:S $EPOCHREALTIME"; sleep S; echo "T:D $EPOCHREALTIME"``
  into its panes (bash's clock builtin, so no fork moves the stamps), one command at a time per
  pane (typed by a thread of their own, so typing never delays watching), and committing the
  results it sees in one batch of pane output in one transaction to a WAL SQLite DB
  (``synchronous=FULL``, as the product's store): exit → result = the clock read after the
  result's INSERT, before the COMMIT (where the product stamps ``recorded_at``) − the ``T:D``
  stamp; send → start = the ``T:S`` stamp − the moment before the keys were sent.

  - **capture-pane every 0.5 s** (claude-squad): ``tmux capture-pane`` of each busy pane per
    tick, keys by a forked ``tmux send-keys``. Each next command is typed at a random phase of
    the tick, so exits are not phase-locked to the poller.
  - **control-mode stream** (agent-deck): one ``tmux -C`` client attached to the panes'
    session (the product's ``ControlConnection``), ``%output`` read as it comes, keys written
    to the same stream.
  - **pipe-pane reader** (cli-agent-orchestrator): ``tmux pipe-pane`` of every pane into its own
    FIFO, all read by one thread; keys by a forked ``tmux send-keys``.

The stream peers see only the screen; the product knows the exact exit code from a record the
command cannot fake. The table gives p50 / p95 / max per method and each as a multiple of the
product's (above 1: the product is faster), then the issue's targets: exit → result p50 ≤ 1 ms
and p95 ≤ 5 ms at 1 pane, p95 ≤ 15 ms at 100 panes, at most 2× the control-mode stream; send →
start p95 ≤ 20 ms. The load average is printed with the figures. A benchmark, not a test:
nothing here asserts on timing.

Usage::

    .venv/bin/python bench/feedback_latency.py [--panes 1 20 100] [--samples 100] [--sleep 0.05]
        [--seed S] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import common  # this folder is on sys.path when run as a script
import pickup_latency
import reporting
import tmux_peers

from orchestrator.clock import parse_iso_utc
from orchestrator.model import TERMINAL_STATUSES, CommandRow
from pytest_tmuxagent.service import make_service
from pytest_tmuxagent.tmux_server import AgentPane, TmuxTestServer
from pytest_tmuxagent.waiting import wait_until

SOCKET_PREFIX = "bench-fl-"
POLL_INTERVAL = 0.5  # claude-squad's capture-pane tick
PEER_TIMEOUT = 30.0  # a peer's command not seen finished after this long is dropped (noted)
TARGET_EXIT_MS = {1: (1.0, 5.0), 100: (None, 15.0)}  # panes -> (p50, p95) limits
TARGET_VS_CONTROL = 2.0
TARGET_START_P95_MS = 20.0
CONTROL = "control-mode stream"


@dataclass(kw_only=True)
class PaneSummary(common.Summary):
    SUBJECT: ClassVar[str] = "panes"
    panes: int

    @property
    def label(self) -> str:
        return f"{self.panes} pane(s)"


@dataclass
class Measured:
    """One pane count: exit → result and send → start, the product first, then the peers."""

    exit: list[PaneSummary]
    start: list[PaneSummary]


# the orchestrator ------------------------------------------------------------------------------
def orchestrator_exit(
    root: Path, tmux: TmuxTestServer, panes: list[AgentPane], per_pane: int, sleep_s: str
) -> PaneSummary:
    """Queue `per_pane` commands per pane round-robin (every pane busy from the start) and read
    recorded_at − finished_at of each result."""
    with ExitStack() as stack:
        service = make_service(root, tmux, panes, base_settings=common.init_settings())
        store = common.start_service(service, stack)
        ids = {store.enqueue(p.name, f"sleep {sleep_s}", source="bench") for _ in range(per_pane) for p in panes}

        def all_done() -> list[CommandRow] | None:
            rows = [r for r in store.commands(limit=len(ids) * 2) if r.id in ids]
            done = [r for r in rows if r.status in TERMINAL_STATUSES]
            return done if len(done) == len(ids) else None

        rows: list[CommandRow] = wait_until(
            all_done,
            timeout=30.0 + len(ids) * 1.0,
            interval=0.05,
            message=f"{len(ids)} orchestrator commands to finish; log: {service.log_text()[-1500:]}",
        )
        samples: list[float] = []
        notes: list[str] = []
        statuses: dict[str, int] = {}
        for row in rows:
            common.count_status(statuses, row.status)
            if row.finished_at is None or row.recorded_at is None:
                notes.append(f"command {row.id}: finished_at={row.finished_at} recorded_at={row.recorded_at}")
                continue
            samples.append((row.recorded_at - parse_iso_utc(row.finished_at)) * 1000.0)
        notes += common.status_notes(statuses) + common.stop_notes(service)
        notes += common.log_notes(service, ignore=("notifications degraded",))
        summary = PaneSummary.of(samples, panes=len(panes), method="orchestrator", expected=len(ids), notes=notes)
        summary.extra["statuses"] = statuses
        return summary


def orchestrator_start(n_panes: int, sends: int, seed: int) -> PaneSummary:
    """`send` → start, as the queue-pickup benchmark measures it (its own server and service)."""
    pickup = pickup_latency.measure(n_panes, sends, True, seed)
    stats = asdict(pickup.stats)
    return PaneSummary(**stats, panes=n_panes, method="orchestrator", expected=sends, notes=pickup.notes)


# the peers ------------------------------------------------------------------------------------
class Peer(Protocol):
    """How one other tool types into panes and learns what they print."""

    name: str
    phase: float  # each next command waits a random 0..phase s (the poller's tick phase)

    def type(self, pane: str, line: str) -> None: ...

    def chunks(self, busy: list[str], timeout: float) -> list[tmux_peers.Chunk]: ...

    def close(self) -> None: ...


class Poller:
    """claude-squad's way: `tmux capture-pane` of each busy pane every tick, a fork each."""

    phase = POLL_INTERVAL

    def __init__(self, tmux: TmuxTestServer) -> None:
        self.tmux = tmux
        self.name = f"capture-pane every {POLL_INTERVAL:g}s"
        self.next_tick = time.monotonic() + POLL_INTERVAL

    def type(self, pane: str, line: str) -> None:
        tmux_peers.type_forked(self.tmux, pane, line)

    def chunks(self, busy: list[str], timeout: float) -> list[tmux_peers.Chunk]:
        wait = self.next_tick - time.monotonic()
        if wait > timeout:
            time.sleep(max(0.0, timeout))
            return []
        time.sleep(max(0.0, wait))
        self.next_tick += POLL_INTERVAL
        return [
            tmux_peers.Chunk(p, "\n".join(common.capture_id(self.tmux, p)) + "\n", time.time(), whole=True)
            for p in busy
        ]

    def close(self) -> None:
        pass


class StreamPeer:
    """A peer whose pane output arrives as a stream of chunks (control mode, pipe-pane)."""

    phase = 0.0

    def __init__(
        self, name: str, source: tmux_peers.ControlStream | tmux_peers.PipePaneReader, typer: Callable[[str, str], None]
    ) -> None:
        self.name, self.source, self.type = name, source, typer

    def chunks(self, busy: list[str], timeout: float) -> list[tmux_peers.Chunk]:
        return tmux_peers.drain(self.source.chunks, timeout)

    def close(self) -> None:
        self.source.close()


@dataclass
class PeerPane:
    pane: str
    remaining: int
    tag: str = ""  # set (by the typist) while a command is out, cleared when its result is in
    text: str = ""
    sent_at: float = 0.0


def results_db(path: Path) -> sqlite3.Connection:
    """Where a peer commits what it saw: WAL, `synchronous=FULL`, as the product's store."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE results(pane TEXT, tag TEXT, exited_at REAL, seen_at REAL)")
    return db


class Typist:
    """Types each pane's next command when it is due, on a thread of its own, so a peer's
    watching is never held up by its typing (a forked send-keys takes milliseconds; a hundred
    of them, most of a second) — as a tool's UI and its watcher are apart."""

    def __init__(self, peer: Peer, sleep_s: str) -> None:
        self.peer, self.sleep_s = peer, sleep_s
        self.nonce = uuid.uuid4().hex[:6]
        self._due: list[tuple[float, int, PeerPane]] = []
        self._cond = threading.Condition()
        self._closing = False
        self._count = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="peer-typist")
        self._thread.start()

    def schedule(self, state: PeerPane, at: float) -> None:
        with self._cond:
            self._count += 1
            heapq.heappush(self._due, (at, self._count, state))
            self._cond.notify()

    def _next(self) -> PeerPane | None:
        with self._cond:
            while not self._closing and (not self._due or self._due[0][0] > time.monotonic()):
                self._cond.wait(self._due[0][0] - time.monotonic() if self._due else None)
            return None if self._closing else heapq.heappop(self._due)[2]

    def _run(self) -> None:
        while (state := self._next()) is not None:
            state.remaining -= 1
            state.text, state.sent_at = "", time.time()
            state.tag = f"{self.nonce}p{state.pane.lstrip('%')}n{state.remaining}"  # last: chunks count from here
            self.peer.type(state.pane, tmux_peers.stamped(state.tag, f"sleep {self.sleep_s}"))

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout=5)


def run_peer(
    peer: Peer, panes: list[str], per_pane: int, sleep_s: str, db: sqlite3.Connection, rng: random.Random
) -> tuple[PaneSummary, PaneSummary]:
    """Each pane runs `per_pane` stamped commands one after another. The results seen in one
    batch of chunks are committed in one transaction (what a good event consumer does), each
    stamped after its INSERT. Returns (exit → result, send → start)."""
    states = {p: PeerPane(p, per_pane) for p in panes}
    typist = Typist(peer, sleep_s)
    for state in states.values():
        typist.schedule(state, time.monotonic() + rng.uniform(0, peer.phase))
    exits: list[float] = []
    starts: list[float] = []
    notes: list[str] = []
    left = per_pane * len(panes)
    try:
        while left > 0:
            for s in states.values():
                if s.tag and time.time() - s.sent_at > PEER_TIMEOUT:
                    notes.append(f"{s.pane}: {s.tag} not seen finished in {PEER_TIMEOUT:.0f}s")
                    s.tag, s.remaining, left = "", 0, left - 1 - s.remaining
            found: list[tuple[PeerPane, str, float, float]] = []
            for chunk in peer.chunks([s.pane for s in states.values() if s.tag], 0.2):
                seen = states.get(chunk.pane)
                if seen is None or not seen.tag:
                    continue
                seen.text = chunk.text if chunk.whole else seen.text + chunk.text
                exited = tmux_peers.stamp(seen.text, seen.tag, "D")
                if exited is None:
                    continue
                started = tmux_peers.stamp(seen.text, seen.tag, "S")
                if started is not None:
                    starts.append((started - seen.sent_at) * 1000.0)
                found.append((seen, seen.tag, exited, chunk.at))
                seen.tag = ""
            if not found:
                continue
            db.execute("BEGIN IMMEDIATE")
            for seen, tag, exited, at in found:
                db.execute("INSERT INTO results VALUES (?, ?, ?, ?)", (seen.pane, tag, exited, at))
                exits.append((time.time() - exited) * 1000.0)  # read where the product stamps recorded_at
            db.execute("COMMIT")
            left -= len(found)
            for seen, *_ in found:
                if seen.remaining > 0:
                    typist.schedule(seen, time.monotonic() + rng.uniform(0, peer.phase))
    finally:
        typist.close()
    expected = per_pane * len(panes)
    n = len(panes)
    return (
        PaneSummary.of(exits, panes=n, method=peer.name, expected=expected, notes=notes),
        PaneSummary.of(starts, panes=n, method=peer.name, expected=expected),
    )


def peers(tmux: TmuxTestServer, session: str, panes: list[str], folder: Path) -> list[Callable[[], Peer]]:
    """The peers, each made when its turn comes (so only one watches the panes at a time)."""

    def control() -> Peer:
        stream = tmux_peers.ControlStream(tmux, session)
        return StreamPeer(CONTROL, stream, stream.type)

    def pipe() -> Peer:
        reader = tmux_peers.PipePaneReader(tmux, panes, folder)
        return StreamPeer("pipe-pane reader", reader, lambda pane, line: tmux_peers.type_forked(tmux, pane, line))

    return [lambda: Poller(tmux), control, pipe]


# one pane count -----------------------------------------------------------------------------
def run_pane_count(n_panes: int, samples: int, sleep_s: str, rng: random.Random) -> Measured:
    per_pane = math.ceil(samples / n_panes)
    with ExitStack() as stack:
        tmp = common.temp_dir(stack, SOCKET_PREFIX)
        tmux = common.tmux_server(stack, SOCKET_PREFIX, tmp)
        ours_panes = [tmux.agent_pane(f"bench/p{i}") for i in range(n_panes)]
        common.log(f"{n_panes} pane(s): orchestrator exit → result, {per_pane} command(s) per pane")
        exit_rows = [orchestrator_exit(tmp / "orch", tmux, ours_panes, per_pane, sleep_s)]
        common.log(f"{n_panes} pane(s): orchestrator send → start, {samples} sends")
        start_rows = [orchestrator_start(n_panes, samples, rng.randrange(1 << 30))]
        peer_panes = [tmux.agent_pane(f"peer/p{i}").pane_id for i in range(n_panes)]
        for i, make in enumerate(peers(tmux, "peer", peer_panes, tmp)):
            peer = make()
            db = results_db(tmp / f"peer-{i}.db")
            common.log(f"{n_panes} pane(s): {peer.name}, {per_pane} command(s) per pane")
            try:
                ex, st = run_peer(peer, peer_panes, per_pane, sleep_s, db, rng)
            finally:
                peer.close()
                db.close()
            exit_rows.append(ex)
            start_rows.append(st)
        return Measured(exit_rows, start_rows)


# reporting ----------------------------------------------------------------------------------
def control_of(rows: list[PaneSummary]) -> PaneSummary:
    return next(s for s in rows if s.method == CONTROL)


def evaluate(results: dict[int, Measured]) -> list[dict[str, Any]]:
    verdicts: list[dict[str, Any]] = []
    for n_panes, m in results.items():
        ours, control = m.exit[0], control_of(m.exit)
        p50_limit, p95_limit = TARGET_EXIT_MS.get(n_panes, (None, None))
        for label, limit, value in (("p50", p50_limit, ours.p50_ms), ("p95", p95_limit, ours.p95_ms)):
            if limit is not None:
                verdicts.append(verdict(n_panes, f"exit → result {label} <= {limit:g} ms", value, value <= limit))
        for label in ("p50", "p95"):
            r = reporting.ratio(getattr(ours, f"{label}_ms"), getattr(control, f"{label}_ms"))
            verdicts.append(
                verdict(
                    n_panes, f"exit → result {label} <= {TARGET_VS_CONTROL:g}x control-mode", r, r <= TARGET_VS_CONTROL
                )
            )
        p95 = m.start[0].p95_ms
        verdicts.append(
            verdict(n_panes, f"send → start p95 <= {TARGET_START_P95_MS:g} ms", p95, p95 <= TARGET_START_P95_MS)
        )
    return verdicts


def verdict(n_panes: int, target: str, value: float, met: bool) -> dict[str, Any]:
    return {"panes": n_panes, "target": target, "value": round(value, 2), "met": bool(met)}


def print_table(results: dict[int, Measured], verdicts: list[dict[str, Any]], load: str) -> None:
    tables = (
        ("exit → result in a DB", [m.exit for m in results.values()]),
        ("send → command started", [m.start for m in results.values()]),
    )
    for title, cases in tables:
        print(f"\n{title} (/us: the method's figure over the product's; above 1 the product is faster)")
        reporting.comparison_header(f"{'panes':>5}")
        for rows in cases:
            reporting.print_comparison(rows, ">5")
            top = reporting.best(rows)
            print(
                f"{'':5}  product vs best peer ({top.method}): p50 {reporting.times(rows[0].p50_ms, top.p50_ms)}, "
                f"p95 {reporting.times(rows[0].p95_ms, top.p95_ms)} (above 1: the product is slower)"
            )
    reporting.print_targets(verdicts, lambda v: f"{v['panes']:>3} pane(s):", 44)
    reporting.print_notes({n: [*m.exit, *m.start] for n, m in results.items()})
    print(f"\n{load}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--panes", type=int, nargs="+", default=None, help="pane counts (default: 1 20 100)")
    parser.add_argument("--samples", type=int, default=None, help="samples per method and pane count (default 100)")
    parser.add_argument("--sleep", default="0.05", help="each command is `sleep SECONDS` (default 0.05)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the random typing phases")
    parser.add_argument("--quick", action="store_true", help="a check that it works: 1 and 5 panes, 20 samples")
    parser.add_argument("--json", action="store_true", help="print machine-readable results instead")
    args = parser.parse_args(argv)
    float(args.sleep)  # reject anything that is not a number before it reaches a shell
    panes = args.panes or ([1, 5] if args.quick else [1, 20, 100])
    samples = args.samples or (20 if args.quick else 100)
    common.exit_on_signals()
    rng = random.Random(args.seed)
    started = time.monotonic()
    results = {n: run_pane_count(n, samples, args.sleep, rng) for n in panes}
    verdicts = evaluate(results)
    load = common.load_line()
    flat = {(n, kind): rows for n, m in results.items() for kind, rows in (("exit", m.exit), ("start", m.start))}
    reporting.report_many(
        args.json,
        started,
        {"samples": samples, "sleep_s": float(args.sleep), "poll_interval_s": POLL_INTERVAL, "load": load},
        flat,
        verdicts,
        lambda: print_table(results, verdicts, load),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
