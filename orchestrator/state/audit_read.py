"""Reading the audit log `orchestrator-actions.jsonl` back: every whole event, and each line that
is not one named (file:line: why) and skipped — a line cut short by a crash or a full disk, one
with another event glued onto it (kept), one that is not JSON, not UTF-8 or (with `validate`)
not an event the schema allows. Replay, the dashboard and the tests read through here; writing
is `orchestrator.state.audit`'s."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.state.audit import audit_validator

if TYPE_CHECKING:  # imported by SchemaValidator only when an event may not fit
    import jsonschema


@dataclass
class AuditReadResult:
    events: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_events(path: Path, validate: bool = False) -> AuditReadResult:
    """Read every whole event; each bad line is named in `problems` (file:line: why) and skipped.

    A line cut short with another event glued onto it (a log written before the newline guard)
    keeps the glued event."""
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
        event, why = _parse_line(line, at_end=number == len(lines))
        if event is not None and validator is not None:
            errors = sorted(validator.iter_errors(event), key=lambda e: list(e.absolute_path))
            if errors:
                event, why = None, f"not a valid audit event ({_schema_why(errors[0])}); skipped"
        if why is not None:
            result.problems.append(f"{path}:{number}: {why}")
        if event is not None:
            result.events.append(event)
    return result


CUT_SHORT = "a write that did not finish: a crash or a full disk"


def _parse_line(line: bytes, at_end: bool) -> tuple[dict[str, Any] | None, str | None]:
    """The event on one line (or None) and what was wrong with it (or None)."""
    where = " at the end of the file" if at_end else ""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and line.startswith(b'{"ts"'):
            return None, f"cut short inside a character{where} ({CUT_SHORT}); skipped"
        return None, f"not UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1}); skipped"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        glued = text.find('{"ts"', 1)
        if glued > 0:
            try:
                tail = json.loads(text[glued:])
            except json.JSONDecodeError:
                tail = None
            if isinstance(tail, dict):
                return tail, (
                    f"cut short at column {glued + 1} and another event glued onto it (a write that did not "
                    "finish); the fragment is skipped, the glued event is kept"
                )
        stripped = text.strip()
        if stripped.startswith('{"ts"') and not stripped.endswith("}"):  # how every line we write starts and ends
            return None, f"cut short{where} ({CUT_SHORT}); skipped"
        return None, f"not JSON ({exc.msg} at column {exc.colno}); skipped"
    if not isinstance(value, dict):
        kind = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
        return None, f"not a JSON object ({kind.get(type(value), 'null')}); skipped"
    return value, None


def _schema_why(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path)
    what = f"{error.instance!r} is not an allowed value" if error.validator == "enum" else error.message
    if len(what) > 200:
        what = what[:197] + "..."
    return f"{where}: {what}" if where else what
