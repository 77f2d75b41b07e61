"""How a PostgreSQL failure reaches the product: as a `StateDBError` of the SQLite store's
fault kinds (so the engine, the CLI and the metrics treat both stores alike), naming the
database by its DSN without the password.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from orchestrator.errors import UserError

from .db_faults import FaultKind, StateDBError

# SQLSTATE classes and codes → the SQLite store's fault kinds (docs: errcodes-appendix)
_KIND_BY_SQLSTATE: dict[str, FaultKind] = {
    "53100": "disk_full",
    "25006": "readonly",
    "3D000": "cantopen",  # no such database
    "3F000": "cantopen",  # no such schema
    "28000": "cantopen",  # authorization
    "28P01": "cantopen",
    "XX001": "corrupt",
    "XX002": "corrupt",
    "55P03": "locked",
    "40001": "locked",  # serialization failure: do it again
    "40P01": "locked",  # deadlock
    "57014": "locked",  # statement timeout / cancelled
}
_KIND_BY_CLASS: dict[str, FaultKind] = {"08": "io", "57": "io", "53": "io", "58": "io", "XX": "other"}
_KIND_BY_TEXT: tuple[tuple[str, FaultKind], ...] = (
    ("does not exist", "cantopen"),
    ("authentication failed", "cantopen"),
    ("no pg_hba.conf entry", "cantopen"),
    ("permission denied", "cantopen"),
)
# bugs, not faults: they keep their own type and traceback (as sqlite3.IntegrityError does there)
NOT_FAULTS = (psycopg.IntegrityError, psycopg.ProgrammingError, psycopg.DataError, psycopg.NotSupportedError)

_FIXES: dict[FaultKind, tuple[str, str]] = {
    "disk_full": ("the PostgreSQL server's disk is full", "free space on the database server"),
    "locked": ("a lock or a conflicting transaction held the write back", "retry; look for a long transaction"),
    "corrupt": ("the PostgreSQL server reports damaged data", "check the server's log and restore from a backup"),
    "readonly": ("the PostgreSQL server accepts no writes", "point state_db at the primary, not a replica"),
    "cantopen": ("cannot open the state database", "check the DSN's host, database, user and pg_hba.conf"),
    "io": ("the PostgreSQL server is unreachable", "check that it runs; the store reconnects on its own"),
    "other": ("state database error", "check the server's log"),
}


def display_dsn(dsn: str) -> str:
    """The DSN without its password, for every message a person or a log sees."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "postgresql (an unreadable DSN)"
    where = f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}"
    return f"postgresql://{parts.get('user') or ''}@{where}/{parts.get('dbname') or ''}"


class PgStateDBError(StateDBError):
    """A StateDBError naming the database (never its password) instead of a file."""

    def __init__(
        self, dsn: str, kind: FaultKind, reason: str, *, detail: str | None = None, fix: str | None = None
    ) -> None:
        where = display_dsn(dsn)
        self.path = Path(where)  # what StateDBError's readers show as the place
        self.kind = kind
        self.reason = reason
        default_detail, default_fix = _FIXES[kind]
        UserError.__init__(self, f"{detail or default_detail} ({reason})", file=where, fix=fix or default_fix)
        self.exit_code = 2 if kind in ("corrupt", "readonly", "cantopen") else 1
        self._fatal = kind == "corrupt"

    @property
    def fatal(self) -> bool:
        return self._fatal

    @property
    def retryable(self) -> bool:
        """Waiting and doing it again may succeed (a dropped connection, a restart, a lock)."""
        return self.exit_code == 1

    @classmethod
    def newer_schema(cls, dsn: str, found: int, known: int) -> PgStateDBError:
        error = cls(
            dsn,
            "other",
            f"schema version {found}, this tmuxagent knows up to {known}",
            detail="the state database was written by a newer tmuxagent",
            fix="upgrade tmuxagent on this host (or point state_db at another database)",
        )
        error.exit_code, error._fatal = 2, True
        return error

    @classmethod
    def of_pg(cls, dsn: str, exc: psycopg.Error) -> PgStateDBError:
        code = exc.sqlstate or ""
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        kind = _KIND_BY_SQLSTATE.get(code) or _KIND_BY_CLASS.get(code[:2])
        if kind is None:
            lowered = text.lower()
            kind = next((k for needle, k in _KIND_BY_TEXT if needle in lowered), None)
        if kind is None:
            kind = "io" if isinstance(exc, psycopg.OperationalError) else "other"
        return cls(dsn, kind, text)
