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

# What names a secret: `OPENAI_API_KEY`, `db_password`, `client-secret`, `GITHUB_TOKEN`… — a
# keyword at the end of the name or followed by `_`/`-`/`.` (so `MAX_TOKENS` is not one). A
# pattern that captures a `name` masks only when the name is one of these.
_SECRET_NAME = re.compile(
    r"(?i).*?"
    r"(?:api[_-]?key|apikey|secret|token|password|passwd|passphrase|credentials?|private[_-]?key|access[_-]?key)"
    r"(?:[_.\-].*)?"
)
_NOT_A_SECRET = re.compile(r"(?i).*[_.\-](?:file|path|dir|url|env|name|type|count|len|length|ttl)")  # TOKEN_FILE=…
_NAME = r"[A-Za-z][A-Za-z0-9_.\-]{0,79}"  # bounded, so a long run of word characters stays linear
_VALUE = r"(?:\"[^\"\n]*\"|'[^'\n]*'|[^\s\"'&;|]+)"

# Each pattern masks what is between its optional `pre` and `post` groups.
_PATTERNS = [
    # JSON or a Python repr: "api_key": "…", 'client_secret': '…' (the quotes and the shape stay)
    re.compile(
        rf"(?P<pre>(?P<q>[\"'])(?P<name>{_NAME})(?P=q)[ \t]*:[ \t]*(?P=q))(?:\\.|(?!(?P=q))[^\\\n])*(?P<post>(?P=q))"
    ),
    # an HTTP header, in a curl command or a verbose log: Authorization: Bearer …, Basic …, token …
    re.compile(r"(?i)(?P<pre>\bauthorization[ \t]*[:=][ \t]*(?:(?:bearer|basic|token|bot|digest)[ \t]+)?)[^\s\"']+"),
    re.compile(r"(?i)(?P<pre>(?:[?&]|\b)(?:key|access_token|corpsecret|secret|token|api_key)=)[^&\s\"']+"),
    # NAME=value / name: value (an `export`, an env file, a log line, a --flag=value)
    re.compile(rf"(?P<pre>(?<![A-Za-z0-9_.])(?P<name>{_NAME})[ \t]*[=:][ \t]*){_VALUE}"),
    # --password value, --api-key value
    re.compile(rf"(?P<pre>(?<![^\s\"'])--?(?P<name>[A-Za-z0-9][A-Za-z0-9_\-]{{0,79}})[ \t]+)(?!-){_VALUE}"),
    # user:password@ in a URL
    re.compile(r"(?i)(?P<pre>\b[a-z][a-z0-9+.\-]{0,30}://[^/\s:@\"']{1,200}:)[^@\s/\"']{1,200}(?P<post>@)"),
    re.compile(r"(?i)(?P<pre>\bbearer\s+)[A-Za-z0-9._~+/=\-]{6,}"),
    # tokens with a known prefix, wherever they stand
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_\-]{20,})"),
    re.compile(r"\b(?:xox[abposr]-[A-Za-z0-9\-]{10,}|AKIA[0-9A-Z]{16}\b)"),
    re.compile(r"(?i)(?P<pre>(?:OPENAI_API_KEY|WECOM_APP_SECRET|WECOM_WEBHOOK)\s*[=:]\s*)\S+"),
]


def _mask(match: re.Match[str]) -> str:
    groups = match.groupdict()
    name = groups.get("name")
    if name is not None and (not _SECRET_NAME.fullmatch(name) or _NOT_A_SECRET.fullmatch(name)):
        return match.group(0)
    return (groups.get("pre") or "") + MASK + (groups.get("post") or "")


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
        text = pattern.sub(_mask, text)
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
