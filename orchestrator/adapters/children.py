"""No orphans: the AI subprocesses (codex) die with the process that started them.

Three nets, because the orchestrator can die by SIGKILL and then runs no code at all:

* **Parent-death signal** — codex (or the bash running a shell-string `bin`) asks the kernel
  (`prctl(PR_SET_PDEATHSIG)`, Linux) for SIGKILL when its parent dies. The kernel ties this to
  the *thread* that forked; the AI client forks from the pool thread that then waits for the
  child, so that thread outlives it.
* **A group watcher** — codex leads its own process group, and a tiny `sh` joins that group with
  SIGTERM as its parent-death signal; on it, it kills the whole group: a shell string's pipeline
  (`. proxy.sh && proxychains4 codex`) and whatever codex itself started go too, not just the
  first process. The call's end (answer or timeout) kills the group and reaps the watcher, so
  nothing a call started outlives it. codex stays our direct child, reaped by `communicate`.
* **Reaping at start** — every child carries `TMUXAGENT_AI_SPAWNER=<pid>:<start time>` of the
  process that started it (inherited by its own children). `reap_orphans()`, run when an
  orchestrator starts (under the state DB's lock), kills each process with that mark whose
  spawner is gone (no such pid, or another start time: a reused pid); a living spawner's
  children are never touched. That catches what the first two miss (a kernel without the call).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger("orchestrator.children")

MARKER = "TMUXAGENT_AI_SPAWNER"
PR_SET_PDEATHSIG = 1
PROC = Path("/proc")
WATCHER_SHELL = "/bin/sh"
# `wait` on a background sleep, so the trap runs at once: SIGTERM (our death) kills the group
WATCHER_SCRIPT = "trap 'kill -KILL 0' TERM HUP; sleep 2147483647 & wait $!"
WATCHER_REAP_SECONDS = 2.0


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def spawner_mark(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{start_time(pid) or '?'}"


def marked_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` plus this process's spawner mark."""
    return {**env, MARKER: spawner_mark()}


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _libc_prctl()  # looked up before any fork: the child only calls it


def die_with_parent(sig: int = signal.SIGKILL, group: bool = False) -> Callable[[], None] | None:
    """A `preexec_fn` asking for `sig` when the parent dies (None where the kernel has no such call).
    If the parent died before the request took hold, the child ends itself (with its group) at once."""
    prctl, parent = _PRCTL, os.getpid()
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            if group:
                os.killpg(0, signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def start_group_watcher(group: int) -> subprocess.Popen[bytes] | None:
    """A watcher in process group `group` that kills the group when this process dies; None when
    it cannot start (no parent-death signal here, or the group is already gone)."""
    preexec = die_with_parent(signal.SIGTERM, group=True)
    if preexec is None:
        return None
    try:
        return subprocess.Popen(
            [WATCHER_SHELL, "-c", WATCHER_SCRIPT],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=marked_env({"PATH": os.environ.get("PATH", "/usr/bin:/bin")}),
            process_group=group,
            preexec_fn=preexec,
        )
    except (OSError, subprocess.SubprocessError):  # the group ended before we joined it
        return None


def stop_group(group: int, watcher: subprocess.Popen[bytes] | None) -> None:
    """Kill what is left of the group (the watcher included) and reap the watcher."""
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if watcher is not None:
        try:
            watcher.wait(timeout=WATCHER_REAP_SECONDS)
        except subprocess.TimeoutExpired:
            watcher.kill()


def _mark_of(pid: int) -> str | None:
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except OSError:  # gone, a zombie, or another user's
        return None
    prefix = MARKER.encode() + b"="
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode("ascii", "replace")
    return None


def _spawner_alive(mark: str) -> bool:
    pid_text, _, started = mark.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    return pid > 0 and start_time(pid) == started


def reap_orphans() -> list[int]:
    """Kill (SIGKILL) every marked process whose spawner is gone, with its process group when it
    leads one; the pids killed."""
    me = os.getpid()
    killed: list[int] = []
    try:
        entries = [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return killed
    for pid in entries:
        if pid == me:
            continue
        mark = _mark_of(pid)
        if mark is None or _spawner_alive(mark):
            continue
        try:
            if os.getpgid(pid) == pid:  # the leader we made with start_new_session: its group is ours
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        killed.append(pid)
    if killed:
        log.warning(
            "killed %d AI subprocess(es) left behind by an orchestrator that died: pid %s",
            len(killed),
            ", ".join(map(str, killed)),
        )
    return killed
