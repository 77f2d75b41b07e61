"""The `tmuxagent_postgres` fixture: one throw-away PostgreSQL cluster per test process (each
xdist worker starts its own, so workers never share a database or a restart), and
`postgres_dsn`, a fresh empty schema on it per test (a schema, not a database: milliseconds
instead of a CREATE DATABASE; NOTIFY channels are shared by the schemas of one database). A
pytest plugin module (plugin.py's `pytest_plugins`); the cluster starts only when a test asks
for it.

The state store a test's orchestrator runs on: `tmuxagent_state_dsn` is None (the SQLite
file) unless the test is marked `tmuxagent_each_store`, which runs it twice, `[sqlite]` and
`[postgresql]` (then it is a fresh schema's DSN). `orchestrator_service` passes it on.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
from collections.abc import Iterator
from typing import Literal, get_args

import pytest

from . import options
from .postgres import PostgresServer, PostgresUnavailable
from .summaries import STORE_PROPERTY

_schemas = itertools.count(1)

StoreKind = Literal["sqlite", "postgresql"]
STORES: tuple[StoreKind, ...] = get_args(StoreKind)
EACH_STORE = "tmuxagent_each_store"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{EACH_STORE}: run the test on each state store, the SQLite file and a PostgreSQL database "
        "([sqlite] / [postgresql]); its orchestrator_service services use it",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # live mode runs on the user's own setup: their config's store, once
    if options.live(metafunc.config):
        return
    if metafunc.definition.get_closest_marker(EACH_STORE) and "tmuxagent_state_dsn" in metafunc.fixturenames:
        metafunc.parametrize("tmuxagent_state_dsn", available_stores(), indirect=True)


def available_stores() -> tuple[StoreKind, ...]:
    """Both stores where the `postgres` extra (psycopg) is installed — the dev install, so CI —
    else SQLite alone: a plain `pip install tmuxagent` runs `tmux-agent validate` on its SQLite
    default, and its report says `postgresql – not run` rather than failing on a missing driver."""
    return STORES if importlib.util.find_spec("psycopg") is not None else ("sqlite",)


@pytest.fixture
def tmuxagent_state_dsn(request: pytest.FixtureRequest) -> str | None:
    """The PostgreSQL DSN the test's orchestrators keep their state in, or None for SQLite."""
    store: StoreKind = getattr(request, "param", "sqlite")
    request.node.user_properties.append((STORE_PROPERTY, store))
    if store == "postgresql":
        dsn: str = request.getfixturevalue("postgres_dsn")
        return dsn
    return None


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
