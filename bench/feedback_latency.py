"""Feedback latency: how long after a command exits in a pane does its result exist?

Why this benchmark exists
-------------------------
The seed system learned that a command had finished by polling: every 1.5 s it
ran ``tmux capture-pane -p`` on each pane and looked for a marker line the
command printed when it exited. Its feedback latency is therefore bounded below
by nothing and above by the poll interval (plus the capture cost of every pane).
The orchestrator replaces that with an event: the pane's own shell writes the
exit record and signals ``tmux wait-for -S``; a blocked ``tmux wait-for`` child
of the orchestrator wakes and the result is committed to SQLite.

This script measures both, on real isolated tmux servers, in one run:

* **orchestrator** - the real ``tmux-agent-orchestrator`` service (a subprocess
  with poll interval 0.05 s). Commands are queued straight into its SQLite state
  DB (CLI start-up is not what is measured). Latency per command is
  ``recorded_at - finished_at``: the moment the orchestrator committed the result
  minus the moment the pane's shell saw the command exit (the shell's own clock).
* **baseline** - the seed approach: type ``sleep ...; echo "__DONE_<k>__ $(date
  +%s.%N)"`` into each pane (one command at a time per pane), poll every pane
  with ``tmux capture-pane -p`` every ``--baseline-interval`` seconds, and take
  latency = detection time - the timestamp the command printed. Each next
  command is typed at a random phase of the poll tick, so exits are not
  phase-locked to the poller (which would inflate the baseline to ~interval).

It prints a table (or ``--json``) with p50/p95/max per pane count and method,
the baseline/orchestrator ratios, and whether the targets are met:
p95 <= 100 ms at 1 pane, p95 <= 300 ms at 20 panes, and >= 10x better than the
baseline. It is a benchmark, not a test: nothing here asserts on timing.

Usage::

    .venv/bin/python bench/feedback_latency.py [--panes 1 20] [--commands N]
        [--baseline-interval 1.5] [--baseline-commands N] [--sleep 0.05] [--seed S] [--json]

Every tmux server gets its own socket name (``bench-fl-...``); the service,
the tmux servers and the temp directories are cleaned up even on error.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import common  # this folder is on sys.path when run as a script

from orchestrator.clock import parse_iso_utc
from orchestrator.model import TERMINAL_STATUSES, CommandRow
from pytest_tmuxagent.service import OrchestratorService, make_service
from pytest_tmuxagent.tmux_server import AgentPane, TmuxTestServer
from pytest_tmuxagent.waiting import wait_until

SOCKET_PREFIX = "bench-fl-"
TARGET_P95_MS = {1: 100.0, 20: 300.0}
TARGET_RATIO = 10.0
DEFAULT_SLEEP = "0.05"


@dataclass(kw_only=True)
class PaneSummary(common.Summary):
    SUBJECT: ClassVar[str] = "panes"
    panes: int

    @property
    def label(self) -> str:
        return f"{self.panes} pane(s)"


# the orchestrator ------------------------------------------------------------------------------
def measure_orchestrator(
    root: Path, tmux: TmuxTestServer, panes: list[AgentPane], per_pane: int, sleep_s: str, stack: ExitStack
) -> PaneSummary:
    service: OrchestratorService = make_service(root, tmux, panes)
    store = common.start_service(service, stack)
    expected = per_pane * len(panes)
    ids: list[int] = []
    for _ in range(per_pane):  # round-robin, so every pane has work queued from the start
        for pane in panes:
            ids.append(store.enqueue(pane.name, f"sleep {sleep_s}", source="bench"))
    wanted = set(ids)

    def all_done() -> list[CommandRow] | None:
        rows = [r for r in store.commands(limit=expected * 2) if r.id in wanted]
        done = [r for r in rows if r.status in TERMINAL_STATUSES]
        return done if len(done) == expected else None

    budget = 30.0 + expected * 1.0
    done = wait_until(
        all_done,
        timeout=budget,
        interval=0.05,
        message=f"{expected} orchestrator commands to finish; log: {service.log_text()[-1500:]}",
    )
    rows: list[CommandRow] = done or []

    samples: list[float] = []
    notes: list[str] = []
    statuses: dict[str, int] = {}
    for row in rows:
        common.count_status(statuses, row.status)
        if row.finished_at is None or row.recorded_at is None:
            notes.append(f"command {row.id}: finished_at={row.finished_at} recorded_at={row.recorded_at}")
            continue
        latency = (row.recorded_at - parse_iso_utc(row.finished_at)) * 1000.0
        if latency < 0:
            notes.append(f"command {row.id}: negative latency {latency:.2f} ms")
        samples.append(latency)
    notes += common.status_notes(statuses)

    summary = PaneSummary.of(samples, panes=len(panes), method="orchestrator", expected=expected)
    summary.extra["statuses"] = statuses
    # The service's own view of the same quantity, from /metrics, as a cross-check.
    if service.metrics is not None:
        try:
            snap = service.metrics.scrape()
            count = snap.value("orchestrator_feedback_latency_seconds_count") or 0.0
            total = snap.value("orchestrator_feedback_latency_seconds_sum") or 0.0
            summary.extra["metrics_count"] = count
            summary.extra["metrics_mean_ms"] = (total / count * 1000.0) if count else None
        except Exception as exc:
            notes.append(f"metrics scrape failed: {exc}")

    notes += common.stop_notes(service)
    runtime_dir = service.state_db.parent / "run"
    leftovers = sorted(p.name for p in runtime_dir.iterdir()) if runtime_dir.is_dir() else []
    if leftovers:
        notes.append(f"{len(leftovers)} files left in runtime dir, e.g. {leftovers[:4]}")
    notes += common.log_notes(service)
    summary.notes = notes
    return summary


# the seed system's approach --------------------------------------------------------------------
@dataclass
class BaselinePane:
    pane: AgentPane
    remaining: int
    k: int = -1
    pattern: re.Pattern[str] | None = None
    typed_at: float = 0.0
    type_at: float | None = None


def measure_baseline(
    tmux: TmuxTestServer, panes: list[AgentPane], per_pane: int, interval: float, sleep_s: str, rng: random.Random
) -> PaneSummary:
    """Poll every pane with capture-pane on a fixed tick; type each next command at a random phase.

    Typing the next command right at the tick that saw the previous one finish would phase-lock
    every exit to just before the following tick (latency ~ interval - run time). Real commands
    end at arbitrary moments, so each command is typed at a uniformly random offset within one
    interval: the exit phase is uniform and the expected latency is ~interval/2 (plus capture cost).
    """
    nonce = uuid.uuid4().hex[:6]
    tmux_bin = shutil.which("tmux") or "tmux"
    start = time.monotonic()
    states = [BaselinePane(p, per_pane, type_at=start + rng.uniform(0, interval)) for p in panes]
    counter = 0
    samples: list[float] = []
    notes: list[str] = []
    timeout = max(10.0, 6 * interval)

    def type_next(state: BaselinePane) -> None:
        nonlocal counter
        state.k, counter = counter, counter + 1
        state.remaining -= 1
        state.type_at = None
        marker = f"__DONE_{nonce}_{state.k}__"
        # The typed line echoes `"__DONE_..__ $(date ...)"`, so anchor on the printed form only.
        state.pattern = re.compile(rf"^{marker} (\d+\.\d+)\s*$")
        state.typed_at = time.monotonic()
        state.pane.type(f'sleep {sleep_s}; echo "{marker} $(date +%s.%N)"')

    next_poll = start + interval
    while any(s.pattern is not None or s.type_at is not None for s in states):
        now = time.monotonic()
        for state in states:
            if state.type_at is not None and state.type_at <= now:
                type_next(state)
        if now >= next_poll:
            next_poll += interval
            for state in states:
                if state.pattern is None:
                    continue
                lines = common.capture(tmux_bin, tmux, state.pane)
                detected = time.time()
                match = next((m for m in map(state.pattern.match, lines) if m), None)
                if match:
                    samples.append((detected - float(match.group(1))) * 1000.0)
                    state.pattern = None
                elif time.monotonic() - state.typed_at > timeout:
                    notes.append(f"{state.pane.name}: marker {state.k} not seen in {timeout:.0f}s")
                    state.pattern = None
                if state.pattern is None and state.remaining > 0:
                    state.type_at = time.monotonic() + rng.uniform(0, interval)
        wake = min([next_poll, *(s.type_at for s in states if s.type_at is not None)])
        time.sleep(max(0.0, min(wake - time.monotonic(), interval)))
    method = f"baseline capture-pane every {interval:g}s"
    summary = PaneSummary.of(samples, panes=len(panes), method=method, expected=per_pane * len(panes))
    summary.notes = notes
    return summary


# one pane count -----------------------------------------------------------------------------
def _socket_file(tmux: TmuxTestServer) -> Path:
    """Where the server's socket lives; `kill-server` leaves the file behind."""
    out = tmux.server.cmd("display-message", "-p", "#{socket_path}")
    if out.returncode == 0 and out.stdout:
        return Path(out.stdout[0].strip())
    base = os.environ.get("TMUX_TMPDIR") or "/tmp"
    return Path(base) / f"tmux-{os.getuid()}" / tmux.socket_name


