"""The fleet's records in the shared PostgreSQL database: which host supervises each session,
and each host's heartbeat.

Every time here is the database server's (`clock_timestamp()`), never a host's: hosts whose
clocks disagree still agree on whose heartbeat is old. Each transition is one conditional
UPDATE, so when several orchestrators see the same thing at once exactly one of them wins it:
one `主机失联` per episode whoever notices first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from orchestrator.clock import iso_utc
from orchestrator.errors import UserError

from .pg_store import PgStateStore


@dataclass(frozen=True)
class HostRow:
    name: str
    heartbeat_at: datetime
    started_at: datetime
    pid: int | None
    down_since: datetime | None
    age_s: float
    """Seconds since its last heartbeat, by the database's clock."""


class SessionOnAnotherHost(UserError):
    """A session this host was configured to supervise is supervised by another, live host."""


class PgFleet:
    """The hosts of one database, seen from `host` (this orchestrator's, or a CLI's)."""

    def __init__(self, store: PgStateStore, host: str) -> None:
        self.store = store
        self.host = host

    def beat(self) -> bool:
        """This host's heartbeat; True when it ends a `host_down` episode (the host is back)."""
        with self.store.transaction() as db:
            row = db.execute("SELECT down_since FROM hosts WHERE name=? FOR UPDATE", (self.host,)).fetchone()
            db.execute(
                "INSERT INTO hosts(name, heartbeat_at, started_at, pid) "
                "VALUES (?, clock_timestamp(), clock_timestamp(), ?) ON CONFLICT(name) DO UPDATE "
                "SET heartbeat_at=clock_timestamp(), pid=excluded.pid, down_since=NULL",
                (self.host, os.getpid()),
            )
        return row is not None and row["down_since"] is not None

    def claim_down(self, older_than_s: float) -> list[str]:
        """The hosts whose heartbeat is older than `older_than_s` and not yet marked down,
        marked now: each is returned to exactly one caller (this host is never among them)."""
        rows = self.store.query(
            "UPDATE hosts SET down_since=clock_timestamp() WHERE down_since IS NULL AND name <> ? "
            "AND heartbeat_at < clock_timestamp() - make_interval(secs => ?) RETURNING name",
            (self.host, older_than_s),
        )
        return sorted(r["name"] for r in rows)

    def hosts(self) -> list[HostRow]:
        rows = self.store.query(
            "SELECT name, heartbeat_at, started_at, pid, down_since, "
            "EXTRACT(EPOCH FROM clock_timestamp() - heartbeat_at)::float8 AS age_s FROM hosts ORDER BY name"
        )
        return [HostRow(**r) for r in rows]

    def session_hosts(self) -> dict[str, str]:
        """{session: the host that supervises it}, for every session a host has claimed."""
        rows = self.store.query("SELECT name, host FROM sessions WHERE host IS NOT NULL")
        return {r["name"]: r["host"] for r in rows}

    def claimed_sessions(self) -> list[tuple[str, str, str]]:
        """(session, target, host) for every session a host has claimed, by name."""
        rows = self.store.query("SELECT name, target, host FROM sessions WHERE host IS NOT NULL ORDER BY name")
        return [(r["name"], r["target"], r["host"]) for r in rows]

    def down_hosts(self, older_than_s: float) -> dict[str, float]:
        """{host: seconds since its heartbeat} for the hosts that are down: marked so by a peer,
        or silent for longer than `older_than_s` (before any peer is there to mark it)."""
        return {h.name: h.age_s for h in self.hosts() if h.down_since is not None or h.age_s > older_than_s}

    def claim_sessions(
        self, sessions: Sequence[tuple[str, str]], live_within_s: float, config_file: str | None = None
    ) -> list[str]:
        """Record this host as the supervisor of each `(name, target)`; the names taken over
        from a host whose heartbeat is older than `live_within_s` are returned. A session
        that a live host supervises is refused, whole: one line and exit 2, nothing claimed."""
        with self.store.transaction() as db:
            taken: list[str] = []
            for name, target in sessions:
                row = db.execute(
                    "SELECT s.host, EXTRACT(EPOCH FROM clock_timestamp() - h.heartbeat_at)::float8 AS age_s "
                    "FROM sessions s LEFT JOIN hosts h ON h.name = s.host WHERE s.name=? FOR UPDATE OF s",
                    (name,),
                ).fetchone()
                owner, age = (row["host"], row["age_s"]) if row else (None, None)
                if owner and owner != self.host:
                    if age is not None and age < live_within_s:
                        raise SessionOnAnotherHost(
                            f"session {name} is supervised by host {owner} (heartbeat {age:.0f} s ago), "
                            f"so host {self.host} will not supervise it too",
                            file=config_file,
                            key="sessions",
                            fix=f"remove it from one host's config, or stop the orchestrator on {owner}",
                        )
                    taken.append(name)
                db.execute(
                    "INSERT INTO sessions(name, target, updated_at, host) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET target=excluded.target, host=excluded.host",
                    (name, target, iso_utc(self.store.clock.now()), self.host),
                )
        return taken
