"""SQLite faults as one-line errors, counted and logged once per episode.

Every SQLite failure leaves the state store as a `StateDBError` (a `UserError`: the CLIs print it
as one line) that names the file, the kind of fault and its fix; `DbFaults` counts each one (its
listeners feed `orchestrator_state_db_errors_total{kind}`) and logs a fault once per episode. The
PostgreSQL store raises the same error type with its own kinds.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from orchestrator.errors import UserError

log = logging.getLogger("orchestrator.state.db")
# A CLI prints a StateDBError as its one line; without a handler on this logger the fault's
# warning would reach stderr a second time through logging's last-resort handler. In the
# orchestrator the root handlers still get it (propagation is untouched).
log.addHandler(logging.NullHandler())

FaultKind = Literal["disk_full", "locked", "corrupt", "readonly", "cantopen", "io", "other"]
FAULT_KINDS: tuple[FaultKind, ...] = ("disk_full", "locked", "corrupt", "readonly", "cantopen", "io", "other")
# primary SQLite result codes (the low byte of an extended code)
_KIND_BY_CODE: dict[int, FaultKind] = {
    5: "locked",  # SQLITE_BUSY
    6: "locked",  # SQLITE_LOCKED
    8: "readonly",  # SQLITE_READONLY
    10: "io",  # SQLITE_IOERR
    11: "corrupt",  # SQLITE_CORRUPT
    13: "disk_full",  # SQLITE_FULL
    14: "cantopen",  # SQLITE_CANTOPEN
    26: "corrupt",  # SQLITE_NOTADB
}
_KIND_BY_TEXT: tuple[tuple[str, FaultKind], ...] = (
    ("disk is full", "disk_full"),
    ("locked", "locked"),
    ("malformed", "corrupt"),
    ("not a database", "corrupt"),
    ("readonly", "readonly"),
    ("unable to open", "cantopen"),
    ("i/o error", "io"),
)
# bugs, not faults: they keep their own type and traceback
NOT_FAULTS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.NotSupportedError)


def fault_kind(exc: sqlite3.Error) -> FaultKind:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _KIND_BY_CODE:
        return _KIND_BY_CODE[code & 0xFF]
    text = str(exc).lower()
    return next((kind for needle, kind in _KIND_BY_TEXT if needle in text), "other")


def _holders(path: Path) -> list[str]:
    """Other processes that have the DB (or its WAL) open, as 'pid N (name)': who may hold the lock."""
    try:
        wanted = {str(path.resolve()), str(path.resolve()) + "-wal"}
        pids = [e for e in os.listdir("/proc") if e.isdigit() and int(e) != os.getpid()]
    except OSError:
        return []
    found = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in wanted for fd in fds):
                with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as comm:
                    found.append(f"pid {pid} ({comm.read().strip()})")
        except OSError:
            continue
    return found


class StateDBError(UserError):
    """The state DB refused an operation: one line naming the file, the fault and its fix.

    Exit code 2 for what a person must repair (a corrupt or non-SQLite file, a path that cannot
    be opened or written), 1 for a passing fault (a full disk, a lock held too long, an I/O
    error). `fatal` faults stop the orchestrator; the others are waited out and retried.
    """

    counted_fault = True  # the EventBus does not log it again when a subscriber's write meets it

    def __init__(self, path: Path, kind: FaultKind, reason: str) -> None:
        self.path = Path(path)
        self.kind = kind
        self.reason = reason
        folder = self.path.parent
        detail, fix = {
            "disk_full": (f"disk full under {folder} ({reason})", "free space on that filesystem"),
            "locked": (
                f"database is locked (held by another process: {', '.join(_holders(self.path)) or 'unknown'}; "
                f"{reason})",
                "end the other process's transaction (a sqlite3 shell left in BEGIN?)",
            ),
            "corrupt": (
                f"not a readable SQLite database ({reason})",
                "move the file aside (the orchestrator creates a new one) or restore it from a backup",
            ),
            "readonly": (f"cannot write the state DB ({reason})", "make the file and its folder writable"),
            "cantopen": (
                f"cannot open the state DB ({reason})",
                "check that state_db names a file in a writable folder",
            ),
            "io": (f"disk I/O error under {folder} ({reason})", "check the disk and the kernel log (dmesg)"),
            "other": (f"state DB error ({reason})", "check the file; if it persists, move it aside"),
        }[kind]
        super().__init__(detail, file=str(self.path), fix=fix)
        self.exit_code = 2 if kind in ("corrupt", "readonly", "cantopen") else 1

    @property
    def fatal(self) -> bool:
        """Waiting cannot cure it: the file itself is broken."""
        return self.kind == "corrupt"

    @classmethod
    def of(cls, path: Path, exc: sqlite3.Error) -> StateDBError:
        kind = fault_kind(exc)
        if kind == "io":
            try:  # a write the disk refused for lack of space can surface as an I/O error
                stat = os.statvfs(Path(path).parent)
                if stat.f_bavail == 0:
                    kind = "disk_full"
            except OSError:
                pass
        return cls(path, kind, str(exc) or type(exc).__name__)


class DbFaults:
    """Counts the store's faults, logs each episode once, and tells its listeners (metrics)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listeners: list[Callable[[FaultKind], None]] = []
        self.errors = 0
        self.episode: StateDBError | None = None
        self._episode_errors = 0
        self._lock = threading.Lock()

    def failed(self, error: StateDBError) -> None:
        with self._lock:
            first = self.episode is None or self.episode.kind != error.kind
            self.episode = error
            self.errors += 1
            self._episode_errors = 1 if first else self._episode_errors + 1
        for listener in self.listeners:
            try:
                listener(error.kind)
            except Exception:  # a metrics bug must not turn a DB fault into another fault
                log.exception("state DB fault listener failed")
        if first and not error.fatal:  # a broken file stops its reader, which says so itself
            log.warning("state DB fault: %s; retrying, nothing queued is lost", error.render())

    def succeeded(self) -> None:
        if self.episode is None:
            return
        with self._lock:
            episode, count = self.episode, self._episode_errors
            self.episode, self._episode_errors = None, 0
        if episode is not None:
            log.warning("state DB writable again: %s after %d failed operation(s)", episode.kind, count)
