"""The append-only audit log `orchestrator-actions.jsonl`.

Each event is validated against the shipped JSON Schema, redacted, and written
as one line with a single `write` so concurrent appenders never interleave. If
the disk refuses (full, read-only), events are kept in memory and written
before the next one, so nothing accepted is lost while the process lives.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from orchestrator.clock import Clock, SystemClock, iso_utc
from orchestrator.config import load_schema
from orchestrator.redact import redact_obj

AUDIT_SCHEMA_NAME = "audit_event.schema.json"


def audit_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema(AUDIT_SCHEMA_NAME))


class AuditLog:
    def __init__(
        self, path: Path, clock: Clock | None = None, on_write_error: Callable[[OSError], None] | None = None
    ) -> None:
        self.path = Path(path)
        self.clock = clock or SystemClock()
        self.on_write_error = on_write_error
        self._validator = audit_validator()
        self._pending: list[bytes] = []
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, event: str, session: str | None = None, **fields: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"ts": iso_utc(self.clock.now()), "event": event, "session": session}
        entry.update({k: v for k, v in fields.items() if v is not None or k == "exit_code"})
        entry = redact_obj(entry)
        self._validator.validate(entry)
        line = (json.dumps(entry, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")
        with self._lock:
            self._pending.append(line)
            self._flush_locked()
        return entry

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> bool:
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> bool:
        if not self._pending:
            return True
        data = b"".join(self._pending)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                written = os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            if self.on_write_error:
                self.on_write_error(exc)
            return False
        if written != len(data):  # a short write leaves a partial line; finish it next time
            # keep the rest as bytes: a write may stop inside a multi-byte UTF-8 character
            self._pending = [data[written:]]
            return False
        self._pending.clear()
        return True


@dataclass
class AuditReadResult:
    events: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_events(path: Path, validate: bool = False) -> AuditReadResult:
    """Read every whole event; a truncated or malformed line is reported by number and skipped."""
    result = AuditReadResult()
    validator = audit_validator() if validate else None
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        result.problems.append(f"{path}: file not found")
        return result
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line.decode("utf-8"))
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as exc:
            last = number == len(lines) or (number == len(lines) - 1 and not lines[-1])
            kind = "truncated last line" if last and not raw.endswith(b"\n") else "malformed line"
            result.problems.append(f"{path}:{number}: {kind} skipped ({exc.__class__.__name__})")
            continue
        if validator is not None:
            errors = list(validator.iter_errors(event))
            if errors:
                result.problems.append(f"{path}:{number}: schema: {errors[0].message}")
                continue
        result.events.append(event)
    return result
