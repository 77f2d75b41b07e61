"""What the dashboard shows, as one JSON-ready dict built from the state DB (read
only) and the tail of the audit log.

Metadata written by other producers (`next_actions`, `task_decomposition`,
`blockers`) is normalised here to fixed shapes with string values, so the page
only ever renders known fields, as text.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from orchestrator.clock import Clock, SystemClock, iso_utc
from orchestrator.model import TERMINAL_STATUSES
from orchestrator.state.replay import rates
from orchestrator.state.snapshot import SnapshotError, StateSnapshot

DONE_STATUSES = frozenset({"done", "succeeded", "success", "completed", "complete", "finished"})
TAIL_BYTES = 256 * 1024
QUEUED_SHOWN = 10
LAST_RESULT_KEYS = (
    "command_id",
    "command",
    "exit_code",
    "status",
    "started_at",
    "finished_at",
    "duration_s",
    "output_tail",
)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON Infinity
        return 0


def _texts(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else [value]
    return [t for t in (_text(v) for v in items) if t]


def _recommendation(item: Any) -> dict[str, str | None]:
    if not isinstance(item, dict):
        return {"title": _text(item) or "", "detail": None, "command": None, "priority": None, "risk": None}
    return {key: _text(item.get(key)) for key in ("title", "detail", "command", "priority", "risk")}


def next_actions(value: Any) -> dict[str, Any] | None:
    """`{generated_at, source, blockers, recommendations: [{title, detail, command?, priority, risk}]}`."""
    if isinstance(value, list):
        value = {"recommendations": value}
    if not isinstance(value, dict):
        return None
    recommendations = value.get("recommendations")
    return {
        "generated_at": _text(value.get("generated_at")),
        "source": _text(value.get("source")),
        "blockers": _texts(value.get("blockers")),
        "recommendations": [_recommendation(r) for r in (recommendations if isinstance(recommendations, list) else [])],
    }


def decomposition(value: Any) -> dict[str, Any] | None:
    """`{source, steps: [{id, title, status}], done, total}`; a step counts as done by its status."""
    if not isinstance(value, dict):
        return None
    raw_steps = value.get("steps")
    steps: list[dict[str, str]] = []
    for index, step in enumerate(raw_steps if isinstance(raw_steps, list) else [], start=1):
        step = step if isinstance(step, dict) else {"title": step}
        steps.append(
            {
                "id": _text(step.get("id")) or str(index),
                "title": _text(step.get("title")) or "",
                "status": _text(step.get("status")) or "pending",
            }
        )
    done = sum(1 for s in steps if s["status"].lower() in DONE_STATUSES)
    return {"source": _text(value.get("source")), "steps": steps, "done": done, "total": len(steps)}


def last_result(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    out = {key: value.get(key) for key in LAST_RESULT_KEYS}
    for key in ("command", "status", "output_tail", "started_at", "finished_at"):
        out[key] = _text(out[key])
    return out


def tail_events(path: Path, limit: int) -> list[dict[str, Any]]:
    """The last `limit` whole events of the audit log, newest first; bad lines are skipped."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_BYTES))
            data = fh.read()
    except OSError:
        return []
    lines = data.split(b"\n")
    if size > TAIL_BYTES:
        lines = lines[1:]  # the first line is probably cut
    events: list[dict[str, Any]] = []
    for line in reversed(lines):
        if len(events) >= limit:
            break
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _session(
    row: dict[str, Any], queued: list[dict[str, Any]], running: list[dict[str, Any]], results: dict[str, int]
) -> dict[str, Any]:
    meta = row["metadata"]
    return {
        "name": row["name"],
        "target": row["target"],
        "updated_at": row["updated_at"],
        "queue_depth": len(queued),
        "queued": [{"id": q["id"], "command": q["command"]} for q in queued[:QUEUED_SHOWN]],
        "running": {k: running[0][k] for k in ("id", "command", "started_at")} if running else None,
        "results": results,
        "last_command_result": last_result(meta.get("last_command_result")),
        "failure_streak": _int(meta.get("failure_streak")),
        "stall_count": _int(meta.get("stall_count")),
        "blocked": bool(meta.get("blocked")),
        "cooldown_until": _text(meta.get("cooldown_until")),
        "heartbeat": _text(meta.get("orchestrator_heartbeat")),
        "blockers": _texts(meta.get("blockers")),
        "requirements_doc": _text(meta.get("requirements_doc")),
        "next_actions": next_actions(meta.get("next_actions")),
        "task_decomposition": decomposition(meta.get("task_decomposition")),
    }


def build_state(
    snapshot: StateSnapshot, audit_log: Path, event_limit: int = 40, clock: Clock | None = None
) -> dict[str, Any]:
    """Everything the page shows. A DB that cannot be read yields an `error` and no sessions."""
    clock = clock or SystemClock()
    state: dict[str, Any] = {
        "generated_at": iso_utc(clock.now()),
        "db": str(snapshot.path),
        "audit_log": str(audit_log),
        "error": None,
        "sessions": [],
        "notifications": {},
    }
    try:
        rows = snapshot.sessions()
        queued = snapshot.commands_in("queued")
        running = snapshot.commands_in("running")
        counts = snapshot.status_counts()
        state["notifications"] = snapshot.notifications()
    except SnapshotError as exc:
        state["error"] = str(exc)
        rows, queued, running, counts = [], {}, {}, {}
    sessions = [
        _session(r, queued.get(r["name"], []), running.get(r["name"], []), counts.get(r["name"], {})) for r in rows
    ]
    state["sessions"] = sessions
    results: Counter[str] = Counter()
    for s in sessions:
        results.update({k: v for k, v in s["results"].items() if k in TERMINAL_STATUSES})
    state["totals"] = {
        "sessions": len(sessions),
        "blocked": sum(s["blocked"] for s in sessions),
        "queued": sum(s["queue_depth"] for s in sessions),
        "results": dict(results),
        **rates(results),
    }
    state["events"] = tail_events(audit_log, event_limit)
    return state
