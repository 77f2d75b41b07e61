"""`tmux-agent doctor` on a fleet: the shared PostgreSQL database answers, accepts writes (not a
replica), has a schema this tmuxagent knows, and which hosts beat. Read-only: doctor neither
migrates nor writes a heartbeat (imported only when the config names a `state_dsn`).
"""

from __future__ import annotations

from orchestrator.config import Config
from orchestrator.state.pg_snapshot import PgSnapshot
from orchestrator.state.pg_store import SCHEMA_VERSION
from orchestrator.state.snapshot import SnapshotError

from .doctor_checks import CheckResult

NAME = "state DB"


def check_fleet_db(config: Config, dsn: str) -> CheckResult:
    snapshot = PgSnapshot(dsn)
    where = snapshot.where
    try:
        replica = bool(snapshot.rows("SELECT pg_is_in_recovery() AS replica")[0]["replica"])
        versions = snapshot.rows("SELECT MAX(version) AS version FROM schema_version")
        hosts = snapshot.rows(
            "SELECT name, down_since IS NOT NULL AS down, "
            "EXTRACT(EPOCH FROM clock_timestamp() - heartbeat_at)::float8 AS age_s FROM hosts ORDER BY name"
        )
    except SnapshotError as exc:
        return CheckResult(NAME, False, str(exc), "check the DSN's host, port, database, user and pg_hba.conf")
    finally:
        snapshot.close()
    if replica:
        return CheckResult(NAME, False, f"{where} is a read-only replica", "point state_dsn at the primary")
    version = versions[0]["version"] if versions else None
    if version is not None and version > SCHEMA_VERSION:
        return CheckResult(
            NAME,
            False,
            f"{where}: schema version {version}, this tmuxagent knows up to {SCHEMA_VERSION}",
            "upgrade tmuxagent on this machine",
        )
    limit = config.settings.host_down_seconds
    beats = ", ".join(
        f"{h['name']} {'DOWN' if h['down'] or h['age_s'] > limit else 'up'} ({h['age_s']:.0f} s ago)" for h in hosts
    )
    schema = f"schema {version}" if version is not None else "no schema yet (the first orchestrator makes it)"
    down = [h["name"] for h in hosts if h["down"] or h["age_s"] > limit]
    return CheckResult(
        NAME,
        True,
        f"{where}: {schema}; hosts: {beats or 'none has started yet'}; this machine is {config.host}",
        f"restart tmux-agent-orchestrator on {', '.join(down)}" if down else "",
        warn=bool(down),
    )
