"""The SQLite state store: sessions, their metadata, and the command queue.

WAL mode plus a busy timeout lets the orchestrator and the CLI use one file at
once. Every change runs in a `BEGIN IMMEDIATE` transaction, and state changes
are guarded by the row's current status so a result is recorded exactly once.
`synchronous=FULL`: a commit is on disk (the WAL fsynced) before it returns, so an
id `tmux-agent send` printed survives a power cut. The one exception is `batch` (the
subscribers' view of a dispatch or a result already committed): it commits under
`synchronous=NORMAL`, in the WAL like any other commit (a killed process loses none of it) but
without an fsync of its own; the next durable commit's fsync carries it.

Every SQLite failure leaves the store as a `StateDBError` (`db_faults`: one line naming the
file, the kind of fault and its fix), counted and logged once per episode by the store's
`faults`; the next successful commit ends the episode. A failed transaction is rolled back
whole, so a caller that retries it never records anything twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from orchestrator.clock import Clock, SystemClock, iso_utc
from orchestrator.metadata import clean_metadata
from orchestrator.model import CommandResult, CommandRow
from orchestrator.state.db_faults import NOT_FAULTS, DbFaults, StateDBError
from orchestrator.state.port import Dialect

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    name TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    command TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued',
    source TEXT NOT NULL DEFAULT 'cli',
    queued_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    exit_code INTEGER,
    duration_s REAL,
    output_tail TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    recorded_at REAL
);
CREATE INDEX IF NOT EXISTS commands_by_session_status ON commands(session, status, id);
"""

# The queue depth per session, kept by triggers in the same statement (so the same transaction)
# as whatever changes a command's status: `enqueue`, `mark_running`, `revert_to_queued`, a raw
# UPDATE or DELETE from a test or a person's sqlite3 shell alike. Reading the depths is then one
# small table (a row per session), never a scan of the queue.
QUEUE_DEPTH_OBJECTS = ("queue_depth", "queue_depth_insert", "queue_depth_update", "queue_depth_delete")
QUEUE_DEPTH_SCHEMA = (
    "DROP TABLE IF EXISTS queue_depth",
    "DROP TRIGGER IF EXISTS queue_depth_insert",
    "DROP TRIGGER IF EXISTS queue_depth_update",
    "DROP TRIGGER IF EXISTS queue_depth_delete",
    "CREATE TABLE queue_depth (session TEXT PRIMARY KEY, queued INTEGER NOT NULL)",
    "CREATE TRIGGER queue_depth_insert AFTER INSERT ON commands WHEN NEW.status = 'queued' BEGIN "
    "INSERT INTO queue_depth(session, queued) VALUES (NEW.session, 1) "
    "ON CONFLICT(session) DO UPDATE SET queued = queued + 1; END",
    "CREATE TRIGGER queue_depth_update AFTER UPDATE OF status, session ON commands "
    "WHEN (OLD.status = 'queued' OR NEW.status = 'queued') "
    "AND (OLD.status IS NOT NEW.status OR OLD.session IS NOT NEW.session) BEGIN "
    "UPDATE queue_depth SET queued = queued - 1 WHERE OLD.status = 'queued' AND session = OLD.session; "
    "INSERT INTO queue_depth(session, queued) SELECT NEW.session, 1 WHERE NEW.status = 'queued' "
    "ON CONFLICT(session) DO UPDATE SET queued = queued + 1; END",
    "CREATE TRIGGER queue_depth_delete AFTER DELETE ON commands WHEN OLD.status = 'queued' BEGIN "
    "UPDATE queue_depth SET queued = queued - 1 WHERE session = OLD.session; END",
    "INSERT INTO queue_depth(session, queued) SELECT session, COUNT(*) FROM commands WHERE status = 'queued' "
    "GROUP BY session",
)

_Value = TypeVar("_Value")


