"""Event-driven completion: one blocking `tmux wait-for` per running command.

Each waiter is a child process that tmux releases the instant the pane's shell
signals the command's channel; a thread turns that into a queue item, so the
supervisor wakes on the event instead of polling the screen. Children get
PDEATHSIG so a killed orchestrator leaves no waiter behind to swallow a signal.
"""

from __future__ import annotations

import ctypes
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass


class CompletionWaiters:
    def __init__(self, argv_for: Callable[[str], Sequence[str]]) -> None:
        self._argv_for = argv_for
        self.events: queue.Queue[int] = queue.Queue()
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._starting: set[int] = set()
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()

    def watch(self, command_id: int, channel: str) -> None:
        """Spawning happens on the waiter's own thread so a send round never waits on fork/exec."""
        with self._lock:
            if command_id in self._procs or command_id in self._starting:
                return
            self._starting.add(command_id)
        threading.Thread(
            target=self._wait, args=(command_id, channel), daemon=True, name=f"wait-for-{command_id}"
        ).start()

    def _wait(self, command_id: int, channel: str) -> None:
        proc = subprocess.Popen(
            list(self._argv_for(channel)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        with self._lock:
            self._starting.discard(command_id)
            cancelled = command_id in self._cancelled
            self._cancelled.discard(command_id)
            self._procs[command_id] = proc
        if cancelled:
            proc.terminate()
        proc.wait()
        with self._lock:
            if self._procs.get(command_id) is proc:
                del self._procs[command_id]
        self.events.put(command_id)

    def forget(self, command_id: int) -> None:
        with self._lock:
            proc = self._procs.pop(command_id, None)
            if command_id in self._starting:
                self._cancelled.add(command_id)
        if proc and proc.poll() is None:
            proc.terminate()

    def watching(self, command_id: int) -> bool:
        with self._lock:
            return command_id in self._procs or command_id in self._starting

    def close(self) -> None:
        with self._lock:
            procs = list(self._procs.values())
            self._procs.clear()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
