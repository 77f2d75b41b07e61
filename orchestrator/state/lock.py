"""One orchestrator per state DB: an exclusive `flock` on `<state_db>.lock`.

`tmux-agent-orchestrator` takes the lock right after its config loads and keeps it until it
exits (the kernel drops it when the process dies, however it dies, so a lock file left behind
by a dead orchestrator never blocks the next one). The file holds the holder's pid, which is
only informative: whether the DB is supervised is decided by the lock, never by the pid.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from orchestrator.errors import UserError

# `locked_by()` (doctor, `tmux-agent run`) takes the lock for an instant to see whether it is free;
# an orchestrator starting at that very moment tries again for this long before it gives up.
ACQUIRE_PATIENCE_SECONDS = 0.5
_RETRY_SECONDS = 0.05


def lock_path(state_db: Path) -> Path:
    state_db = Path(state_db)
    return state_db.with_name(state_db.name + ".lock")


class AlreadySupervised(UserError):
    """Another orchestrator holds the state DB's lock."""

    def __init__(self, state_db: Path, pid: int | None) -> None:
        self.pid = pid
        super().__init__(
            f"already supervised by orchestrator pid {pid if pid is not None else '(unknown)'}",
            file=str(state_db),
            fix="stop it first or point this one at another state_db",
        )


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 64, 0)
    except OSError:
        return None
    text = raw.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _open(state_db: Path) -> int:
    path = lock_path(state_db)
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes (PEP 446)


class StateLock:
    """The lock of one state DB, held by this process between `acquire()` and `release()`."""

    def __init__(self, state_db: Path) -> None:
        self.state_db = Path(state_db)
        self.path = lock_path(self.state_db)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, patience: float = ACQUIRE_PATIENCE_SECONDS) -> None:
        """Take the lock and write our pid into the file, or raise `AlreadySupervised` (exit 2)."""
        if self._fd is not None:
            return
        fd = _open(self.state_db)
        deadline = time.monotonic() + patience
        try:
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    raise AlreadySupervised(self.state_db, _read_pid(fd))
                time.sleep(_RETRY_SECONDS)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Empty the file and drop the lock. The file stays: removing it could let two holders in."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the last descriptor releases the flock


@contextlib.contextmanager
def supervising(state_db: Path) -> Iterator[StateLock]:
    """Hold the state DB's lock for the duration of the block."""
    lock = StateLock(state_db)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


def locked_by(state_db: Path) -> AlreadySupervised | None:
    """What starting an orchestrator on `state_db` now would fail with, or None when no
    orchestrator holds it (`tmux-agent run` and doctor ask). Never creates a file."""
    try:
        fd = os.open(lock_path(state_db), os.O_RDONLY)
    except OSError:  # no lock file (never supervised) or not ours to read
        return None
    try:
        if _try_lock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return AlreadySupervised(Path(state_db), _read_pid(fd))
    finally:
        os.close(fd)
