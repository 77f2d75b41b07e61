"""The state store's port: what the engine, the guards, decision assist, the notifier and the
CLIs need of a state database, satisfied by the SQLite `StateStore` (one machine, the embedded
default) and the PostgreSQL `PgStateStore` (a fleet sharing one database).

Both speak one SQL to their callers: qmark placeholders (`?`) and the statements both engines
accept (`INSERT … ON CONFLICT … DO UPDATE`, `RETURNING id`, `LIMIT ?`); rows read by column
name. What only one engine has (SQLite's PRAGMAs, PostgreSQL's `FOR UPDATE SKIP LOCKED`) stays
inside its store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from orchestrator.clock import Clock
from orchestrator.model import CommandResult, CommandRow

from .db_faults import DbFaults

Dialect = Literal["sqlite", "postgresql"]
_Value = TypeVar("_Value")


class SqlCursor(Protocol):
    """What a caller reads back from one statement (rows by column name)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Any: ...


class SqlConnection(Protocol):
    """The connection a store's `transaction()` hands out: qmark statements, nothing else."""

    def execute(self, sql: str, parameters: Any = ..., /) -> SqlCursor: ...


class Store(Protocol):
    """The sessions, their metadata and the command queue (see `StateStore` for each meaning)."""

    clock: Clock
    faults: DbFaults
    dialect: Dialect

    @property
    def path(self) -> Path:
        """The local anchor: the SQLite file, or for PostgreSQL this host's place beside the
        config (where the doorbell and the lock live)."""
        ...

    @property
    def generation(self) -> int:
        """Changes whenever what a round reads may have changed (unchanged: nothing to re-read)."""
        ...

    def close(self) -> None: ...

    def transaction(self) -> AbstractContextManager[SqlConnection]: ...

    def batch(self) -> AbstractContextManager[None]: ...

    def round(self) -> AbstractContextManager[None]: ...

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]: ...

    def check_integrity(self) -> None: ...

    def ensure_session(self, name: str, target: str) -> None: ...

    def session_names(self) -> list[str]: ...

    def metadata(self, name: str) -> dict[str, Any]: ...

    def metadata_view(self, name: str) -> Mapping[str, Any]: ...

    def raw_metadata(self, name: str) -> dict[str, Any]: ...

    def update_metadata(self, name: str, changes: dict[str, Any]) -> dict[str, Any]: ...

    def modify_metadata(self, name: str, key: str, change: Callable[[Any], _Value]) -> _Value: ...

    def increment_metadata(self, name: str, key: str, by: int = 1) -> int: ...

    def write_heartbeat(self, names: Sequence[str], stamp: str) -> None: ...

    def enqueue(self, session: str, command: str, source: str = "cli") -> int: ...

    def command(self, command_id: int) -> CommandRow | None: ...

    def next_queued(self, session: str) -> CommandRow | None: ...

    def running(self) -> list[CommandRow]: ...

    def commands(self, session: str | None = None, limit: int = 50) -> list[CommandRow]: ...

    def queued(self, session: str) -> list[CommandRow]: ...

    def queue_depths(self) -> dict[str, int]: ...

    def queue_depth(self, session: str) -> int: ...

    def mark_running(self, command_id: int, started_at: str) -> bool: ...

    def finish(self, command_id: int, result: CommandResult) -> bool: ...

    def revert_to_queued(self, command_id: int) -> bool: ...
