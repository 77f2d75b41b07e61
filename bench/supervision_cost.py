"""Supervision cost: the CPU the orchestrator costs while it watches panes, and how many commands
a second it runs — beside a naive send-keys + wait-for loop and a control-mode client.

Why this benchmark exists
-------------------------
Issue 15: a supervisor's cost must stay flat in the number of panes, and a command through it
must cost little more than tmux itself. Everything here runs on isolated tmux servers with the
real ``tmux-agent-orchestrator`` and the settings ``tmux-agent init`` writes (decision assist on;
only the AI backend is ``off``, the metrics port any free one).

**CPU % of a core** at 1 / 20 / 100 idle panes, and at 100 panes with 100 commands running
silently (``sleep``, one per pane). For each case the tmux server's own CPU is first read over a
window with no orchestrator (its baseline); then the orchestrator starts, settles, and over the
same window length the bench reads from ``/proc/PID/stat``: utime + stime + cutime + cstime of the
orchestrator and every live process below it (a child that exits moves its total into its
parent's cutime/cstime when reaped, so nothing is lost or counted twice), and the tmux server's
utime + stime minus its baseline (its *added share*). The total is their sum. Threads of the
orchestrator and processes below it are printed too (the issue wants both constant in panes),
and the pane shells' CPU (what runs inside the panes) for information.

**Commands/s** for 1 pane × 1000 ``true`` and 20 panes × 50: the product with the commands
committed to its state DB in one transaction and the doorbell rung (rate = commands ÷ (last
result recorded − that commit)); a naive loop, one thread per pane, each command typed by a
forked ``tmux send-keys`` with ``; tmux wait-for -S`` after it and waited for by a forked ``tmux
wait-for``; and a control-mode client (the product's ``ControlConnection``) typing each next
command into a pane as soon as that pane's output shows the previous one's end stamp. Beside the
rate: CPU ms per command of the client (this bench process for the peers, the orchestrator's
tree for the product), of the tmux server, and of the panes.

Targets (issue 15): CPU ≤ 1 % of a core at 100 idle panes, ≤ 3 % with 100 commands running
silently, tmux server share included; ≥ 500 commands/s through one session and ≥ 3× the naive
loop. The load average is printed with the figures. A benchmark, not a test: nothing here
asserts on timing.

Usage::

    .venv/bin/python bench/supervision_cost.py [--panes 1 20 100] [--running 100] [--window 15]
        [--throughput 1x1000 20x50] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import common  # this folder is on sys.path when run as a script
import procstat
import reporting
import tmux_peers

from orchestrator.clock import iso_utc
from orchestrator.model import TERMINAL_STATUSES
from orchestrator.state import wake
from orchestrator.state.store import StateStore
from pytest_tmuxagent.service import OrchestratorService, make_service
from pytest_tmuxagent.tmux_server import AgentPane, TmuxTestServer
from pytest_tmuxagent.waiting import wait_until

SOCKET_PREFIX = "bench-sc-"
SETTLE_SECONDS = 3.0  # after the service is up (and the running commands started), before the window
TARGET_IDLE_PCT = {100: 1.0}
TARGET_RUNNING_PCT = 3.0
TARGET_ONE_SESSION_RATE = 500.0
TARGET_VS_NAIVE = 3.0
RUNNING_COMMAND = "sleep 3600"  # silent; far below stall_timeout_seconds (120) for any window used here


# CPU ------------------------------------------------------------------------------------------
@dataclass
class Meter:
    """CPU ticks of a client tree, the tmux server itself and the processes below it (the panes)."""

    client: int
    server: int

    def read(self) -> tuple[int, int, int]:
        server_tree = procstat.tree_ticks(self.server)
        server_own = procstat.own_ticks(self.server)
        return procstat.tree_ticks(self.client), server_own, server_tree - server_own

    def over(self, run: Callable[[], object]) -> tuple[float, tuple[int, int, int]]:
        """Run `run`; its wall seconds and the ticks (client, server, panes) it took."""
        before, t0 = self.read(), time.monotonic()
        run()
        wall, after = time.monotonic() - t0, self.read()
        return wall, (after[0] - before[0], after[1] - before[1], after[2] - before[2])


@dataclass
class Idle:
    """One CPU case: what it was, the shares in % of a core, and the orchestrator's size."""

    case: str
    panes: int
    running: int
    orchestrator_pct: float
    server_added_pct: float
    server_baseline_pct: float
    panes_pct: float
    threads: int
    processes: int
    window_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def total_pct(self) -> float:
        return self.orchestrator_pct + self.server_added_pct

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "total_pct": self.total_pct}