def run_pane_count(
    n_panes: int, per_pane: int, baseline_per_pane: int, interval: float, sleep_s: str, rng: random.Random
) -> list[PaneSummary]:
    with ExitStack() as stack:
        tmp = common.temp_dir(stack, SOCKET_PREFIX)
        sockets: list[Path] = []

        def remove_sockets() -> None:  # registered before kill-server, so it runs after it
            for path in sockets:
                path.unlink(missing_ok=True)

        stack.callback(remove_sockets)
        tmux = common.tmux_server(stack, SOCKET_PREFIX, tmp)
        panes = [tmux.agent_pane(f"bench/p{i}") for i in range(n_panes)]
        sockets.append(_socket_file(tmux))
        common.log(f"{n_panes} pane(s): orchestrator, {per_pane} command(s) per pane")
        ours = measure_orchestrator(tmp / "orch", tmux, panes, per_pane, sleep_s, stack)
        base_panes = [tmux.agent_pane(f"base/p{i}") for i in range(n_panes)]
        common.log(f"{n_panes} pane(s): baseline, {baseline_per_pane} command(s) per pane, every {interval:g}s")
        base = measure_baseline(tmux, base_panes, baseline_per_pane, interval, sleep_s, rng)
        return [ours, base]


# reporting ----------------------------------------------------------------------------------
def evaluate(results: dict[int, list[PaneSummary]]) -> list[dict[str, Any]]:
    verdicts: list[dict[str, Any]] = []
    for n_panes, (ours, base) in results.items():
        limit = TARGET_P95_MS.get(n_panes)
        if limit is not None:
            verdicts.append(common.p95_verdict("panes", ours, limit))
        verdicts += common.ratio_verdicts("panes", ours, base, "baseline", TARGET_RATIO)
    return verdicts


