"""The AI client: one question in, one schema-valid JSON object out — or a named error.

Two backends answer the same `AIRequest`:

* `codex` (`adapters/codex_backend.py`) runs `[codex] bin exec --json …` non-interactively with
  the prompt on stdin and its own safe flags (read-only sandbox, no approvals, `--ephemeral`),
  reads the event stream as it comes and ends the call at the first `error`/`turn.failed` event.
* `openai` (`adapters/openai_backend.py`) calls Chat Completions with structured output through
  an HTTP client built with the merged environment's proxy.

Every failure is an `AIError` with one of `ERROR_KINDS`; `AIClient.ask` turns anything else a
backend raises into one too (`classify_exception`), counts it and returns no data, so callers
fall back to the rules or the Markdown parser within the same job.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

from orchestrator.adapters.ai_base import AIBackend as AIBackend
from orchestrator.adapters.ai_base import AIError as AIError
from orchestrator.adapters.ai_base import AIRequest as AIRequest
from orchestrator.adapters.ai_base import EnvFn as EnvFn
from orchestrator.adapters.ai_base import classify_exception as classify_exception
from orchestrator.adapters.ai_base import wire_schema as wire_schema
from orchestrator.adapters.codex_backend import CodexBackend as CodexBackend
from orchestrator.adapters.codex_backend import final_message_from_events as final_message_from_events
from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.adapters.openai_backend import OpenAIBackend as OpenAIBackend
from orchestrator.config import CodexConfig, OrchestratorSettings
from orchestrator.payloads import ERROR_KINDS as ERROR_KINDS  # re-exported: the kinds every AIError has
from orchestrator.payloads import AIBackendName

log = logging.getLogger("orchestrator.ai")

FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)\n?```", re.S)


def resolve_timeout(codex: CodexConfig, env: Mapping[str, str]) -> float:
    """`CODEX_TIMEOUT_SECONDS` (process env or env file) wins over `[codex] timeout_seconds`."""
    raw = env.get("CODEX_TIMEOUT_SECONDS")
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        value = 0.0
    return value if value > 0 else codex.timeout_seconds


def extract_json(text: str) -> Any:
    """The JSON object in a reply: bare, in a ```json fence, or the outermost {...} in prose."""
    text = (text or "").strip()
    if not text:
        raise AIError("empty_output", "the reply was empty")
    candidates = [text, *FENCE.findall(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    preview = " ".join(text.split())[:80]
    raise AIError("not_json", f"no JSON object in the reply ({len(text)} chars: {preview!r})")


def validate_reply(data: Any, request: AIRequest) -> Any:
    validator = jsonschema.Draft202012Validator(request.schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise AIError("schema_mismatch", f"{where}: {error.message[:200]}")
    if request.check is not None:
        try:
            request.check(data)
        except ValueError as exc:
            raise AIError("schema_mismatch", str(exc)) from None
    return data


def make_backend(settings: OrchestratorSettings, env: EnvFn) -> AIBackend | None:
    """The configured backend, or None when `[ai] backend = "off"` (rules only)."""
    if settings.ai.backend == "codex":
        return CodexBackend(settings.codex, env)
    if settings.ai.backend == "openai":
        return OpenAIBackend(settings.ai.openai_model, settings.ai.openai_base_url or None, env)
    return None


def ask_backend(backend: AIBackend, request: AIRequest, timeout: float) -> Any:
    """One validated answer, or AIError."""
    return validate_reply(extract_json(backend.complete(request, timeout)), request)


@dataclass
class Answer:
    data: Any | None
    backend: AIBackendName | None
    error: AIError | None
    latency_s: float


class AIClient:
    """The backend plus what every call needs: the timeout, metrics, and logging each error kind
    once (until a call succeeds again) rather than on every failure."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        env: EnvFn,
        metrics: OrchestratorMetrics,
        backend: AIBackend | None = None,
    ) -> None:
        self.settings = settings
        self.env = env
        self.metrics = metrics
        self.backend = backend if backend is not None else make_backend(settings, env)
        self._logged: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    def timeout(self) -> float:
        return resolve_timeout(self.settings.codex, self.env())

    def ask(self, session: str, request: AIRequest) -> Answer:
        if self.backend is None:
            return Answer(None, None, None, 0.0)
        name = self.backend.name
        self.metrics.ai_calls.labels(session=session, backend=name, task=request.task).inc()
        started = time.monotonic()
        try:
            data = ask_backend(self.backend, request, self.timeout())
        except Exception as raised:  # every failure is named and counted, never a dead job
            exc = classify_exception(raised)
            latency = time.monotonic() - started
            self.metrics.ai_errors.labels(session=session, backend=name, kind=exc.kind).inc()
            self.metrics.ai_latency.labels(session=session, backend=name).observe(latency)
            level = logging.DEBUG if exc.kind in self._logged else logging.WARNING
            self._logged.add(exc.kind)
            trace = raised if exc.kind == "unexpected" else None  # a bug: show where
            log.log(level, "%s %s for %s failed (%s); falling back", name, request.task, session, exc, exc_info=trace)
            return Answer(None, name, exc, latency)
        latency = time.monotonic() - started
        self.metrics.ai_latency.labels(session=session, backend=name).observe(latency)
        if self._logged:
            log.info("%s answers again", name)
            self._logged.clear()
        return Answer(data, name, None, latency)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