def window(seconds: float) -> Callable[[], None]:
    return lambda: time.sleep(seconds)


def cpu_case(
    meter: Meter, case: str, panes: int, running: int, seconds: float, baseline_pct: float, notes: list[str]
) -> Idle:
    wall, (client, server, in_panes) = meter.over(window(seconds))
    return Idle(
        case=case,
        panes=panes,
        running=running,
        orchestrator_pct=procstat.percent_of_core(client, wall),
        server_added_pct=procstat.percent_of_core(server, wall) - baseline_pct,
        server_baseline_pct=baseline_pct,
        panes_pct=procstat.percent_of_core(in_panes, wall),
        threads=procstat.thread_count(meter.client),
        processes=len(procstat.descendants(meter.client)),
        window_s=wall,
        notes=notes,
    )


def service_for(
    root: Path, tmux: TmuxTestServer, panes: list[AgentPane], stack: ExitStack
) -> tuple[OrchestratorService, StateStore]:
    service = make_service(root, tmux, panes, base_settings=common.init_settings())
    store = common.start_service(service, stack)
    return service, store


def all_piped(tmux: TmuxTestServer) -> bool:
    """Every pane's output copy is set up: the orchestrator's start-up work (a few panes a second,
    see IDLE_COPY_SETUPS_PER_SECOND) is over, so the window measures its steady state."""
    out = tmux.server.cmd("list-panes", "-a", "-F", "#{pane_pipe}")
    return bool(out.stdout) and all(flag.strip() == "1" for flag in out.stdout)


def measure_cpu(n_panes: int, running: int, seconds: float) -> list[Idle]:
    """Idle at `n_panes`, then (if `running`) with that many silent commands, one per pane."""
    running = min(running, n_panes)
    with ExitStack() as stack:
        tmp = common.temp_dir(stack, SOCKET_PREFIX)
        tmux = common.tmux_server(stack, SOCKET_PREFIX, tmp)
        panes = [tmux.agent_pane(f"bench/p{i}") for i in range(n_panes)]
        server = procstat.server_pid(tmux)
        common.log(f"{n_panes} pane(s): tmux server baseline over {seconds:g}s")
        wall, ticks = Meter(os.getpid(), server).over(window(seconds))
        baseline = procstat.percent_of_core(ticks[1], wall)
        service, store = service_for(tmp / "orch", tmux, panes, stack)
        assert service.process is not None
        meter = Meter(service.process.pid, server)
        common.log(f"{n_panes} pane(s): waiting for every pane's output copy to be set up")
        wait_until(lambda: all_piped(tmux) or None, timeout=120, interval=0.5, message="every pane piped")
        time.sleep(SETTLE_SECONDS)
        common.log(f"{n_panes} pane(s): idle, over {seconds:g}s")
        cases = [cpu_case(meter, "idle", n_panes, 0, seconds, baseline, [])]
        if running:
            for pane in panes[:running]:
                store.enqueue(pane.name, RUNNING_COMMAND, source="bench")
            wake.ring(store.path)
            wait_until(
                lambda: len(store.running()) >= min(running, n_panes) or None,
                timeout=60,
                interval=0.1,
                message=f"{running} commands to run; log: {service.log_text()[-1500:]}",
            )
            time.sleep(SETTLE_SECONDS)
            common.log(f"{n_panes} pane(s): {running} commands running silently, over {seconds:g}s")
            cases.append(cpu_case(meter, "running silently", n_panes, running, seconds, baseline, []))
        notes = common.stop_notes(service) + common.log_notes(service, ignore=("notifications degraded",))
        cases[-1].notes += notes
        return cases


# throughput -----------------------------------------------------------------------------------
@dataclass
class Rate:
    """One method's run of `panes` × `per_pane` commands."""

    method: str
    panes: int
    per_pane: int
    done: int
    wall_s: float
    client_ms: float
    server_ms: float
    panes_ms: float
    notes: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.done / self.wall_s if self.wall_s > 0 else math.nan

    def per_command(self, ms: float) -> float:
        return ms / self.done if self.done else math.nan

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "commands_per_s": self.per_second}


