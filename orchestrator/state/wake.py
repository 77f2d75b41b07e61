"""The queue's doorbell: a process that has just committed work for the orchestrator rings it,
and the orchestrator's loop takes the work up at once instead of at its next poll.

It is a UNIX datagram socket beside the state DB (`state.db` → `state.db-wake`, like SQLite's own
`-wal` and `-shm`), so everything that can open the DB can find it, with no config of its own.
Ringing is one non-blocking `sendto` of one byte: no fork, no connection, no reply awaited.
Nobody listening (no orchestrator, or one that was killed), a full buffer (a ring is already
waiting), a folder that cannot hold sockets: all silently nothing. The orchestrator still polls,
so no correctness depends on a ring — it only removes the wait for the next poll.

Stdlib only and cheap to import: `tmux-agent send` imports it inside the function that rings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("orchestrator")

WAKE = 0  # what the doorbell puts on the engine's signal queue: no command has id 0 (AUTOINCREMENT)
_SUN_PATH_MAX = 107  # bytes of a socket path the kernel accepts (108 with the NUL)


def doorbell_path(state_db: Path) -> Path:
    """The doorbell of the orchestrator that supervises `state_db`."""
    state_db = Path(state_db)
    return state_db.with_name(state_db.name + "-wake")


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """A name the kernel accepts for `path`: itself, or, when it is longer than a socket path
    may be (deep test folders), the same file reached through an open handle on its folder."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    folder = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


def ring(state_db: Path) -> bool:
    """Wake the orchestrator of `state_db`, if one listens. True when the byte was taken."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, _address(doorbell_path(state_db)) as address:
            sock.setblocking(False)
            sock.sendto(b"!", address)
        return True
    except OSError:
        return False


class Doorbell:
    """The listening end, owned by the orchestrator's loop: one thread that turns each ring (or
    burst of rings) into one `WAKE` on the queue the loop already blocks on between rounds."""

    def __init__(self, state_db: Path, signals: queue.Queue[int]) -> None:
        self.path = doorbell_path(state_db)
        self.signals = signals
        self._sock: socket.socket | None = None
        self._inode: int | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    def open(self) -> bool:
        """Listen; False (logged, the loop polls as before) when the socket cannot be made.

        A file left by an orchestrator that was killed is replaced: only one orchestrator runs
        per state DB (its lock is held before this), so no live one can own it.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            with _address(self.path) as address:
                sock.bind(address)
            self._inode = self.path.stat().st_ino
        except OSError as exc:
            sock.close()
            log.warning("no doorbell at %s (%s): new commands are picked up at the next poll", self.path, exc)
            return False
        self._sock = sock
        self._thread = threading.Thread(target=self._listen, args=(sock,), name="doorbell", daemon=True)
        self._thread.start()
        return True

    def _listen(self, sock: socket.socket) -> None:
        while True:
            try:
                sock.recv(16)
                if self._closing.is_set():  # close() shut the socket down: the read came back empty
                    return
                while True:  # a burst of rings is one round of work
                    sock.recv(16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                self.signals.put(WAKE)
            except OSError:
                return

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self._closing.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked recv with an empty read
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        sock.close()
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self._inode:  # ours, not a successor's
                self.path.unlink()
