"""The `tmuxagent_postgres` fixture: one throw-away PostgreSQL cluster per test process (each
xdist worker starts its own, so workers never share a database or a restart), and
`postgres_dsn`, a fresh empty schema on it per test (a schema, not a database: milliseconds
instead of a CREATE DATABASE; NOTIFY channels are shared by the schemas of one database). A pytest plugin module (plugin.py's
`pytest_plugins`); the cluster starts only when a test asks for it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from .postgres import PostgresServer, PostgresUnavailable

_schemas = itertools.count(1)


@pytest.fixture(scope="session")
def tmuxagent_postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL server (see postgres.py); missing binaries fail the test, they do not skip it."""
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_dsn(tmuxagent_postgres: PostgresServer) -> str:
    """The DSN of a new, empty schema on the session's server, for this test alone."""
    return tmuxagent_postgres.create_schema(f"test_{os.getpid()}_{next(_schemas)}")
