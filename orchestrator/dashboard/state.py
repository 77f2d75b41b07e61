"""What the dashboard shows, as one JSON-ready dict built from the state DB (read
only) and the tail of the audit log.

Metadata written by other producers (`next_actions`, `task_decomposition`,
`blockers`) is normalised here to fixed shapes with string values, so the page
only ever renders known fields, as text.

A session's `kind` and `provider` come from the config the dashboard was given
(`DashboardApp.sessions`), else from metadata `kind` / `provider` when a producer
wrote them, else `kind` is inferred from the last result (an agent's turn has a
`reply` and `tools`, a shell command's has neither); what cannot be known stays null.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from orchestrator.clock import Clock, SystemClock, iso_utc
from orchestrator.config import SessionConfig
from orchestrator.model import TERMINAL_STATUSES
from orchestrator.notify.dead import DEAD_SQL, dead_summary
from orchestrator.redact import redact_obj
from orchestrator.state.replay import rates
from orchestrator.state.snapshot import Snapshot, SnapshotError

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
KINDS = ("shell", "agent")
PROVIDERS = ("claude", "codex", "generic")
ASKING_STATES = ("waiting_input", "waiting_approval")


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
        return {
            "title": _text(item) or "",
            "detail": None,
            "command": None,
            "priority": None,
            "risk": None,
            "kind": None,
        }
    return {key: _text(item.get(key)) for key in ("title", "detail", "command", "priority", "risk", "kind")}


def next_actions(value: Any) -> dict[str, Any] | None:
    """`{generated_at, source, blockers, recommendations: [{title, detail, command?, priority, risk, kind}]}`
    (`kind`: `prompt` for an agent session's suggested next prompt, `command` for a shell's)."""
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


def tools(value: Any) -> list[dict[str, str | None]] | None:
    """An agent turn's tool calls as `[{name, command}]` (`command` for shell tools); None when the
    result holds no tool list (a shell command's result)."""
    if not isinstance(value, list):
        return None
    out: list[dict[str, str | None]] = []
    for item in value:
        item = item if isinstance(item, dict) else {"name": item}
        out.append({"name": _text(item.get("name")) or "?", "command": _text(item.get("command"))})
    return out


def last_result(value: Any) -> dict[str, Any] | None:
    """The shell keys always; `reply` (text or null) and `tools` (list or null) for an agent's turn."""
    if not isinstance(value, dict):
        return None
    out = {key: value.get(key) for key in LAST_RESULT_KEYS}
    for key in ("command", "status", "output_tail", "started_at", "finished_at"):
        out[key] = _text(out[key])
    out["reply"] = _text(value.get("reply"))
    out["tools"] = tools(value.get("tools"))
    return out


def _choice(value: Any, allowed: tuple[str, ...]) -> str | None:
    return value if isinstance(value, str) and value in allowed else None


def _kind(
    config: SessionConfig | None, meta: dict[str, Any], last: dict[str, Any] | None
) -> tuple[str | None, str | None]:
    """(kind, provider): the config's, else the metadata's, else inferred from the last result."""
    if config is not None:
        return config.kind, config.provider
    kind = _choice(meta.get("kind"), KINDS)
    provider = _choice(meta.get("provider"), PROVIDERS)
    if kind is None and provider is not None:
        kind = "agent"
    if kind is None and last is not None:  # an agent's turn always has a reply and a tool list
        kind = "agent" if last["reply"] is not None or last["tools"] is not None else "shell"
    return kind, provider if kind == "agent" else None


def question(meta: dict[str, Any], row: dict[str, Any] | None) -> str | None:
    """Metadata `running.question` of the running command, while the session waits for an answer."""
    live = meta.get("running")
    if row is None or meta.get("state") not in ASKING_STATES or not isinstance(live, dict):
        return None
    if live.get("command_id") not in (None, row["id"]):
        return None
    return _text(live.get("question")) or None


def pending_approval(meta: dict[str, Any]) -> dict[str, str] | None:
    """The agent's tool request waiting for a person (metadata `pending_approval`), while the
    session is `waiting_approval`: {tool, command, verdict, reason}."""
    pending = meta.get("pending_approval")
    if meta.get("state") != "waiting_approval" or not isinstance(pending, dict):
        return None
    return {k: _text(pending.get(k)) or "" for k in ("tool", "command", "verdict", "reason")}


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
    row: dict[str, Any],
    queued: list[dict[str, Any]],
    running: list[dict[str, Any]],
    results: dict[str, int],
    config: SessionConfig | None,
    down_hosts: Collection[str] = (),
) -> dict[str, Any]:
    meta = row["metadata"]
    host = _text(row.get("host"))
    state, state_detail = _text(meta.get("state")), _text(meta.get("state_detail"))
    if host in down_hosts:  # its engine is gone: what it last reported is history (as `status` says)
        state, state_detail = "host_down", f"host {host} has stopped its heartbeat (last state reported: {state})"
    last = last_result(meta.get("last_command_result"))
    kind, provider = _kind(config, meta, last)
    row_running = running[0] if running else None
    return {
        "name": row["name"],
        "target": row["target"],
        "host": host,
        "kind": kind,
        "provider": provider,
        "state": state,
        "state_detail": state_detail,
        "updated_at": row["updated_at"],
        "queue_depth": len(queued),
        "queued": [{"id": q["id"], "command": q["command"]} for q in queued[:QUEUED_SHOWN]],
        # no elapsed time here: it would change every refresh and wake every live stream; the page
        # counts it from started_at, as it does the heartbeat's age
        "running": {k: row_running[k] for k in ("id", "command", "started_at")} if row_running else None,
        "question": question(meta, row_running),
        "approval": pending_approval(meta),
        "results": results,
        "last_command_result": last,
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
    snapshot: Snapshot,
    audit_log: Path,
    event_limit: int = 40,
    clock: Clock | None = None,
    configs: Mapping[str, SessionConfig] | None = None,
) -> dict[str, Any]:
    """Everything the page shows. A DB that cannot be read yields an `error` and no sessions.
    `configs` (session name → its config) says each session's kind and provider."""
    clock = clock or SystemClock()
    configs = configs or {}
    state: dict[str, Any] = {
        "generated_at": iso_utc(clock.now()),
        "db": snapshot.where,
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
        down = snapshot.down_hosts()
        state["notifications"] = {**snapshot.notifications(), "dead": dead_summary(snapshot.rows(DEAD_SQL))}
    except SnapshotError as exc:
        state["error"] = str(exc)
        rows, queued, running, counts, down = [], {}, {}, {}, set()
    sessions = [  # every text is masked: commands are stored exact (they are what gets typed)
        redact_obj(
            _session(
                r,
                queued.get(r["name"], []),
                running.get(r["name"], []),
                counts.get(r["name"], {}),
                configs.get(r["name"]),
                down,
            )
        )
        for r in rows
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
    state["events"] = redact_obj(tail_events(audit_log, event_limit))
    return state
