"""What the CLI sees of a fleet on PostgreSQL, from any machine: every session some host has
claimed (a laptop's config need not list them to `status`, `send` or `reply` them), and which
hosts are down, whose sessions `status` shows as `host_down`.

Imported only when the state store is PostgreSQL (it loads psycopg through pg_fleet).
"""

from __future__ import annotations

import dataclasses

from orchestrator.config import Config, SessionConfig
from orchestrator.state.pg_fleet import PgFleet
from orchestrator.state.pg_store import PgStateStore

HOST_DOWN = "host_down"
"""The state `status` shows for a session whose host is down (no engine can report it)."""


def with_claimed_sessions(config: Config, store: PgStateStore) -> Config:
    """`config` plus the sessions the database knows and it does not, each on its claiming host."""
    known = {s.name for s in config.fleet_sessions}
    extra = tuple(
        SessionConfig(name=name, target=target, workdir=config.config_path.parent, host=host)
        for name, target, host in PgFleet(store, config.host).claimed_sessions()
        if name not in known
    )
    if not extra:
        return config
    return dataclasses.replace(config, other_hosts_sessions=(*config.other_hosts_sessions, *extra))


def down_hosts(config: Config, store: PgStateStore) -> dict[str, float]:
    """{host: seconds since its last heartbeat} for the fleet's hosts that are down now."""
    return PgFleet(store, config.host).down_hosts(config.settings.host_down_seconds)


def host_down_detail(host: str, age_s: float, last_state: str | None) -> str:
    return f"host {host} has sent no heartbeat for {age_s:.0f} s (last state reported: {last_state or 'none'})"
