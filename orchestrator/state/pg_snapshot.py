"""The readers' view (`Snapshot`: the dashboard, replay's verify) of a fleet's PostgreSQL
database: read-only by the server's own rule (`default_transaction_read_only`), so a reader
can never write the fleet's state, and it creates nothing (a database no orchestrator has
migrated yet reads as empty, as a missing SQLite table does).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from .pg_errors import display_dsn
from .pg_store import Qmark
from .snapshot import Snapshot, SnapshotError

_Conn = psycopg.Connection[dict[str, Any]]


class PgSnapshot(Snapshot):
    """One connection, made on first use and again after it is lost; safe from any thread."""

    def __init__(self, dsn: str, connect_timeout_s: int = 5) -> None:
        self.dsn = dsn
        self.path = Path(display_dsn(dsn))
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._conn: _Conn | None = None

    def _connection(self) -> _Conn:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(
                self.dsn, autocommit=True, row_factory=dict_row, connect_timeout=self.connect_timeout_s
            )
            conn.execute("SET default_transaction_read_only = on")
            self._conn = conn
        return self._conn

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                return Qmark(self._connection()).execute(sql, params).fetchall()
            except psycopg.errors.UndefinedTable:
                return []
            except psycopg.Error as exc:
                self.close_locked()
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise SnapshotError(f"cannot read {self.where}: {reason}") from None

    @property
    def where(self) -> str:
        return display_dsn(self.dsn)

    def down_hosts(self) -> set[str]:
        return {r["name"] for r in self.rows("SELECT name FROM hosts WHERE down_since IS NOT NULL")}

    def close_locked(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self.close_locked()
