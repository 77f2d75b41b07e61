"""The shipped JSON Schemas and how a document is checked against them: a quick exact check of
the keywords the schemas use, with jsonschema (about 100 ms to import) loaded only to explain a
document that does not fit, as one `ConfigError` naming the file, the key and the fix.

Used by the config loader, the metadata cleaner, the audit log's line check and decision
assist's reply checks.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ConfigError

if TYPE_CHECKING:  # jsonschema costs ~100 ms to import: SchemaValidator loads it only for a misfit
    import jsonschema


def load_schema(name: str) -> dict[str, Any]:
    shipped = Path(__file__).with_name("schemas") / name  # an installed package: skip importlib.resources' imports
    if shipped.is_file():
        text = shipped.read_text(encoding="utf-8")
    else:
        from importlib import resources

        text = resources.files("orchestrator").joinpath("schemas", name).read_text(encoding="utf-8")
    schema = json.loads(text)
    if not isinstance(schema, dict):
        raise TypeError(f"schema {name} is not a JSON object")
    return schema


class _Unsure(Exception):
    """A keyword (or a value) the quick check does not decide: jsonschema does."""


_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples"})
_JSON_TYPES: dict[str, Callable[[object], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}

_BOUNDS = {
    "minimum": operator.ge,
    "maximum": operator.le,
    "exclusiveMinimum": operator.gt,
    "exclusiveMaximum": operator.lt,
}


def _same(a: object, b: object) -> bool:
    if isinstance(a, (str, bool)) or a is None:
        return type(a) is type(b) and a == b
    raise _Unsure  # numbers, lists, objects: jsonschema's own equality decides


def _conforms(value: object, schema: object, root: Mapping[str, Any]) -> bool:
    """Draft 2020-12 for the keywords the shipped schemas use; exact, or _Unsure."""
    if isinstance(schema, bool):
        return schema
    if not isinstance(schema, dict):
        raise _Unsure
    for key, want in schema.items():
        if key in _ANNOTATIONS or key in ("then", "else"):
            ok = True
        elif key == "type":
            ok = any(_JSON_TYPES[t](value) for t in ([want] if isinstance(want, str) else want))
        elif key in ("enum", "const"):
            ok = any(_same(v, value) for v in (want if key == "enum" else [want]))
        elif key in _BOUNDS:
            ok = not isinstance(value, (int, float)) or isinstance(value, bool) or bool(_BOUNDS[key](value, want))
        elif key == "minLength":
            ok = not isinstance(value, str) or len(value) >= want
        elif key == "pattern":
            ok = not isinstance(value, str) or re.search(want, value) is not None
        elif key == "required":
            ok = not isinstance(value, dict) or all(k in value for k in want)
        elif key == "properties":
            ok = not isinstance(value, dict) or all(_conforms(value[k], s, root) for k, s in want.items() if k in value)
        elif key == "patternProperties":
            ok = not isinstance(value, dict) or all(
                _conforms(v, s, root) for p, s in want.items() for k, v in value.items() if re.search(p, k)
            )
        elif key == "additionalProperties":
            known, patterns = schema.get("properties", {}), schema.get("patternProperties", {})
            ok = not isinstance(value, dict) or all(
                _conforms(v, want, root)
                for k, v in value.items()
                if k not in known and not any(re.search(p, k) for p in patterns)
            )
        elif key == "items":
            ok = not isinstance(value, list) or all(_conforms(v, want, root) for v in value)
        elif key in ("anyOf", "allOf"):
            ok = (any if key == "anyOf" else all)(_conforms(value, s, root) for s in want)
        elif key == "if":
            branch = schema.get("then" if _conforms(value, want, root) else "else", True)
            ok = _conforms(value, branch, root)
        elif key == "$ref" and isinstance(want, str) and want.startswith("#/$defs/"):
            ok = _conforms(value, root["$defs"][want.rsplit("/", 1)[-1]], root)
        else:
            raise _Unsure
        if not ok:
            return False
    return True


class SchemaValidator:
    """A Draft 2020-12 validator that imports jsonschema (~100 ms, most of a quick CLI call) only
    when a document may not fit: the common case, a fitting document, is decided by `_conforms`;
    a misfit, or any keyword `_conforms` does not know, goes to jsonschema, so errors read the same."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._full: jsonschema.Draft202012Validator | None = None

    @property
    def full(self) -> jsonschema.Draft202012Validator:
        if self._full is None:
            import jsonschema

            self._full = jsonschema.Draft202012Validator(self.schema)
        return self._full

    def surely_fits(self, value: object) -> bool:
        try:
            return _conforms(value, self.schema, self.schema)
        except (_Unsure, KeyError, TypeError, re.error):
            return False

    def is_valid(self, value: object) -> bool:
        return self.surely_fits(value) or self.full.is_valid(value)

    def iter_errors(self, value: object) -> Iterator[jsonschema.ValidationError]:
        return iter(()) if self.surely_fits(value) else self.full.iter_errors(value)

    def validate(self, value: object) -> None:
        """Raise jsonschema.ValidationError when `value` does not fit."""
        if not self.surely_fits(value):
            self.full.validate(value)


def key_path(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _explain(error: jsonschema.ValidationError, file: Path) -> ConfigError:
    """Turn one schema violation into a sentence with the key and the fix."""
    where = key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        # YAML keys need not be strings (`1: x`): name them as text instead of failing on join/sort
        extra = sorted({str(k) for k in error.instance} - set(allowed))
        key = ".".join(p for p in [where, extra[0] if extra else ""] if p)
        return ConfigError("unknown key", file=str(file), key=key, fix=f"remove it or use one of: {', '.join(allowed)}")
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        key = ".".join(p for p in [where, missing] if p)
        return ConfigError("missing required key", file=str(file), key=key, fix="add it")
    if error.validator == "type":
        wanted = error.validator_value
        got = type(error.instance).__name__
        return ConfigError(
            f"expected {wanted}, got {got} ({error.instance!r})",
            file=str(file),
            key=where or "(top level)",
            fix=f"write a {wanted}",
        )
    return ConfigError(
        error.message, file=str(file), key=where or "(top level)", fix="see the schema in orchestrator/schemas"
    )


def validate(document: object, schema_name: str, file: Path) -> None:
    validator = SchemaValidator(load_schema(schema_name))
    errors = sorted(
        validator.iter_errors(document), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path)))
    )
    if errors:
        raise _explain(errors[0], file)
