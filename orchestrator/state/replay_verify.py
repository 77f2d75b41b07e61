"""Replay checked against the state DB: what `replay` rebuilt from the audit log alone, compared
with what the DB holds (a difference means the log is not a complete record of what the
orchestrator did)."""

from __future__ import annotations

from typing import Any

from orchestrator.model import TERMINAL_STATUSES
from orchestrator.redact import redact
from orchestrator.state.replay import (
    RESULT_FIELDS,
    Replay,
    SessionReplay,
)
from orchestrator.state.snapshot import Snapshot


def _db_last_result(metadata: dict[str, Any]) -> dict[str, Any] | None:
    last = metadata.get("last_command_result")
    if not isinstance(last, dict):
        return None
    subset = {k: last.get(k) for k in RESULT_FIELDS}
    if isinstance(subset["command"], str):
        subset["command"] = redact(subset["command"])  # the log stores commands redacted
    return subset


def verify_db(result: Replay, snapshot: Snapshot, session: str | None = None) -> list[str]:
    """Every way the replayed state differs from the DB, as readable lines (empty: identical)."""
    db_sessions = {row["name"]: row["metadata"] for row in snapshot.sessions()}
    counts = snapshot.status_counts()
    queued = {k: [r["id"] for r in v] for k, v in snapshot.commands_in("queued").items()}
    running = {k: [r["id"] for r in v] for k, v in snapshot.commands_in("running").items()}
    names = sorted(set(db_sessions) | set(result.sessions) | set(counts))
    if session is not None:
        names = [n for n in names if n == session]
    differences: list[str] = []
    for name in names:
        replayed = result.sessions.get(name) or SessionReplay(name)
        metadata = db_sessions.get(name)
        if metadata is None:
            differences.append(f"{name}: in the audit log but not in the state DB")
            metadata = {}
        expected = {
            "last_command_result": _db_last_result(metadata),
            "failure_streak": int(metadata.get("failure_streak") or 0),
            "stall_count": int(metadata.get("stall_count") or 0),
            "blocked": bool(metadata.get("blocked")),
        }
        for key, db_value in expected.items():
            log_value = getattr(replayed, key)
            if key in replayed.overridden or log_value == db_value:
                continue
            differences.append(f"{name}: {key}: log {_show(log_value)}, DB {_show(db_value)}")
        db_results = {k: v for k, v in counts.get(name, {}).items() if k in TERMINAL_STATUSES}
        if db_results != dict(+replayed.results):
            differences.append(
                f"{name}: results by status: log {dict(sorted(replayed.results.items()))}, "
                f"DB {dict(sorted(db_results.items()))}"
            )
        for label, db_ids, log_ids in (
            ("queued", queued.get(name, []), sorted(replayed.queued)),
            ("running", running.get(name, []), sorted(replayed.running)),
        ):
            if db_ids != log_ids:
                differences.append(f"{name}: {label} commands: log {log_ids}, DB {db_ids}")
    return differences


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={v!r}" for k, v in value.items()) + "}"
    return repr(value)