@dataclass
class _Snapshot:
    """What one loop round has read so far (`StateStore.round`): each session's metadata as
    stored and as cleaned (JSON text), and the queue depths."""

    metadata_text: dict[str, str] | None = None
    clean_text: dict[str, str] = field(default_factory=dict)
    clean: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    depths: dict[str, int] | None = None

    def with_heartbeat(self, names: Sequence[str], stamp: str) -> _Snapshot:
        """This snapshot as it reads after `write_heartbeat(names, stamp)`: only that key of those
        sessions changed, so nothing else is read or cleaned again (a heartbeat every two seconds
        would otherwise re-read and re-validate every session's metadata)."""

        def patched(texts: Mapping[str, str]) -> dict[str, str]:
            out = dict(texts)
            for name in names:
                if name in out:
                    try:
                        value = json.loads(out[name])
                    except ValueError:  # what `write_heartbeat` replaces, as it does in the DB
                        value = {}
                    value = value if isinstance(value, dict) else {}
                    value["orchestrator_heartbeat"] = stamp
                    out[name] = json.dumps(value, ensure_ascii=False)
            return out

        wanted = set(names)
        return _Snapshot(
            metadata_text=None if self.metadata_text is None else patched(self.metadata_text),
            clean_text=patched(self.clean_text),
            clean={n: view for n, view in self.clean.items() if n not in wanted},
            depths=self.depths,
        )


def _metadata_dict(row: sqlite3.Row | Mapping[str, str] | None) -> dict[str, Any]:
    """A session row's metadata column as a dict ({} for no row, or a value that is not an object)."""
    if row is None:
        return {}
    metadata = json.loads(row["metadata"])
    return metadata if isinstance(metadata, dict) else {}