def rate(
    method: str, panes: int, per_pane: int, done: int, wall: float, ticks: tuple[int, int, int], notes: list[str]
) -> Rate:
    client, server, in_panes = (t * 1000.0 / procstat.TICK for t in ticks)
    return Rate(method, panes, per_pane, done, wall, client, server, in_panes, notes)


def product_rate(root: Path, tmux: TmuxTestServer, panes: list[AgentPane], per_pane: int) -> Rate:
    """Commit all the commands in one transaction, ring, and wait for every result."""
    with ExitStack() as stack:
        service, store = service_for(root, tmux, panes, stack)
        assert service.process is not None
        meter = Meter(service.process.pid, procstat.server_pid(tmux))
        total = per_pane * len(panes)
        done_sql = f"SELECT COUNT(*) AS n, MAX(recorded_at) AS last FROM commands WHERE status IN ({', '.join('?' * len(TERMINAL_STATUSES))})"
        committed = 0.0
        last: float = 0.0
        statuses: dict[str, int] = {}

        def run() -> None:
            nonlocal committed, last
            rows = [(p.name, "true", "bench", iso_utc(time.time())) for _ in range(per_pane) for p in panes]
            with store.transaction() as db:
                db.executemany("INSERT INTO commands(session, command, source, queued_at) VALUES (?, ?, ?, ?)", rows)
            committed = time.time()
            wake.ring(store.path)
            row = wait_until(
                lambda: (r := store.query(done_sql, tuple(TERMINAL_STATUSES))[0])["n"] >= total and r,
                timeout=60 + total * 0.5,
                interval=0.01,
                message=f"{total} commands to finish; log: {service.log_text()[-1500:]}",
            )
            last = float(row["last"])

        _, ticks = meter.over(run)
        for r in store.query("SELECT status, COUNT(*) AS n FROM commands GROUP BY status"):
            statuses[str(r["status"])] = int(r["n"])
        notes = common.status_notes(statuses) + common.stop_notes(service)
        return rate("orchestrator", len(panes), per_pane, total, last - committed, ticks, notes)


