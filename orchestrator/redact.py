"""Secrets never leave the process: every text bound for a log, the audit file or a
report passes through `redact` first.

Two nets: known secret values (registered from the environment as they are
read) and patterns for secret-shaped strings (webhook keys, tokens, API keys).
"""

from __future__ import annotations

import re
import threading
from typing import Any, overload

MASK = "***"
MIN_SECRET_LENGTH = 4

_PATTERNS = [
    re.compile(r"(?i)((?:[?&]|\b)(?:key|access_token|corpsecret|secret|token|api_key)=)[^&\s\"']+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{6,}"),
    re.compile(r"(?i)((?:OPENAI_API_KEY|WECOM_APP_SECRET|WECOM_WEBHOOK)\s*[=:]\s*)\S+"),
]

SECRET_ENV_VARS = ("OPENAI_API_KEY", "WECOM_WEBHOOK", "WECOM_APP_SECRET")

_lock = threading.Lock()
_known: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so it is masked wherever it shows up verbatim."""
    if not value or len(value) < MIN_SECRET_LENGTH:
        return  # masking a 1–3 character "secret" would shred ordinary text
    match = re.search(r"[?&]key=([^&\s]+)", value)
    with _lock:
        _known.add(value)
        if match and len(match.group(1)) >= MIN_SECRET_LENGTH:
            _known.add(match.group(1))


def register_from_env(env: dict[str, str]) -> None:
    for name in SECRET_ENV_VARS:
        register_secret(env.get(name))


def redact(text: str) -> str:
    if not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return text


@overload
def redact_obj(value: str) -> str: ...
@overload
def redact_obj(value: dict[str, Any]) -> dict[str, Any]: ...
@overload
def redact_obj(value: list[Any]) -> list[Any]: ...
@overload
def redact_obj(value: object) -> object: ...


def redact_obj(value: object) -> object:
    """Redact every string inside a JSON-like structure; the shape (dict, list, str) is kept."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_obj(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_obj(v) for v in value]
    return value
