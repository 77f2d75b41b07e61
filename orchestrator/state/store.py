"""The SQLite state store: sessions, their metadata, and the command queue.

WAL mode plus a busy timeout lets the orchestrator and the CLI use one file at
once. Every change runs in a `BEGIN IMMEDIATE` transaction, and state changes
are guarded by the row's current status so a result is recorded exactly once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from orchestrator.clock import Clock, SystemClock, iso_utc
from orchestrator.model import CommandResult, CommandRow

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

_Value = TypeVar("_Value")


def _metadata_dict(row: sqlite3.Row | None) -> dict[str, Any]:
    """A session row's metadata column as a dict ({} for no row, or a value that is not an object)."""
    if row is None:
        return {}
    metadata = json.loads(row["metadata"])
    return metadata if isinstance(metadata, dict) else {}


class StateStore:
    def __init__(self, path: Path, clock: Clock | None = None, busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path)
        self.clock = clock or SystemClock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in SCHEMA.strip().split(";"):
            if statement.strip():
                self._db.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

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
        with self._lock:
            return [r["name"] for r in self._db.execute("SELECT name FROM sessions ORDER BY name")]

    def metadata(self, name: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT metadata FROM sessions WHERE name=?", (name,)).fetchone()
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

    def increment_metadata(self, name: str, key: str, by: int = 1) -> int:
        with self.transaction() as db:
            row = db.execute("SELECT metadata FROM sessions WHERE name=?", (name,)).fetchone()
            value = int(_metadata_dict(row).get(key) or 0) + by
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
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, params)]

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
        with self._lock:
            rows = self._db.execute(
                "SELECT s.name AS name, COUNT(c.id) AS depth FROM sessions s "
                "LEFT JOIN commands c ON c.session = s.name AND c.status='queued' GROUP BY s.name"
            ).fetchall()
        return {r["name"]: int(r["depth"]) for r in rows}

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
