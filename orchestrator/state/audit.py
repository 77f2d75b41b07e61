"""The append-only audit log `orchestrator-actions.jsonl`.

Each event is validated against the shipped JSON Schema, redacted, and appended as one whole
line. Every writer (the orchestrator and each CLI) goes through `AuditLog`, which makes a line
impossible to tear:

- one `write()` per whole line on an `O_APPEND` descriptor, under an exclusive `flock` that all
  writers take, so another writer's line can never land inside it;
- a newline guard: when the file does not end in `\n` (a crash or a full disk cut the last line
  short), the next line is written after a `\n`, never glued onto the fragment;
- a short write (the disk filled inside the line) is taken back with `ftruncate` to where the
  line began, and the whole line is kept for later: no fragment is left for others to follow.

If the disk refuses (full, read-only), lines are kept in memory, in order, up to `max_pending`
(then new lines are dropped and counted), and written before the next one; the service also
retries on its own every `RETRY_INTERVAL_S`. Each episode is said once when it starts and once
when it ends: on stderr for a CLI, in the log for the service.

Durability: a CLI's log (`AuditLog(path)`) fsyncs every line before `record` returns; the
service's (`AuditLog.for_service`) fsyncs at most every `SERVICE_SYNC_INTERVAL_S` after a write,
from a background thread, and at `close()` (the engine's stop). `flush(strict=True)` raises
`AuditWriteError` unless every event recorded so far is written and synced (what `send` needs
before exiting 0). Measured cost: docs/decisions.md, "Audit log durability (issue 13)".
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.clock import Clock, SystemClock, iso_utc
from orchestrator.errors import UserError
from orchestrator.redact import redact_obj
from orchestrator.schema import SchemaValidator, load_schema

if TYPE_CHECKING:  # imported by SchemaValidator only when an event may not fit
    pass

AUDIT_SCHEMA_NAME = "audit_event.schema.json"
SERVICE_SYNC_INTERVAL_S = 0.2  # the service's fsync cadence: at most this long between a write and its fsync
RETRY_INTERVAL_S = 1.0  # the service retries kept lines this often while the disk refuses them
MAX_PENDING = 10_000  # lines kept in memory while the disk refuses; later ones are dropped and counted

log = logging.getLogger(__name__)

Report = Callable[[int, str], None]


def audit_validator() -> SchemaValidator:
    return SchemaValidator(load_schema(AUDIT_SCHEMA_NAME))


def report_on_stderr(level: int, message: str) -> None:
    """A CLI's way to say it: one line on stderr, named after the program."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "tmux-agent"
    kind = {logging.WARNING: "warning: ", logging.ERROR: "error: "}.get(level, "")
    print(f"{prog}: {kind}{message}", file=sys.stderr, flush=True)


def report_in_log(level: int, message: str) -> None:
    """The service's way to say it: its log (stderr and orchestrator.log)."""
    log.log(level, "%s", message)


class AuditWriteError(UserError):
    """Events recorded but not (yet) on disk and synced. A CLI says it in one line and exits 1."""

    exit_code = 1


@dataclass
class _Episode:
    """One stretch of refused writes: from the first refusal until the kept lines are all written."""

    error: OSError
    written: int = 0
    dropped: int = 0


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc)