def naive_rate(tmux: TmuxTestServer, panes: list[AgentPane], per_pane: int) -> Rate:
    """A thread per pane: type `true; tmux wait-for -S CH` by a forked send-keys, then block in a
    forked `tmux wait-for CH` (tmux keeps a signal nobody waited for yet, so none is lost)."""
    tmux_bin = f"tmux -L {tmux.socket_name}"
    errors: list[str] = []

    def one_pane(pane: AgentPane, channel: str) -> None:
        try:
            for _ in range(per_pane):
                tmux_peers.type_forked(tmux, pane.pane_id, f"true; {tmux_bin} wait-for -S {channel}")
                tmux_peers.tmux_fork(tmux, "wait-for", channel)
        except Exception as exc:  # reported under the table, the other panes go on
            errors.append(f"{pane.name}: {exc}")

    def run() -> None:
        nonce = uuid.uuid4().hex[:6]
        threads = [threading.Thread(target=one_pane, args=(p, f"bench-{nonce}-{i}")) for i, p in enumerate(panes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    wall, ticks = Meter(os.getpid(), procstat.server_pid(tmux)).over(run)
    done = per_pane * len(panes) - (per_pane * len(errors))
    return rate("naive send-keys + wait-for", len(panes), per_pane, done, wall, ticks, errors[:3])


def control_rate(tmux: TmuxTestServer, session: str, panes: list[AgentPane], per_pane: int) -> Rate:
    """One control-mode client: each pane's next command typed when its output shows the end stamp."""
    stream = tmux_peers.ControlStream(tmux, session)
    nonce = uuid.uuid4().hex[:6]
    left = {p.pane_id: per_pane for p in panes}
    tags: dict[str, str] = {}
    texts: dict[str, str] = {}
    notes: list[str] = []
    counter = 0

    def send(pane: str) -> None:
        nonlocal counter
        tags[pane], texts[pane], counter = f"{nonce}{counter}", "", counter + 1
        left[pane] -= 1
        stream.type(pane, tmux_peers.stamped(tags[pane], "true"))

    def run() -> None:
        done = 0
        for pane in left:
            send(pane)
        deadline = time.monotonic() + 60 + per_pane * len(panes) * 0.1
        while tags and time.monotonic() < deadline:
            for chunk in tmux_peers.drain(stream.chunks, 1.0):
                if chunk.pane not in tags:
                    continue
                texts[chunk.pane] += chunk.text
                if tmux_peers.stamp(texts[chunk.pane], tags[chunk.pane], "D") is None:
                    continue
                done += 1
                del tags[chunk.pane]
                if left[chunk.pane] > 0:
                    send(chunk.pane)
        if tags:
            notes.append(f"{len(tags)} pane(s) did not finish before the deadline")

    try:
        wall, ticks = Meter(os.getpid(), procstat.server_pid(tmux)).over(run)
    finally:
        stream.close()
    finished = per_pane * len(panes) - sum(left.values()) - len(tags)
    return rate("control-mode client", len(panes), per_pane, finished, wall, ticks, notes)


def measure_rates(n_panes: int, per_pane: int) -> list[Rate]:
    with ExitStack() as stack:
        tmp = common.temp_dir(stack, SOCKET_PREFIX)
        tmux = common.tmux_server(stack, SOCKET_PREFIX, tmp)
        common.log(f"{n_panes}x{per_pane}: orchestrator")
        ours = product_rate(tmp / "orch", tmux, [tmux.agent_pane(f"bench/p{i}") for i in range(n_panes)], per_pane)
        peer_panes = [tmux.agent_pane(f"peer/p{i}") for i in range(n_panes)]
        common.log(f"{n_panes}x{per_pane}: naive send-keys + wait-for")
        naive = naive_rate(tmux, peer_panes, per_pane)
        common.log(f"{n_panes}x{per_pane}: control-mode client")
        control = control_rate(tmux, "peer", peer_panes, per_pane)
        return [ours, naive, control]


# reporting ----------------------------------------------------------------------------------
def evaluate(cpu: list[Idle], rates: dict[str, list[Rate]]) -> list[dict[str, Any]]:
    verdicts: list[dict[str, Any]] = []
    for c in cpu:
        limit = TARGET_RUNNING_PCT if c.running else TARGET_IDLE_PCT.get(c.panes)
        if limit is not None:
            target = f"CPU <= {limit:g} % of a core, {c.panes} panes {c.case}"
            verdicts.append({"target": target, "value": round(c.total_pct, 2), "met": c.total_pct <= limit})
    for key, (ours, naive, _control) in rates.items():
        if ours.panes == 1:
            target = f"{key}: >= {TARGET_ONE_SESSION_RATE:g} commands/s through one session"
            verdicts.append(
                {
                    "target": target,
                    "value": round(ours.per_second, 1),
                    "met": ours.per_second >= TARGET_ONE_SESSION_RATE,
                }
            )
        r = reporting.ratio(ours.per_second, naive.per_second)
        target = f"{key}: >= {TARGET_VS_NAIVE:g}x the naive loop's commands/s"
        verdicts.append({"target": target, "value": round(r, 2), "met": r >= TARGET_VS_NAIVE})
    return verdicts


def print_cpu(cpu: list[Idle]) -> None:
    print("CPU, % of one core (total = orchestrator tree + tmux server's added share)")
    header = (
        f"{'panes':>5} {'case':<17} {'total':>7} {'orch':>7} {'server+':>8} {'srv base':>8} "
        f"{'panes':>6} {'threads':>7} {'procs':>5}"
    )
    print(header)
    print("-" * len(header))
    for c in cpu:
        print(
            f"{c.panes:>5} {c.case:<17} {c.total_pct:>7.2f} {c.orchestrator_pct:>7.2f} {c.server_added_pct:>8.2f} "
            f"{c.server_baseline_pct:>8.2f} {c.panes_pct:>6.2f} {c.threads:>7} {c.processes:>5}"
        )
    print(
        f"(each over {cpu[0].window_s:.1f} s; a tick is {100 / procstat.TICK / cpu[0].window_s:.2f} % at that window)"
    )


def print_rates(rates: dict[str, list[Rate]]) -> None:
    print("\nthroughput (x ours: the method's commands/s over the product's; CPU in ms per command)")
    header = (
        f"{'case':<8} {'method':<28} {'done':>5} {'wall s':>7} {'cmd/s':>8} {'x ours':>7} "
        f"{'client':>7} {'server':>7} {'panes':>7}"
    )
    print(header)
    print("-" * len(header))
    for key, rows in rates.items():
        ours = rows[0]
        for r in rows:
            print(
                f"{key:<8} {r.method:<28} {r.done:>5} {r.wall_s:>7.2f} {r.per_second:>8.1f} "
                f"{reporting.times(r.per_second, ours.per_second):>7} {r.per_command(r.client_ms):>7.2f} "
                f"{r.per_command(r.server_ms):>7.2f} {r.per_command(r.panes_ms):>7.2f}"
            )
        naive, control = rows[1], rows[2]
        print(
            f"{'':8} product vs naive loop: {reporting.times(ours.per_second, naive.per_second)}, "
            f"vs control-mode client: {reporting.times(ours.per_second, control.per_second)} (above 1: the product is faster)"
        )


def print_notes(cpu: list[Idle], rates: dict[str, list[Rate]]) -> None:
    notes = [f"[{c.panes} panes {c.case}] {n}" for c in cpu for n in c.notes]
    notes += [f"[{key} {r.method}] {n}" for key, rows in rates.items() for r in rows for n in r.notes]
    if notes:
        print("\nnotes:")
        for line in notes:
            print(f"  {line}")


def parse_shape(text: str) -> tuple[int, int]:
    """`20x50` → (20 panes, 50 commands each)."""
    panes, _, per_pane = text.lower().partition("x")
    if not (panes.isdigit() and per_pane.isdigit()) or int(panes) < 1 or int(per_pane) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: write PANESxCOMMANDS, e.g. 20x50")
    return int(panes), int(per_pane)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--panes", type=int, nargs="+", default=None, help="idle pane counts (default: 1 20 100)")
    parser.add_argument(
        "--running", type=int, default=None, help="silent commands at the largest pane count (default 100; 0: none)"
    )
    parser.add_argument("--window", type=float, default=None, help="seconds of each CPU window (default 15)")
    parser.add_argument(
        "--throughput", type=parse_shape, nargs="*", default=None, help="PANESxCOMMANDS runs (default: 1x1000 20x50)"
    )
    parser.add_argument("--quick", action="store_true", help="a check that it works: 1 and 5 panes, 3 s, 1x100 5x20")
    parser.add_argument("--json", action="store_true", help="print machine-readable results instead")
    args = parser.parse_args(argv)
    pane_counts = args.panes or ([1, 5] if args.quick else [1, 20, 100])
    running = args.running if args.running is not None else (5 if args.quick else 100)
    seconds = args.window or (3.0 if args.quick else 15.0)
    if not 0 < seconds <= 60:  # a longer silent command would meet init's 120 s stall timeout
        parser.error(f"--window {seconds:g}: give 0 < SECONDS <= 60")
    shapes = (
        args.throughput
        if args.throughput is not None
        else ([(1, 100), (5, 20)] if args.quick else [(1, 1000), (20, 50)])
    )
    common.exit_on_signals()
    started = time.monotonic()
    largest = max(pane_counts)
    cpu = [c for n in pane_counts for c in measure_cpu(n, running if n == largest else 0, seconds)]
    rates = {f"{p}x{k}": measure_rates(p, k) for p, k in shapes}
    verdicts = evaluate(cpu, rates)
    load = common.load_line()
    elapsed = time.monotonic() - started
    if args.json:
        data = {
            "elapsed_s": round(elapsed, 1),
            "load": load,
            "cpu": [c.record() for c in cpu],
            "throughput": {key: [r.record() for r in rows] for key, rows in rates.items()},
            "targets": verdicts,
        }
        print(json.dumps(reporting.finite(data), indent=2))
        return 0
    print_cpu(cpu)
    if rates:
        print_rates(rates)
    print("\ntargets:")
    for v in verdicts:
        print(f"  {v['target']:<60} {v['value']:>8}  {'met' if v['met'] else 'NOT MET'}")
    print_notes(cpu, rates)
    print(f"\n{load}\n(elapsed {elapsed:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
