"""CPU from /proc for the benchmarks: a process's own ticks, its live descendants', the share of
a core they make over a window, its threads, and the tmux server's pid."""

from __future__ import annotations

import math
import os

from pytest_tmuxagent.tmux_server import TmuxTestServer

# CPU from /proc -----------------------------------------------------------------------------
TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces): field 3 (state) first."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def own_ticks(pid: int) -> int:
    """utime + stime of `pid` alone (0 once it is gone)."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


def descendants(root: int) -> list[int]:
    """Every live process below `root`, from the parent links in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def tree_ticks(root: int) -> int:
    """CPU ticks of `root` and everything below it: utime + stime + cutime + cstime of each live
    process of the tree. A child that exits moves its whole total into its parent's cutime/cstime
    when it is reaped, so the sum only grows; its difference over a window is the tree's CPU."""
    total = 0
    for pid in (root, *descendants(root)):
        fields = _stat_fields(pid)
        if fields:
            total += sum(int(f) for f in fields[11:15])
    return total


def thread_count(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
        return next((int(line.split()[1]) for line in fh if line.startswith("Threads:")), 0)


def percent_of_core(ticks: int, seconds: float) -> float:
    return 100.0 * ticks / TICK / seconds if seconds > 0 else math.nan


def server_pid(tmux: TmuxTestServer) -> int:
    out = tmux.server.cmd("display-message", "-p", "#{pid}")
    return int(out.stdout[0].strip())
