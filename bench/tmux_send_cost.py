"""What one `send-keys` costs: a `tmux` process per call (plain subprocess, and libtmux, which is
what the tmux adapter uses) against one persistent control-mode connection (ControlConnection).

Each method types N short literal texts into one pane of a private tmux server (`-f /dev/null`,
killed at the end) whose program is a `cat` reading in non-canonical mode, so the keys are read
and dropped. Printed per method: wall time, commands/s, CPU ms of this process and its children
(`os.times`), the tmux server's added CPU ms (`/proc/PID/stat`), and the ratios against the
control connection. Print only: nothing here asserts a time.

    .venv/bin/python bench/tmux_send_cost.py [--count 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import libtmux

from orchestrator.adapters.tmux_control import ControlConnection
from orchestrator.config import TmuxConfig

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Result:
    method: str
    count: int
    wall_s: float
    cpu_ms: float
    server_cpu_ms: float

    @property
    def per_second(self) -> float:
        return self.count / self.wall_s if self.wall_s else float("nan")


def own_cpu_ms() -> float:
    t = os.times()
    return (t.user + t.system + t.children_user + t.children_system) * 1000


def process_cpu_ms(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICK  # utime, stime


def measure(method: str, count: int, server_pid: int, run: Callable[[], object]) -> Result:
    """Run `run` (which sends `count` texts) once, with the clocks around it."""
    cpu0, server0, t0 = own_cpu_ms(), process_cpu_ms(server_pid), time.perf_counter()
    run()
    wall = time.perf_counter() - t0
    return Result(method, count, wall, own_cpu_ms() - cpu0, process_cpu_ms(server_pid) - server0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="send-keys per method (default 1000)")
    args = parser.parse_args()
    tmux = shutil.which("tmux")
    if tmux is None:
        print("tmux is not installed", file=sys.stderr)
        return 2
    socket = f"tmuxagent-bench-{uuid.uuid4().hex[:8]}"
    base = [tmux, "-L", socket, "-f", "/dev/null"]
    subprocess.run([*base, "new-session", "-d", "-s", "bench", "stty -icanon -echo; exec cat > /dev/null"], check=True)
    conn = ControlConnection(TmuxConfig(socket_name=socket))
    try:
        pane = subprocess.run(
            [*base, "display-message", "-p", "-t", "bench", "#{pane_id}"], capture_output=True, text=True, check=True
        ).stdout.strip()
        server_pid = int(
            subprocess.run(
                [*base, "display-message", "-p", "#{pid}"], capture_output=True, text=True, check=True
            ).stdout
        )
        server = libtmux.Server(socket_name=socket)
        conn.connect()

        def each(send: Callable[[int], object]) -> Callable[[], None]:
            """One call per text, each waiting for its answer."""

            def run() -> None:
                for i in range(args.count):
                    send(i)

            return run

        texts = [f"hello {i} " for i in range(args.count)]
        methods: list[tuple[str, Callable[[], object]]] = [
            (
                "tmux subprocess per call",
                each(lambda i: subprocess.run([*base, "send-keys", "-t", pane, "-l", "--", texts[i]], check=True)),
            ),
            ("libtmux per call", each(lambda i: server.cmd("send-keys", "-t", pane, "-l", "--", texts[i]))),
            ("control connection, one by one", each(lambda i: conn.send_literal(pane, texts[i]))),
            (
                "control connection, pipelined",
                lambda: conn.commands(*(("send-keys", "-t", pane, "-l", "--", t) for t in texts), timeout=60),
            ),
        ]
        results = [measure(name, args.count, server_pid, run) for name, run in methods]
    finally:
        conn.close()
        subprocess.run([*base, "kill-server"], capture_output=True, check=False)
    report(results)
    return 0


def report(results: list[Result]) -> None:
    control = next(r for r in results if r.method == "control connection, one by one")
    print(f"{'method':34} {'n':>5} {'wall s':>8} {'cmd/s':>8} {'CPU ms':>8} {'srv ms':>8} {'wall ×':>7} {'CPU ×':>7}")
    for r in results:
        print(
            f"{r.method:34} {r.count:5d} {r.wall_s:8.3f} {r.per_second:8.0f} {r.cpu_ms:8.0f} {r.server_cpu_ms:8.0f}"
            f" {r.wall_s / control.wall_s:7.1f} {r.cpu_ms / max(control.cpu_ms, 1e-9):7.1f}"
        )
    print("CPU ms: this process and its children (os.times); srv ms: the tmux server's added CPU;")
    print("×: ratio to 'control connection, one by one' (higher = costlier than the connection).")


if __name__ == "__main__":
    raise SystemExit(main())
