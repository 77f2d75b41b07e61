"""What every AI backend shares: the request, the one error type, and the rules that name a failure.

A leaf of the AI adapters (`ai_client` and both backends import it, it imports neither), so the
backends can live in their own modules without an import cycle.

Why the classification is strict: a decision or decomposition call must never end in an
exception nobody expected. Whatever a backend raises becomes an `AIError` with one of
`ERROR_KINDS`, so the caller counts it and falls back to the rules (or the Markdown parser)
within the same job instead of the job dying and retrying every 30 s with no metric.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from orchestrator.payloads import ERROR_KINDS, AIBackendName, AIErrorKind, AITask
from orchestrator.redact import redact

EnvFn = Callable[[], Mapping[str, str]]
DETAIL_CHARS = 300


class AIError(Exception):
    """A named failure of one AI call; `kind` is one of ERROR_KINDS, `detail` is redacted."""

    def __init__(self, kind: AIErrorKind, detail: str) -> None:
        assert kind in ERROR_KINDS, kind
        self.kind: AIErrorKind = kind
        self.detail = redact(" ".join(str(detail).split()))[:DETAIL_CHARS]  # redacted whole, then cut
        super().__init__(f"{kind}: {self.detail}")


@dataclass(frozen=True)
class AIRequest:
    task: AITask  # a metric label, and which call type's codex flags apply
    prompt: str
    schema: dict[str, Any]
    schema_name: str  # a short identifier the OpenAI API wants for the schema
    cwd: Path | None = None
    check: Callable[[Any], None] | None = None  # extra semantic checks; raise ValueError to reject


class AIBackend(Protocol):
    @property
    def name(self) -> AIBackendName: ...

    def complete(self, request: AIRequest, timeout: float) -> str:
        """The raw final message text; raises AIError."""

    def close(self) -> None:
        """Stop whatever is still running (a hung codex)."""


def wire_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as sent to a model: without the keys only our validator cares about."""
    return {k: v for k, v in schema.items() if k not in ("$schema", "title", "description")}


def kind_for_status(status: int) -> AIErrorKind:
    """The kind of an HTTP error status, the same for both backends.

    >>> [kind_for_status(s) for s in (401, 403, 429, 500, 503, 400, 404)]
    ['auth', 'auth', 'rate_limited', 'server_error', 'server_error', 'api_error', 'api_error']
    """
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return "api_error"


def classify_exception(exc: BaseException) -> AIError:
    """Any exception as an AIError: itself when it already is one, else by what it is.

    The last resort for what a backend did not name itself (a missing optional module, an OS
    error, a bug): the caller still gets a kind to count and falls back."""
    if isinstance(exc, AIError):
        return exc
    what = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ImportError):  # e.g. socks support or the openai package not installed
        return AIError("missing_dependency", what)
    if isinstance(exc, TimeoutError):
        return AIError("timeout", what)
    if isinstance(exc, ConnectionError):
        return AIError("network", what)
    return AIError("unexpected", what)
