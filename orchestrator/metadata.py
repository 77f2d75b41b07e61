"""Session metadata against its shipped schema (`schemas/metadata.schema.json`): which keys
tmuxagent reads, what a value must look like, and a reader's cleaned copy.

Why its own module: the config loader reads files once at start; these checks run on every
metadata read of the loop and of the CLI, with their own caches, and share only the schema
loading and the validator with it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.schema import SchemaValidator, key_path, load_schema

log = logging.getLogger("orchestrator.config")

METADATA_SCHEMA = "metadata.schema.json"
USER_KEY_PREFIX = "x-"  # a metadata key of the user's own: never validated, never read by tmuxagent

_METADATA_EXAMPLES = {
    "requirements_doc": '"docs/plan.md"',
    "blockers": '["missing OPENAI_API_KEY"]',
    "blocked": "false",
    "failure_streak": "0",
    "stall_count": "0",
    "cooldown_until": '"2030-01-31T09:30:00.000000Z"',
    "state": '"idle"',
    "kind": '"shell"',
}


class _MetadataSchema:
    """The shipped metadata schema, one compiled validator per known key (built on first use)."""

    def __init__(self) -> None:
        schema = load_schema(METADATA_SCHEMA)
        self.properties: dict[str, Any] = schema["properties"]
        defs = schema.get("$defs", {})
        self.validators = {key: SchemaValidator({**sub, "$defs": defs}) for key, sub in self.properties.items()}
        self.defs: dict[str, Any] = defs


_schema_lock = threading.Lock()
_schema: _MetadataSchema | None = None
_warned: set[tuple[str, str]] = set()
_fits: set[tuple[str, str]] = set()  # (key, value as JSON) known to fit: the readers run every poll


def _metadata_schema() -> _MetadataSchema:
    global _schema
    with _schema_lock:
        if _schema is None:
            _schema = _MetadataSchema()
        return _schema


def metadata_keys() -> list[str]:
    """The metadata keys tmuxagent reads, as the shipped schema lists them."""
    return sorted(_metadata_schema().properties)


def _expected(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    """A schema in a few words: `an integer ≥ 0 or null`."""
    if "$ref" in schema:
        return _expected(defs[str(schema["$ref"]).rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        return " or ".join(_expected(sub, defs) for sub in schema["anyOf"] if sub.get("type") != "null") + ", or null"
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"] if v is not None) + ", or null"
    types = schema.get("type", "any JSON value")
    if isinstance(types, list) and "null" in types and len(types) > 1:
        return _expected({**schema, "type": [t for t in types if t != "null"]}, defs) + ", or null"
    words = {"integer": "an integer", "object": "an object", "array": "a list", "null": "null"}
    text = " or ".join(words.get(t, f"a {t}") for t in (types if isinstance(types, list) else [types]))
    if "minLength" in schema:
        text = text.replace("a string", "a non-empty string")
    if "minimum" in schema:
        text = text.replace("an integer", f"an integer ≥ {schema['minimum']}")
    if "pattern" in schema and "description" in schema:
        text += f" ({schema['description']})"
    return text


def metadata_problem(key: str, value: object) -> str | None:
    """Why `value` does not fit metadata `key` (None when it does, or the key is not one tmuxagent reads)."""
    schema = _metadata_schema()
    validator = schema.validators.get(key)
    if validator is None:
        return None
    try:
        memo = (key, json.dumps(value, sort_keys=True))
    except (TypeError, ValueError):
        memo = None
    if memo is not None and memo in _fits:
        return None
    if validator.is_valid(value):
        if memo is not None:
            with _schema_lock:
                if len(_fits) > 4096:
                    _fits.clear()
                _fits.add(memo)
        return None
    error = min(validator.iter_errors(value), key=lambda e: len(e.absolute_path))
    where = key_path(error)
    shape = error.validator in ("type", "enum", "anyOf", "pattern", "minimum", "minLength")
    if not where and shape:
        what = "is " + _expected(schema.properties[key], schema.defs)
    elif shape:
        what = f"needs {where} to be {_expected(error.schema, schema.defs)}"
    else:
        what = f"{where or 'value'}: {error.message}"
    shown = json.dumps(value, ensure_ascii=False)
    shown = shown if len(shown) <= 60 else shown[:59] + "…"
    return f"{shown} does not fit: {key} {what}"


def check_metadata(key: str, value: object) -> None:
    """What `tmux-agent meta set` may store: a known key with a value its schema allows, or an `x-` key."""
    if not key.startswith(USER_KEY_PREFIX) and key not in _metadata_schema().properties:
        raise ConfigError(
            "unknown metadata key",
            key=key,
            fix=f"use one of: {', '.join(metadata_keys())}; or name a key of your own {USER_KEY_PREFIX}{key}",
        )
    problem = metadata_problem(key, value)
    if problem is not None:
        example = _METADATA_EXAMPLES.get(key, "null")
        raise ConfigError(problem, key=key, fix=f"pass a fitting JSON value, e.g. {example}, or null to clear it")


def clean_metadata(
    metadata: Mapping[str, Any], session: str, warn: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """`metadata` without the known keys whose stored value does not fit the schema (written around
    `tmux-agent meta set`, or by an older version): a reader treats such a value as absent. Each
    (session, key) is warned about once per process."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        problem = metadata_problem(key, value) if value is not None else None
        if problem is None:
            out[key] = value
            continue
        with _schema_lock:
            first = (session, key) not in _warned
            _warned.add((session, key))
        if first:
            (warn or log.warning)(
                f"session {session}: metadata {problem}; treated as absent — "
                f"fix it with `tmux-agent meta set {session} {key} JSON` (null clears it)"
            )
    return out