class StateStore:
    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, clock: Clock | None = None, busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path)
        self.clock = clock or SystemClock()
        self.faults = DbFaults(self.path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateDBError(self.path, "cantopen", f"{self.path.parent}: {exc.strerror}") from None
        with self._guarded(report=False):
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
            )
            try:
                self._db.row_factory = sqlite3.Row
                self._db.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                for statement in SCHEMA.strip().split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._ensure_queue_depth()
            except BaseException:
                self._db.close()
                raise
        # a loop round's snapshot (see `round`): the thread it belongs to, the DB's data_version
        # when it was taken, and what it read so far (dropped by any commit of this store)
        self._round_owner: int | None = None
        self._data_version: int | None = None
        self._snapshot = _Snapshot()
        self.generation = 0  # counts the snapshots dropped: unchanged, nothing in the DB changed
        self._batching = False  # inside `batch`: writes are savepoints of its one transaction
        self._savepoints = 0

    def _ensure_queue_depth(self) -> None:
        """Create the depth table and its triggers once (an older DB gets them counted from its
        queue, in one transaction, so two processes opening it at once cannot count twice)."""
        wanted = ", ".join("?" * len(QUEUE_DEPTH_OBJECTS))
        sql = f"SELECT COUNT(*) FROM sqlite_master WHERE name IN ({wanted})"
        if self._db.execute(sql, QUEUE_DEPTH_OBJECTS).fetchone()[0] == len(QUEUE_DEPTH_OBJECTS):
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if self._db.execute(sql, QUEUE_DEPTH_OBJECTS).fetchone()[0] != len(QUEUE_DEPTH_OBJECTS):
                for statement in QUEUE_DEPTH_SCHEMA:
                    self._db.execute(statement)
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _guarded(self, report: bool = True) -> Iterator[None]:
        """Turn a SQLite fault into a StateDBError naming this file, counted in `faults`
        (not while opening: the caller gets that one error, and nothing runs yet to count it)."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, NOT_FAULTS):
                raise
            error = StateDBError.of(self.path, exc)
            if report:
                self.faults.failed(error)
            raise error from exc

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._guarded():
            yield self._db

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:  # SQLite may have rolled back already (a full disk, an I/O error)
                pass

    @contextmanager
    def transaction(
        self, after: Callable[[_Snapshot], _Snapshot] | None = None, *, durable: bool = True
    ) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` … `COMMIT`; on any failure (the COMMIT's own included) it is
        rolled back whole, so nothing of it is kept and the caller may simply do it again.
        `after`: what the write did to the round's snapshot, when the writer knows exactly (the
        snapshot is patched and its generation kept); otherwise the snapshot is dropped.
        `durable=False`: committed without an fsync of its own, as a batch is (see `batch`)."""
        with self._lock, self._guarded(), self._snapshot_after(after), self._fsync(durable or self._batching):
            if self._batching:  # part of a batch: a savepoint, rolled back alone if it fails
                self._savepoints += 1
                name = f"write{self._savepoints}"
                self._db.execute(f"SAVEPOINT {name}")
                try:
                    yield self._db
                    self._db.execute(f"RELEASE {name}")
                except BaseException:
                    self._db.execute(f"ROLLBACK TO {name}")
                    self._db.execute(f"RELEASE {name}")
                    raise
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        self.faults.succeeded()

    @contextmanager
    def _snapshot_after(self, after: Callable[[_Snapshot], _Snapshot] | None) -> Iterator[None]:
        """A round reads its own writes: the snapshot is patched by `after` when the write
        succeeded, else dropped (a failed write may have changed what a retry will read)."""
        try:
            yield
        except BaseException:
            self._new_snapshot()
            raise
        if after is None:
            self._new_snapshot()
        else:
            self._snapshot = after(self._snapshot)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """The writes made inside go to the file in one transaction (one fsync instead of one per
        write): what the subscribers of one engine step write about it (a session's state, its
        `running` view, a streak). Each write is still its own savepoint, so one that fails is
        rolled back alone, as it would have been. Only for writes that may be lost together if
        the final COMMIT fails (the view of a result already committed, never the result or a
        queued command): when the batch cannot even start (the DB locked past the busy timeout,
        say), the writes run one by one as they would without it. Holds the store's lock
        throughout, so other threads of this process wait the few milliseconds it takes.

        Committed without an fsync of its own (`synchronous=NORMAL` for this one commit): the
        batch is in the WAL when COMMIT returns, so the process dying loses nothing of it; only
        a power cut before the next durable commit (the next result, dispatch or `send`) could
        take the last step's view with it — never a result or a queued command, which commit on
        their own (issue 15: two fsyncs fewer per command)."""
        with self._lock:
            if self._batching:
                yield
                return
            try:
                with self._guarded(report=False):
                    self._db.execute("PRAGMA synchronous=NORMAL")
                    self._db.execute("BEGIN IMMEDIATE")
            except StateDBError:
                self._durable()
                yield  # each write on its own, with its own fault handling
                return
            self._batching = True
            try:
                yield
            except BaseException:
                self._batching = False
                self._rollback()
                self._new_snapshot()
                self._durable()
                raise
            self._batching = False
            with self._guarded():
                try:
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
                finally:
                    self._new_snapshot()
                    self._durable()
        self.faults.succeeded()

    @contextmanager
    def _fsync(self, durable: bool) -> Iterator[None]:
        """The commit inside is fsynced (FULL, the default) or only written to the WAL (NORMAL)."""
        if durable:
            yield
            return
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self._durable()

    def _durable(self) -> None:
        """Every commit but a batch's is fsynced before it returns (see `batch`)."""
        try:
            self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error:  # a connection SQLite cannot even set a flag on: the next write says so
            pass

    # a loop round's snapshot -------------------------------------------------------------
    @contextmanager
    def round(self) -> Iterator[None]:
        """One round of the engine's loop: its metadata and queue-depth reads are served from
        one snapshot instead of a statement per session, so an idle round costs one
        `PRAGMA data_version` however many sessions there are.

        The snapshot is read again after another connection commits (SQLite's data_version says
        so) or this store commits, so a round sees its own writes and, from the next round on,
        everyone else's. Only the thread that opened the round reads from it, and only inside
        it; every other read, and every read inside a transaction, is of the DB itself.
        """
        with self._reading() as db:
            version = int(db.execute("PRAGMA data_version").fetchone()[0])
            if version != self._data_version:
                self._new_snapshot()
            self._data_version = version
            self._round_owner = threading.get_ident()
        try:
            yield
        finally:
            self._round_owner = None

    def _new_snapshot(self) -> None:
        self._snapshot = _Snapshot()
        self.generation += 1

    def _in_round(self) -> bool:
        """A read the round's snapshot may answer: the round's thread, outside a transaction."""
        return self._round_owner == threading.get_ident() and not self._db.in_transaction

    def check_integrity(self) -> None:
        """`PRAGMA quick_check` (the orchestrator runs it at start): a damaged file is a fatal StateDBError."""
        with self._reading() as db:
            problems = [str(r[0]) for r in db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            error = StateDBError(self.path, "corrupt", "; ".join(problems))
            self.faults.failed(error)
            raise error

    def _now(self) -> str:
        return iso_utc(self.clock.now())

    # sessions and metadata -------------------------------------------------
    def ensure_session(self, name: str, target: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO sessions(name, target, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET target=excluded.target",
                (name, target, self._now()),
            )

    def session_names(self) -> list[str]:
        with self._reading() as db:
            return [r["name"] for r in db.execute("SELECT name FROM sessions ORDER BY name")]

    def metadata(self, name: str) -> dict[str, Any]:
        """The session's metadata as readers may trust it: a known key whose stored value does not
        fit the shipped schema (written around `tmux-agent meta set`, or by an older version) is
        left out, with one warning per key (`orchestrator.metadata.clean_metadata`)."""
        with self._lock:
            if self._in_round() and name in self._snapshot.clean_text:
                return _metadata_dict({"metadata": self._snapshot.clean_text[name]})
            cleaned = clean_metadata(self.raw_metadata(name), name)
            if self._in_round():  # kept as text: every reader gets its own copy to change
                self._snapshot.clean_text[name] = json.dumps(cleaned, ensure_ascii=False)
        return cleaned

    def metadata_view(self, name: str) -> Mapping[str, Any]:
        """The same as `metadata`, read-only and shared: inside a round, one parse per session per
        snapshot serves every reader (a gate asked each round, a gauge), with no copy made. Never
        change what it holds."""
        with self._lock:
            if not self._in_round():
                return MappingProxyType(self.metadata(name))
            view = self._snapshot.clean.get(name)
            if view is None:
                view = self._snapshot.clean[name] = MappingProxyType(self.metadata(name))
            return view

    def raw_metadata(self, name: str) -> dict[str, Any]:
        """The metadata exactly as stored (for showing it to the person who must fix it)."""
        with self._reading() as db:
            if self._in_round():
                if self._snapshot.metadata_text is None:
                    rows = db.execute("SELECT name, metadata FROM sessions").fetchall()
                    self._snapshot.metadata_text = {r["name"]: r["metadata"] for r in rows}
                text = self._snapshot.metadata_text.get(name)
                return _metadata_dict({"metadata": text} if text is not None else None)
            row = db.execute("SELECT metadata FROM sessions WHERE name=?", (name,)).fetchone()
        return _metadata_dict(row)

    def _update_metadata(self, db: sqlite3.Connection, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        row = db.execute("SELECT metadata FROM sessions WHERE name=?", (name,)).fetchone()
        current = _metadata_dict(row)
        current.update(changes)
        db.execute(
            "INSERT INTO sessions(name, target, metadata, updated_at) VALUES (?, '', ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET metadata=excluded.metadata, updated_at=excluded.updated_at",
            (name, json.dumps(current, ensure_ascii=False), self._now()),
        )
        return current

    def update_metadata(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        with self.transaction() as db:
            return self._update_metadata(db, name, changes)

    def modify_metadata(self, name: str, key: str, change: Callable[[Any], _Value]) -> _Value:
        """Read-modify-write one key in one transaction, safe against the CLI writing at once."""
        with self.transaction() as db:
            row = db.execute("SELECT metadata FROM sessions WHERE name=?", (name,)).fetchone()
            value = change(_metadata_dict(row).get(key))
            self._update_metadata(db, name, {key: value})
            return value

    def write_heartbeat(self, names: Sequence[str], stamp: str) -> None:
        """Set `orchestrator_heartbeat` of every named session in one statement (not a
        read-modify-write per session); a metadata value that is not a JSON object is replaced
        by one holding just the heartbeat, as `update_metadata` would. Not fsynced on its own:
        a stamp lost to a power cut is one the restarted orchestrator writes again."""
        with self.transaction(after=lambda snapshot: snapshot.with_heartbeat(names, stamp), durable=False) as db:
            db.execute(
                "UPDATE sessions SET metadata = json_set("
                "CASE WHEN json_valid(metadata) AND json_type(metadata) = 'object' THEN metadata ELSE '{}' END, "
                "'$.orchestrator_heartbeat', ?), updated_at = ? WHERE name IN (SELECT value FROM json_each(?))",
                (stamp, self._now(), json.dumps(list(names), ensure_ascii=False)),
            )

    def increment_metadata(self, name: str, key: str, by: int = 1) -> int:
        with self.transaction() as db:
            row = db.execute("SELECT metadata FROM sessions WHERE name=?", (name,)).fetchone()
            stored = clean_metadata(_metadata_dict(row), name).get(key)
            value = (stored if isinstance(stored, int) and not isinstance(stored, bool) else 0) + by
            self._update_metadata(db, name, {key: value})
            return value

    # the command queue ------------------------------------------------------
    def enqueue(self, session: str, command: str, source: str = "cli") -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO commands(session, command, source, queued_at) VALUES (?, ?, ?, ?)",
                (session, command, source, self._now()),
            )
            if cur.lastrowid is None:  # pragma: no cover - sqlite3 always sets it after an INSERT
                raise RuntimeError("INSERT into commands returned no row id")
            return cur.lastrowid

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Read-only rows as dicts, for modules that keep their own tables here."""
        with self._reading() as db:
            return [dict(r) for r in db.execute(sql, params)]

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[CommandRow]:
        return [CommandRow(**r) for r in self.query(sql, params)]

    def command(self, command_id: int) -> CommandRow | None:
        rows = self._rows("SELECT * FROM commands WHERE id=?", (command_id,))
        return rows[0] if rows else None

    def next_queued(self, session: str) -> CommandRow | None:
        rows = self._rows("SELECT * FROM commands WHERE session=? AND status='queued' ORDER BY id LIMIT 1", (session,))
        return rows[0] if rows else None

    def running(self) -> list[CommandRow]:
        return self._rows("SELECT * FROM commands WHERE status='running' ORDER BY id")

    def commands(self, session: str | None = None, limit: int = 50) -> list[CommandRow]:
        if session:
            return self._rows("SELECT * FROM commands WHERE session=? ORDER BY id DESC LIMIT ?", (session, limit))
        return self._rows("SELECT * FROM commands ORDER BY id DESC LIMIT ?", (limit,))

    def queued(self, session: str) -> list[CommandRow]:
        return self._rows("SELECT * FROM commands WHERE session=? AND status='queued' ORDER BY id", (session,))

    def queue_depths(self) -> dict[str, int]:
        """Queued commands per known session (0 for none): the trigger-kept `queue_depth` table,
        a row per session whatever the queue's length; inside a round, its snapshot."""
        with self._reading():
            return dict(self._depth_rows())

    def queue_depth(self, session: str) -> int:
        """One session's queued commands (inside a round: from its snapshot, no statement)."""
        with self._reading() as db:
            if self._in_round():
                return self._depth_rows().get(session, 0)
            row = db.execute("SELECT MAX(0, queued) FROM queue_depth WHERE session=?", (session,)).fetchone()
        return int(row[0]) if row is not None else 0

    def _depth_rows(self) -> dict[str, int]:
        if self._in_round() and self._snapshot.depths is not None:
            return self._snapshot.depths
        rows = self._db.execute(
            "SELECT s.name AS name, MAX(0, COALESCE(q.queued, 0)) AS depth FROM sessions s "
            "LEFT JOIN queue_depth q ON q.session = s.name"
        ).fetchall()
        depths = {r["name"]: int(r["depth"]) for r in rows}
        if self._in_round():
            self._snapshot.depths = depths
        return depths

    def mark_running(self, command_id: int, started_at: str) -> bool:
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE commands SET status='running', started_at=?, attempts=attempts+1 "
                "WHERE id=? AND status='queued'",
                (started_at, command_id),
            )
            return cur.rowcount == 1

    def finish(self, command_id: int, result: CommandResult) -> bool:
        """Record a command's end and its session's `last_command_result` in one transaction.

        Returns False when the command was already finished, which is how a
        result is recorded exactly once even if two signals race.
        """
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE commands SET status=?, exit_code=?, started_at=?, finished_at=?, duration_s=?, "
                "output_tail=?, recorded_at=? WHERE id=? AND status='running'",
                (
                    result.status,
                    result.exit_code,
                    result.started_at,
                    result.finished_at,
                    result.duration_s,
                    result.output_tail,
                    self.clock.now(),
                    command_id,
                ),
            )
            if cur.rowcount != 1:
                return False
            row = db.execute("SELECT session, command FROM commands WHERE id=?", (command_id,)).fetchone()
            self._update_metadata(
                db, row["session"], {"last_command_result": result.as_last_result(command_id, row["command"])}
            )
            return True

    def revert_to_queued(self, command_id: int) -> bool:
        """Put back a command that was marked running but never reached the shell."""
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE commands SET status='queued', started_at=NULL WHERE id=? AND status='running'", (command_id,)
            )
            return cur.rowcount == 1