class AuditLog:
    def __init__(
        self,
        path: Path,
        clock: Clock | None = None,
        on_write_error: Callable[[OSError], None] | None = None,
        *,
        sync_interval_s: float = 0.0,
        report: Report | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        """`sync_interval_s` 0 (a CLI): fsync every line before `record` returns; above 0 (the
        service): fsync at most that long after a write, from a background thread.
        `on_write_error` is called once per line the disk refused (not per retry)."""
        self.path = Path(path)
        self.clock = clock or SystemClock()
        self.on_write_error = on_write_error
        self.sync_interval_s = sync_interval_s
        self.report: Report = report or report_on_stderr
        self.max_pending = max_pending
        self.dropped = 0  # lines dropped because the in-memory queue was full, since this log was made
        self._validator = audit_validator()
        self._pending: deque[tuple[str, bytes]] = deque()  # (event name, line), oldest first
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._episode: _Episode | None = None
        self._unsynced = False  # lines written since the last fsync
        self._dirty_since: float | None = None  # monotonic time of the first unsynced write
        self._dir_unsynced = False  # this log created the file: its folder entry needs an fsync too
        self._sync_error: OSError | None = None
        self._next_retry = 0.0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._exit_hook = False
        self._caller_told = False
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_service(
        cls,
        path: Path,
        clock: Clock | None = None,
        on_write_error: Callable[[OSError], None] | None = None,
        *,
        sync_interval_s: float = SERVICE_SYNC_INTERVAL_S,
        max_pending: int = MAX_PENDING,
    ) -> AuditLog:
        """The orchestrator's log: deferred fsync, background retries, episodes said in its log."""
        return cls(
            path,
            clock,
            on_write_error,
            sync_interval_s=sync_interval_s,
            report=report_in_log,
            max_pending=max_pending,
        )

    # -- writing -------------------------------------------------------------------------------

    def record(self, event: str, session: str | None = None, **fields: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"ts": iso_utc(self.clock.now()), "event": event, "session": session}
        entry.update({k: v for k, v in fields.items() if v is not None or k == "exit_code"})
        entry = redact_obj(entry)
        self._validator.validate(entry)
        line = (json.dumps(entry, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")
        with self._lock:
            error = self._write_pending_locked() if len(self._pending) >= self.max_pending else None
            if len(self._pending) >= self.max_pending:
                self.dropped += 1
                if self._episode is not None:
                    self._episode.dropped += 1
            else:
                self._pending.append((event, line))
                error = self._write_pending_locked()
            if error is not None:
                if self.on_write_error:
                    self.on_write_error(error)
            self._after_write_locked()
        return entry

    @property
    def pending(self) -> int:
        """Lines recorded but not written yet (the disk refused them)."""
        return len(self._pending)

    def flush(self, strict: bool = False) -> bool:
        """Write the kept lines; True when none is left. A CLI's lines are synced too.

        `strict`: also fsync now, and raise `AuditWriteError` (one line, exit 1) unless every
        event recorded so far is on disk and synced."""
        with self._lock:
            self._write_pending_locked()
            if strict or self._inline:
                self._sync_locked()
            self._caller_told = bool(self._pending)  # the caller says it: no second word at exit
            if strict and (self._pending or self._sync_error is not None):
                raise self._write_error_locked()
            return not self._pending

    def close(self) -> None:
        """Stop the background thread, write what is kept, fsync. Later records sync at once."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)
        with self._lock:
            self._write_pending_locked()
            self._sync_locked()

    # -- internals -----------------------------------------------------------------------------

    @property
    def _inline(self) -> bool:
        return self.sync_interval_s <= 0 or self._closed

    def _after_write_locked(self) -> None:
        if self._inline:
            self._sync_locked()
            if self._pending and not self._exit_hook:
                self._exit_hook = True
                atexit.register(_say_unwritten_at_exit, weakref.ref(self))
            return
        if self._thread is None and (self._unsynced or self._pending):
            self._thread = threading.Thread(target=self._background, name="audit-sync", daemon=True)
            self._thread.start()
        self._wake.notify_all()

    def _write_pending_locked(self) -> OSError | None:
        """Append the kept lines, oldest first, each with one write(); the error that stopped it."""
        if not self._pending:
            return None
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        created = False
        try:
            try:
                fd = os.open(self.path, flags)
            except FileNotFoundError:
                fd = os.open(self.path, flags | os.O_CREAT, 0o600)
                created = True
        except OSError as exc:
            return self._refused_locked(exc)
        error: OSError | None = None
        written = 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # every AuditLog takes it: the guard and the take-back are safe
            try:
                while self._pending:
                    _, line = self._pending[0]
                    start = os.fstat(fd).st_size
                    data = line
                    if start and os.pread(fd, 1, start - 1) != b"\n":
                        data = b"\n" + line  # the file ends torn: never glue this line onto the fragment
                    try:
                        count = os.write(fd, data)
                    except OSError as exc:
                        error = exc
                        break
                    if count != len(data):
                        # the disk filled inside the line: take the part back, keep the whole line
                        try:
                            os.ftruncate(fd, start)
                        except OSError:
                            pass  # the guard closes the fragment before the next line
                        error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                        break
                    self._pending.popleft()
                    written += 1
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            if written:
                self._unsynced = True
                self._dir_unsynced = self._dir_unsynced or created
                if self._dirty_since is None:
                    self._dirty_since = time.monotonic()
        finally:
            os.close(fd)
        if self._episode is not None:
            self._episode.written += written
        if error is not None:
            return self._refused_locked(error)
        self._recovered_locked()
        return None

    def _refused_locked(self, exc: OSError) -> OSError:
        self._next_retry = time.monotonic() + RETRY_INTERVAL_S
        if self._episode is None:
            self._episode = _Episode(exc)
            keeps = "until it accepts them" if not self._inline else "until this process exits"
            self.report(
                logging.WARNING,
                f"audit log {self.path}: {_strerror(exc)}; {len(self._pending)} event(s) kept in memory "
                f"(at most {self.max_pending}) and written when the disk accepts them, {keeps} "
                f"— free space under {self.path.parent}",
            )
        return exc

    def _recovered_locked(self) -> None:
        episode = self._episode
        if episode is None or self._pending:
            return
        self._episode = None
        dropped = f"; {episode.dropped} event(s) dropped while the queue was full" if episode.dropped else ""
        self.report(logging.INFO, f"audit log {self.path} writable again: {episode.written} event(s) written{dropped}")
        if episode.dropped:  # the gap is named in the log itself, after the kept lines
            entry = {
                "ts": iso_utc(self.clock.now()),
                "event": "audit_write_failed",
                "session": None,
                "detail": f"{episode.dropped} event(s) dropped while the disk refused writes "
                f"({_strerror(episode.error)}; at most {self.max_pending} kept in memory)",
            }
            self._validator.validate(entry)
            self._pending.append(("audit_write_failed", (json.dumps(entry, ensure_ascii=False) + "\n").encode()))
            self._write_pending_locked()

    def _sync_locked(self) -> None:
        if not self._unsynced:
            return
        self._unsynced = False
        self._dirty_since = None
        self._sync_error = _sync(self.path, self._dir_unsynced)
        if self._sync_error is None:
            self._dir_unsynced = False
        else:
            self._unsynced = True
            self.report(logging.WARNING, f"audit log {self.path}: cannot fsync: {_strerror(self._sync_error)}")

    def _write_error_locked(self) -> AuditWriteError:
        if self._pending:
            names = sorted({name for name, _ in self._pending})
            cause = self._episode.error if self._episode is not None else None
            why = f": {_strerror(cause)}" if cause is not None else ""
            detail = f"{len(self._pending)} audit event(s) not written ({', '.join(names)}){why}"
        else:
            detail = f"audit events written but not synced: {_strerror(self._sync_error or OSError())}"
        return AuditWriteError(detail, file=str(self.path), fix=f"free space under {self.path.parent}")

    def _background(self) -> None:
        """The service's thread: fsync a write at most `sync_interval_s` after it, retry kept lines."""
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                deadlines = []
                if self._dirty_since is not None:
                    deadlines.append(self._dirty_since + self.sync_interval_s)
                if self._pending:
                    deadlines.append(self._next_retry)
                if not deadlines:
                    self._wake.wait()
                    continue
                if min(deadlines) > now:
                    self._wake.wait(min(deadlines) - now)
                    continue
                if self._pending and self._next_retry <= now:
                    self._write_pending_locked()
                if self._dirty_since is not None and self._dirty_since + self.sync_interval_s <= now:
                    self._sync_unlocked_while_waiting()

    def _sync_unlocked_while_waiting(self) -> None:
        """fsync without holding the lock, so `record` never waits for the disk."""
        self._unsynced = False
        self._dirty_since = None
        with_dir, self._dir_unsynced = self._dir_unsynced, False
        path = self.path
        self._lock.release()
        try:
            error = _sync(path, with_dir)
        finally:
            self._lock.acquire()
        self._sync_error = error
        if error is not None:
            self._unsynced = True
            self._dir_unsynced = self._dir_unsynced or with_dir
            self._dirty_since = time.monotonic()
            self.report(logging.WARNING, f"audit log {path}: cannot fsync: {_strerror(error)}")


def _sync(path: Path, with_dir: bool) -> OSError | None:
    """fdatasync the file (and fsync its folder when the file is new); the error, if any."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
        if with_dir:
            dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # a file that cannot be synced (/dev/full, a pipe): nothing to wait for
            return None
        return exc
    return None


def _say_unwritten_at_exit(ref: weakref.ref[AuditLog]) -> None:
    audit = ref()
    if audit is None:
        return
    with audit._lock:
        audit._write_pending_locked()
        audit._sync_locked()
        if audit._pending and not audit._caller_told:
            audit.report(logging.ERROR, audit._write_error_locked().render() + " (this process is exiting: lost)")
