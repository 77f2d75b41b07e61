"""Open the state store a config names: the SQLite file, or the fleet's PostgreSQL database.

The one place that chooses; psycopg is imported only when a DSN is configured, so a machine on
SQLite needs no PostgreSQL driver loaded (and the CLI stays quick).
"""

from __future__ import annotations

from orchestrator.clock import Clock
from orchestrator.config import Config

from .port import Store


def open_store(config: Config, clock: Clock | None = None) -> Store:
    if config.state_dsn:
        from .pg_store import PgStateStore

        return PgStateStore(config.state_dsn, clock, anchor=config.state_db)
    from .store import StateStore

    return StateStore(config.state_db, clock)
