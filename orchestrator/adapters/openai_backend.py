"""The `openai` AI backend: Chat Completions with structured output, through the `openai` SDK.

The SDK's HTTP client is built by `proxies.httpx_client` from the *merged* environment (env file
over process), because the SDK on its own reads proxies from the process environment only and
the playbook keeps them in `~/.env`. Retries are off (`max_retries=0`): a decision call that
fails falls back to the rules at once, and the next blocker change asks again.

Every way the call can fail is one `AIError` kind (`classify_openai`): a status (401/403 auth,
429 rate_limited, 5xx server_error, other api_error), no connection (network), no answer in time
(timeout), a 200 whose body is not a completion (bad_reply: an HTML page from a captive portal
or a wrong base URL), a proxy the client cannot use (proxy_unusable), a module that is not
installed (missing_dependency).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from orchestrator.adapters.ai_base import AIError, AIRequest, EnvFn, classify_exception, kind_for_status, wire_schema
from orchestrator.adapters.proxies import ProxySupportError, httpx_client

if TYPE_CHECKING:
    import openai

OFFICIAL_BASE_URL = "https://api.openai.com/v1"
SYSTEM_PROMPT = "Answer with one JSON object that matches the schema."


def classify_openai(exc: BaseException, timeout: float) -> AIError:
    """The AIError for an exception of an OpenAI call (the SDK's, the proxy check's, or any other)."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return AIError("timeout", f"no answer within {timeout:g}s")
    if isinstance(exc, openai.APIStatusError):
        return AIError(kind_for_status(exc.status_code), f"HTTP {exc.status_code}: {exc.message}")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        return AIError("network", f"{exc.message} ({type(cause).__name__}: {cause})" if cause else exc.message)
    if isinstance(exc, openai.APIResponseValidationError):
        return AIError("bad_reply", f"HTTP {exc.status_code}: {exc.message}")
    if isinstance(exc, json.JSONDecodeError):  # the SDK parses a body labelled JSON without catching this
        return AIError("bad_reply", f"the answer is not JSON ({exc.msg} at char {exc.pos})")
    if isinstance(exc, ProxySupportError):
        return AIError("proxy_unusable", str(exc))
    if isinstance(exc, openai.APIError):
        return AIError("api_error", f"{type(exc).__name__}: {exc.message}")
    return classify_exception(exc)


def completion_text(response: object) -> str:
    """The message text of a Chat Completions response; bad_reply when it is not one.

    The SDK hands back whatever the server sent when it is not JSON (a 200 `text/html` page is a
    `str`), so the shape is checked here rather than trusted."""
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list):
        shown = " ".join(str(response).split())[:80]
        raise AIError("bad_reply", f"the answer is not a chat completion ({type(response).__name__}: {shown!r})")
    message = getattr(choices[0], "message", None) if choices else None
    refusal = getattr(message, "refusal", None)
    if refusal:
        raise AIError("api_error", f"refused: {refusal}")
    content = getattr(message, "content", None)
    return content if isinstance(content, str) else ""


@dataclass
class OpenAIBackend:
    model: str
    base_url: str | None
    env: EnvFn
    name: Literal["openai"] = "openai"
    _clients: set[Any] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def complete(self, request: AIRequest, timeout: float) -> str:
        env = self.env()
        key = env.get("OPENAI_API_KEY")
        if not key:
            raise AIError("missing_api_key", "OPENAI_API_KEY is not set (process environment or env file)")
        base_url = self.base_url or env.get("OPENAI_BASE_URL") or OFFICIAL_BASE_URL
        try:
            response = self._create(request, key, base_url, env, timeout)
        except Exception as exc:  # every failure is named: the caller falls back within the job
            raise classify_openai(exc, timeout) from None
        return completion_text(response)

    def _create(self, request: AIRequest, key: str, base_url: str, env: Mapping[str, str], timeout: float) -> object:
        import openai

        client = openai.OpenAI(
            api_key=key,
            base_url=base_url,
            timeout=timeout,
            max_retries=0,
            http_client=httpx_client(base_url, env, timeout),  # the merged environment's proxy
        )
        with self._lock:
            self._clients.add(client)
        try:
            return client.chat.completions.create(
                model=self.model,
                messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": request.prompt}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": request.schema_name, "schema": wire_schema(request.schema), "strict": True},
                },
            )
        finally:
            with self._lock:
                self._clients.discard(client)
            client.close()

    def close(self) -> None:
        """Close the connections of calls in flight, so shutting down never waits for their timeout."""
        with self._lock:
            clients: list[openai.OpenAI] = list(self._clients)
        for client in clients:
            client.close()