def metrics_line(ours: PaneSummary) -> str:
    """The service's own /metrics view of the feedback latency, under the ratio line (if scraped)."""
    mean = ours.extra.get("metrics_mean_ms")
    if mean is None:
        return ""
    return (
        f"\n{'':>5}  (service /metrics feedback_latency: n={ours.extra.get('metrics_count'):.0f}, "
        f"mean {mean:.1f} ms; bench mean {ours.mean_ms:.1f} ms)"
    )


def print_table(results: dict[int, list[PaneSummary]], verdicts: list[dict[str, Any]]) -> None:
    common.print_header(f"{'panes':>5}", 4)
    common.print_rows(results, ">5", 4, "baseline", metrics_line)
    common.print_targets(verdicts, lambda v: f"{v['panes']:>3} pane(s):", 48)
    common.print_notes(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--panes", type=int, nargs="+", default=[1, 20], help="pane counts (default: 1 20)")
    parser.add_argument(
        "--commands", type=int, default=None, help="orchestrator commands per pane (default: 10 at 1 pane, else 5)"
    )
    parser.add_argument(
        "--baseline-commands", type=int, default=None, help="baseline commands per pane (default: 10 at 1 pane, else 3)"
    )
    parser.add_argument("--baseline-interval", type=float, default=1.5, help="baseline poll interval, s")
    parser.add_argument("--sleep", default=DEFAULT_SLEEP, help="each command is `sleep SECONDS` (default 0.05)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the baseline's random typing phase")
    parser.add_argument("--json", action="store_true", help="print machine-readable results instead")
    args = parser.parse_args(argv)
    float(args.sleep)  # reject anything that is not a number before it reaches a shell
    common.exit_on_signals()
    rng = random.Random(args.seed)

    started = time.monotonic()
    results: dict[int, list[PaneSummary]] = {}
    for n_panes in args.panes:
        per_pane = args.commands or (10 if n_panes == 1 else 5)
        base_per_pane = args.baseline_commands or (10 if n_panes == 1 else 3)
        results[n_panes] = run_pane_count(n_panes, per_pane, base_per_pane, args.baseline_interval, args.sleep, rng)
    verdicts = evaluate(results)
    settings = {"baseline_interval_s": args.baseline_interval}
    table = lambda: print_table(results, verdicts)  # noqa: E731
    common.report(args.json, started, settings, results, verdicts, table, after={"sleep_s": float(args.sleep)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
