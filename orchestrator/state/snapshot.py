"""A read-only view of the state DB, for readers that must never write it (the
dashboard, the replay's `--verify-db`).

`Snapshot` holds the queries (qmark SQL both stores answer); a store supplies `rows`.
`StateSnapshot`, SQLite: each call opens its own `mode=ro` connection, so it is safe from any
thread and never takes a write lock the orchestrator would wait on. Tables that another
module creates lazily (the outbox, `kv`) may be missing; that reads as empty.
`orchestrator.state.pg_snapshot.PgSnapshot` is the same view of a fleet's PostgreSQL database.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from orchestrator.errors import UserError


class SnapshotError(Exception):
    """The DB could not be read right now (missing, locked for too long, corrupt)."""


class Snapshot:
    """The readers' queries over `rows`; `path` names the database in what they show."""

    path: Path

    @property
    def where(self) -> str:
        """The database as a person reads it (a file's path; a DSN without its password)."""
        return str(self.path)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    # sessions ------------------------------------------------------------------------
    def sessions(self) -> list[dict[str, Any]]:
        """Every session with its metadata parsed (a broken JSON value reads as {})."""
        out = []
        # every column: a fleet's sessions also name their `host`
        for row in self.rows("SELECT * FROM sessions ORDER BY name"):
            metadata = row["metadata"]
            if not isinstance(metadata, dict):  # SQLite's is text; PostgreSQL's JSON arrives parsed
                try:
                    metadata = json.loads(metadata or "{}")
                except (TypeError, ValueError):
                    metadata = {}
            row["metadata"] = metadata if isinstance(metadata, dict) else {}
            out.append(row)
        return out

    def down_hosts(self) -> set[str]:
        """The fleet hosts a peer has marked down (`host_down`); none on one machine's SQLite."""
        return set()

    # commands ------------------------------------------------------------------------
    def status_counts(self) -> dict[str, dict[str, int]]:
        """{session: {status: count}} over every command ever queued."""
        counts: dict[str, dict[str, int]] = {}
        for row in self.rows("SELECT session, status, COUNT(*) AS n FROM commands GROUP BY session, status"):
            counts.setdefault(row["session"], {})[row["status"]] = int(row["n"])
        return counts

    def commands_in(self, status: str) -> dict[str, list[dict[str, Any]]]:
        """{session: [command rows]} with this status, oldest first."""
        out: dict[str, list[dict[str, Any]]] = {}
        for row in self.rows(
            "SELECT id, session, command, status, queued_at, started_at FROM commands WHERE status=? ORDER BY id",
            (status,),
        ):
            out.setdefault(row["session"], []).append(row)
        return out

    # notifications -------------------------------------------------------------------
    def notifications(self) -> dict[str, Any]:
        """The notifier's health record plus the number of messages waiting in the outbox."""
        rows = self.rows("SELECT value FROM kv WHERE key='notifications'")
        try:
            health = json.loads(rows[0]["value"]) if rows else {}
        except ValueError:
            health = {}
        pending = self.rows("SELECT COUNT(*) AS n FROM outbox WHERE status='pending'")
        health = health if isinstance(health, dict) else {}
        health["pending"] = int(pending[0]["n"]) if pending else 0
        return health


@dataclass(frozen=True)
class StateSnapshot(Snapshot):
    """A SQLite state file, read-only."""

    path: Path

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise SnapshotError(f"state DB not found: {self.path}")
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        try:
            db = sqlite3.connect(uri, uri=True, timeout=5, check_same_thread=False)
        except sqlite3.Error as exc:
            raise SnapshotError(f"cannot open {self.path}: {exc}") from None
        db.row_factory = sqlite3.Row
        return db

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows as dicts; a table that does not exist yet reads as no rows."""
        try:
            with closing(self._connect()) as db:
                return [dict(r) for r in db.execute(sql, params)]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise SnapshotError(f"cannot read {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise SnapshotError(f"cannot read {self.path}: {exc}") from None


def existing_db(path: Path, flag: str) -> StateSnapshot:
    """A snapshot of a DB the user named; a missing file is a user error."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(
            "state DB not found",
            file=str(path),
            key=flag,
            fix="pass the state_db of your agent-config.yaml (the orchestrator creates it)",
        )
    return StateSnapshot(path)
