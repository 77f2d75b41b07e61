"""``ModelServer``: the server thread, the script, the recorded requests, and answering each request."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from http.server import ThreadingHTTPServer
from typing import Any, Optional

from ..waiting import WaitTimeout
from .anthropic import ANTHROPIC_ERRORS, anthropic_message, stream_anthropic
from .openai import OPENAI_ERRORS, openai_response, stream_openai
from .replies import Garbage, HangReply, HttpError, Message, ModelReply, ToolCallBlock, text
from .requests import (
    DEFAULT_MODELS,
    PROVIDERS,
    REDACTED,
    SECRET_HEADERS,
    ModelRequest,
    Provider,
    RequestKind,
    ToolResult,
    default_side_reply,
    default_side_request,
)
from .scripting import Predicate, ProviderScript, Rule
from .wire import Abort, Handler, id_headers, input_token_count, new_id


class ModelServer:
    """Anthropic Messages + OpenAI Responses on 127.0.0.1, answering from a script.

    ``ModelServer().start()`` (or ``with ModelServer() as server:``); point Claude Code at
    ``anthropic_base_url`` and codex at ``openai_base_url``; ``script(...)`` replies;
    ``requests()``, ``tool_results()``, ``last_user_text()``, ``wait_for_requests(n)`` to read
    back; ``check_assertions()`` to fail on unconsumed replies or unknown endpoints.
    """

    def __init__(
        self,
        *,
        default: ModelReply = text("ok"),
        side_request: Predicate = default_side_request,
        side_reply: Callable[[ModelRequest], ModelReply] = default_side_reply,
        api_key: Optional[str] = None,
        models: Sequence[str] = DEFAULT_MODELS,
    ) -> None:
        self.default: ModelReply = default
        self.side_request: Predicate = side_request
        self.side_reply: Callable[[ModelRequest], ModelReply] = side_reply
        self.api_key = api_key  # None: any non-empty Bearer token or x-api-key is accepted
        self.models = list(models)
        self.anthropic = ProviderScript(self, "anthropic")
        self.openai = ProviderScript(self, "openai")
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._requests: list[ModelRequest] = []
        self._rules: list[Rule] = []  # predicate rules first, in order
        self._queues: dict[Optional[Provider], deque[ModelReply]] = {
            None: deque(),
            "anthropic": deque(),
            "openai": deque(),
        }
        self._tool_calls: list[tuple[Provider, str, str, dict[str, Any]]] = []
        self._hangs: list[HangReply] = []
        self._streams = 0
        self._stopping = threading.Event()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._port = 0

    # -- lifecycle
    def start(self) -> ModelServer:
        with self._lock:
            if self._server is None:
                self._stopping.clear()
                handler = type("ModelServerHandler", (Handler,), {"model_server": self})
                self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
                self._server.daemon_threads = True
                self._port = self._server.server_port
                self._thread = threading.Thread(
                    target=self._server.serve_forever,
                    kwargs={"poll_interval": 0.02},
                    name=f"model-server-{self._port}",
                    daemon=True,
                )
                self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: hung replies drop their connections, then the port is released.
        Waits (at most ``timeout``) for streams in flight to end."""
        self._stopping.set()
        with self._lock:
            server, self._server = self._server, None
            for reply in self._hangs:
                reply._abort()
        if server is not None:
            server.shutdown()
            server.server_close()
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._streams and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("ModelServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def anthropic_base_url(self) -> str:
        """For ``ANTHROPIC_BASE_URL`` (no ``/v1``: the client appends ``/v1/messages``)."""
        return self.url

    @property
    def openai_base_url(self) -> str:
        """For an OpenAI client's or codex's ``base_url`` (with ``/v1``)."""
        return f"{self.url}/v1"

    # -- scripting
    def script(
        self, *replies: ModelReply, provider: Optional[Provider] = None, when: Optional[Predicate] = None
    ) -> None:
        """Queue replies for turn requests, consumed in order. Lookup per turn: rules with
        ``when`` (in the order given, first match with replies left), then the provider's
        queue, then the shared queue (``provider=None``), then ``default``."""
        if provider is not None and provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
        with self._lock:
            if when is not None:
                self._rules.append(Rule(provider, when, deque(replies)))
            else:
                self._queues[provider].extend(replies)

    def pending(self) -> list[ModelReply]:
        """Scripted replies not consumed yet."""
        with self._lock:
            return [r for rule in self._rules for r in rule.replies] + [
                r for queue in self._queues.values() for r in queue
            ]

    def _next_reply(self, rec: ModelRequest) -> tuple[ModelReply, bool]:
        with self._lock:
            for rule in self._rules:
                if rule.replies and rule.provider in (None, rec.provider) and rule.when and rule.when(rec):
                    return rule.replies.popleft(), True
            for key in (rec.provider, None):
                if self._queues[key]:
                    return self._queues[key].popleft(), True
            return self.default, False

    # -- recording
    def _record(
        self, method: str, path: str, query: dict[str, list[str]], headers: Iterable[tuple[str, str]], body: Any
    ) -> ModelRequest:
        clean: dict[str, str] = {}
        credential = ""
        for name, value in headers:
            if name.lower() == "authorization":
                credential = value.split(" ", 1)[1].strip() if value.lower().startswith("bearer ") else ""
            elif name.lower() == "x-api-key":
                credential = credential or value.strip()
            clean[name] = REDACTED if name.lower() in SECRET_HEADERS else value
        provider: Optional[Provider] = None
        kind: RequestKind = "unknown"
        if method == "POST" and path == "/v1/messages":
            provider, kind = "anthropic", "turn"
        elif method == "POST" and path == "/v1/messages/count_tokens":
            provider, kind = "anthropic", "count_tokens"
        elif method == "POST" and path == "/v1/responses":
            provider, kind = "openai", "turn"
        elif method == "GET" and path == "/v1/models":
            kind = "models"
        rec = ModelRequest(
            method=method,
            path=path,
            query={k: v[0] for k, v in query.items()},
            headers=clean,
            json=body,
            time=time.time(),
            provider=provider,
            kind=kind,
            authorized=bool(credential) and (self.api_key is None or credential == self.api_key),
        )
        if kind == "turn":
            try:
                rec.kind = "side" if self.side_request(rec) else "turn"
            except Exception:
                rec.kind = "turn"
        with self._changed:
            self._requests.append(rec)
            self._changed.notify_all()
        return rec

    def requests(self, kind: Optional[RequestKind] = None, provider: Optional[Provider] = None) -> list[ModelRequest]:
        """A snapshot of the requests received, oldest first; ``kind`` is ``turn``, ``side``,
        ``count_tokens``, ``models`` or ``unknown``."""
        with self._lock:
            return [
                r
                for r in self._requests
                if (kind is None or r.kind == kind) and (provider is None or r.provider == provider)
            ]

    def wait_for_requests(
        self,
        n: int,
        timeout: float = 10.0,
        *,
        kind: Optional[RequestKind] = None,
        provider: Optional[Provider] = None,
    ) -> list[ModelRequest]:
        """Wait (on a condition, no polling) until at least ``n`` such requests arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self.requests(kind, provider)
                remaining = deadline - time.monotonic()
                if len(found) >= n or remaining <= 0:
                    break
                self._changed.wait(remaining)
        if len(found) < n:
            what = f"{n} {kind or 'any'} request(s)" + (f" to {provider}" if provider else "")
            raise WaitTimeout(what, timeout, 1, [f"{r.kind} {r.method} {r.path}" for r in found])
        return found

    def last_user_text(self, provider: Optional[Provider] = None) -> Optional[str]:
        """The latest user-typed text of the latest turn request."""
        turns = self.requests("turn", provider)
        return turns[-1].last_user_text() if turns else None

    def tool_results(self, provider: Optional[Provider] = None) -> list[ToolResult]:
        """Every tool result the agents sent, first occurrence per call id (later requests repeat
        the history), in arrival order."""
        seen: set[tuple[Provider, str]] = set()
        found: list[ToolResult] = []
        for rec in self.requests(None, provider):
            if rec.kind not in ("turn", "side"):
                continue
            for result in rec.tool_results():
                if (result.provider, result.call_id) not in seen:
                    seen.add((result.provider, result.call_id))
                    found.append(result)
        return found

    def tool_calls(self, provider: Optional[Provider] = None) -> list[tuple[str, str, dict[str, Any]]]:
        """Tool calls served so far: ``(call id, name, input)``, in order."""
        with self._lock:
            return [(i, n, dict(a)) for p, i, n, a in self._tool_calls if provider is None or p == provider]

    def summary(self) -> list[str]:
        """One line per recorded request (no headers, no bodies), for evidence and messages."""
        return [f"{r.kind} {r.method} {r.path} -> {r.status} {r.reply or ''}".rstrip() for r in self.requests()]

    def clear(self) -> None:
        """Forget recorded requests and served tool calls (the script stays)."""
        with self._lock:
            self._requests.clear()
            self._tool_calls.clear()

    def check_assertions(self) -> None:
        """Raise AssertionError for scripted replies never consumed, requests to unknown
        endpoints and requests without valid credentials."""
        with self._lock:
            problems = [f"scripted reply never consumed: {r!r}" for r in self.pending()]
            problems += [f"unexpected request {r.method} {r.path}" for r in self._requests if r.kind == "unknown"]
            problems += [
                f"request without valid credentials: {r.method} {r.path}" for r in self._requests if not r.authorized
            ]
        if problems:
            raise AssertionError("ModelServer expectations not met:\n  " + "\n  ".join(problems))

    # -- answering (server threads)
    def _serve(self, h: Handler, rec: ModelRequest) -> None:
        if rec.kind == "unknown":
            return self._error(h, rec, HttpError(404, f"no such endpoint: {rec.method} {rec.path}"))
        if not rec.authorized:
            return self._error(h, rec, HttpError(401))
        if rec.kind == "models":
            rec.status, rec.reply = 200, "models"
            created = int(time.time())
            data = [
                {
                    "id": m,
                    "object": "model",
                    "type": "model",
                    "display_name": m,
                    "created": created,
                    "created_at": "2025-01-01T00:00:00Z",
                    "owned_by": "tmuxagent",
                }
                for m in self.models
            ]
            first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
            return h._send_json(
                200, {"object": "list", "data": data, "has_more": False, "first_id": first, "last_id": last}
            )
        if not isinstance(rec.json, dict):
            return self._error(h, rec, HttpError(400, "request body is not a JSON object"))
        if rec.kind == "count_tokens":
            rec.status, rec.reply = 200, "count_tokens"
            return h._send_json(200, {"input_tokens": input_token_count(rec)})
        if rec.kind == "side":
            reply: ModelReply = self.side_reply(rec)
            label = "side "
        else:
            reply, scripted = self._next_reply(rec)
            label = "" if scripted else "default "
        if isinstance(reply, HttpError):
            return self._error(h, rec, reply, label)
        if isinstance(reply, Garbage):
            rec.status, rec.reply = 200, label + "garbage"
            if rec.stream:
                body = reply.body or b"event: message_start\ndata: {this is not json\n\n\x00\xff garbage"
                return h._send_bytes(200, body, "text/event-stream")
            return h._send_bytes(200, reply.body or b"<html>502 Bad Gateway, but with status 200</html>", "text/html")
        hanging = reply if isinstance(reply, HangReply) else None
        message = reply.message if isinstance(reply, HangReply) else reply
        if hanging is not None:
            with self._lock:
                if hanging not in self._hangs:
                    self._hangs.append(hanging)
                if self._stopping.is_set():
                    hanging._abort()
        rec.reply = label + ("hang" if hanging else "tool_call" if message.stop_reason == "tool_use" else "text")
        calls = self._assign_ids(rec, message)

        def pause() -> None:
            if hanging is not None and not hanging._block(self._stopping):
                raise Abort

        if not rec.stream:
            pause()
            rec.status = 200
            payload = (
                anthropic_message(rec, message, calls)
                if rec.provider == "anthropic"
                else openai_response(rec, message, calls, "completed")
            )
            return h._send_json(200, payload, id_headers(rec))
        with self._changed:
            self._streams += 1
        try:
            rec.status = 200
            h._start_stream(id_headers(rec))
            if rec.provider == "anthropic":
                stream_anthropic(h, rec, message, calls, pause)
            else:
                stream_openai(h, rec, message, calls, pause)
            h._end_stream()
        finally:
            with self._changed:
                self._streams -= 1
                self._changed.notify_all()

    def _assign_ids(self, rec: ModelRequest, message: Message) -> list[str]:
        """One id per tool call block (explicit ones kept), remembered as served."""
        provider: Provider = rec.provider or "anthropic"
        ids: list[str] = []
        with self._lock:
            for block in message.blocks:
                if isinstance(block, ToolCallBlock):
                    call_id = block.id or new_id("toolu_" if provider == "anthropic" else "call_")
                    ids.append(call_id)
                    self._tool_calls.append((provider, call_id, block.name, dict(block.input)))
            rec.tool_call_ids = list(ids)
        return ids

    def _error(self, h: Handler, rec: ModelRequest, err: HttpError, label: str = "") -> None:
        rec.status, rec.reply = err.status, f"{label}error {err.status}"
        headers = id_headers(rec)
        if err.retry_after is not None:
            headers["retry-after"] = f"{err.retry_after:g}"
        if rec.provider == "openai":
            default_type, code, default_message = OPENAI_ERRORS.get(err.status, ("server_error", None, "error"))
            error: dict[str, Any] = {
                "message": err.message or default_message,
                "type": err.error_type or default_type,
                "param": None,
                "code": code,
            }
            return h._send_json(err.status, {"error": error}, headers)
        default_type, default_message = ANTHROPIC_ERRORS.get(err.status, ("api_error", "error"))
        payload = {
            "type": "error",
            "error": {"type": err.error_type or default_type, "message": err.message or default_message},
            "request_id": headers["request-id"],
        }
        h._send_json(err.status, payload, headers)
