"""A scripted model server: the Anthropic Messages API and the OpenAI Responses API on 127.0.0.1.

Claude Code and codex run as real processes in tmux panes, so an in-process mock cannot see
their traffic. ``ModelServer`` is a genuine HTTP server (stdlib ``ThreadingHTTPServer`` on a
free port, in its own thread) that answers

- ``POST /v1/messages`` (``?beta=true`` allowed) and ``POST /v1/messages/count_tokens`` as
  Anthropic does (Claude Code: ``ANTHROPIC_BASE_URL=server.anthropic_base_url``),
- ``POST /v1/responses`` and ``GET /v1/models`` as OpenAI does (codex: ``base_url =
  server.openai_base_url``, ``wire_api = "responses"``),

streamed as server-sent events when the request says ``"stream": true``, from a per-test
script of replies (``text``, ``tool_call``, ``hang``, ``http_error`` / ``overloaded`` /
``rate_limited`` / ``server_error``, ``garbage``), and records every request so a test can
assert what the agent sent back (``tool_results()``, ``last_user_text()``).

Turn and side requests: only *turn* requests consume the script. A request is a *side*
request (answered at once with a short title, ``{"title": "Scripted session"}``) when its
``tools`` list is missing or empty — Claude Code's session-title request has no tools and
codex's has ``tools: []`` — or when it asks for a JSON schema whose only property is
``title``. Override with ``ModelServer(side_request=...)`` or by assigning
``server.side_request``; change the answer with ``server.side_reply``.

Secrets: the ``Authorization`` and ``x-api-key`` headers are redacted before a request is
recorded; the server never logs.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import secrets
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Optional, Union
from urllib.parse import parse_qs, urlsplit

from .waiting import WaitTimeout

__all__ = [
    "DEFAULT_MODELS",
    "Garbage",
    "HangReply",
    "HttpError",
    "Message",
    "ModelReply",
    "ModelRequest",
    "ModelServer",
    "ProviderScript",
    "TextBlock",
    "ToolCallBlock",
    "ToolResult",
    "default_side_request",
    "garbage",
    "hang",
    "http_error",
    "overloaded",
    "rate_limited",
    "server_error",
    "text",
    "tool_call",
]

Provider = Literal["anthropic", "openai"]
RequestKind = Literal["turn", "side", "count_tokens", "models", "unknown"]
PROVIDERS: tuple[Provider, ...] = ("anthropic", "openai")
DEFAULT_MODELS = ("claude-sonnet-4-5", "gpt-5-codex")
REDACTED = "<redacted>"
_SECRET_HEADERS = {"authorization", "x-api-key", "proxy-authorization", "cookie"}
# A text part that is context the agent adds beside the user's prompt, not typed by the user:
# an XML-wrapped block (Claude Code's <system-reminder>, codex's <environment_context>,
# <user_instructions>, <permissions instructions>) or codex's AGENTS.md preamble.
_CONTEXT_BLOCK = re.compile(r"^\s*(<([\w-]+)[^>]*>.*</\2[^>]*>\s*$|# AGENTS\.md instructions)", re.S)


# replies ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextBlock:
    text: str


@dataclass(frozen=True)
class ToolCallBlock:
    """A tool call: Anthropic ``tool_use`` / Responses ``function_call``. ``id`` None means a
    fresh unique id each time it is served (``toolu_…`` / ``call_…``)."""

    name: str
    input: Mapping[str, Any]
    id: Optional[str] = None


Block = Union[TextBlock, ToolCallBlock]


@dataclass(frozen=True)
class Message:
    """An assistant message: text and tool-call blocks in order. ``a + b`` joins two messages
    (e.g. ``text("Running it") + tool_call("Bash", {...})``). The stop reason is ``tool_use``
    when a tool is called, else ``end_turn``."""

    blocks: tuple[Block, ...]

    def __add__(self, other: Message) -> Message:
        return Message(self.blocks + other.blocks)

    @property
    def stop_reason(self) -> str:
        return "tool_use" if any(isinstance(b, ToolCallBlock) for b in self.blocks) else "end_turn"


@dataclass(frozen=True)
class HttpError:
    """An HTTP error with the provider's JSON error shape (and ``retry-after`` if set)."""

    status: int
    message: Optional[str] = None
    error_type: Optional[str] = None
    retry_after: Optional[float] = None


@dataclass(frozen=True)
class Garbage:
    """HTTP 200 whose body is not what the client can parse: broken SSE when streamed, not
    JSON otherwise. ``body`` overrides both."""

    body: Optional[bytes] = None


class HangReply:
    """A reply that stops mid-stream: it sends the start of ``message`` (``message_start`` and
    the first delta / ``response.created`` … the first delta), then blocks until
    ``release()`` (the rest follows and the message completes) or the server stops (the
    connection is dropped without completing the stream). Once released it no longer hangs.
    A non-streamed request hangs before any byte is sent."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self._wake = threading.Event()
        self._hanging = threading.Event()
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        """Let the hung reply (and any later use of this reply) complete normally."""
        with self._lock:
            self._released = True
        self._wake.set()

    @property
    def hanging(self) -> bool:
        """True once a request is (or was) blocked in this reply."""
        return self._hanging.is_set()

    def wait_hanging(self, timeout: float = 10.0) -> None:
        """Wait until a request has received the partial stream and is blocked."""
        if not self._hanging.wait(timeout):
            raise WaitTimeout("a request to hang in the scripted reply", timeout, 1)

    def _block(self, stopping: threading.Event) -> bool:
        """Block until released (True) or the server stops (False). Runs on a server thread."""
        self._hanging.set()
        while not self._wake.wait(0.05):
            if stopping.is_set():
                return False
        with self._lock:
            return self._released and not stopping.is_set()

    def _abort(self) -> None:
        self._wake.set()

    def __repr__(self) -> str:
        return f"hang({self.message!r})"


ModelReply = Union[Message, HangReply, HttpError, Garbage]


def text(value: str) -> Message:
    """Reply with one text block."""
    return Message((TextBlock(value),))


def tool_call(name: str, input: Mapping[str, Any], *, id: Optional[str] = None) -> Message:
    """Reply with one tool call, e.g. ``tool_call("Bash", {"command": "ls", "description": "List"})``
    for Claude Code or ``tool_call("exec_command", {"cmd": "ls"})`` for codex."""
    return Message((ToolCallBlock(name, dict(input), id),))


def hang(reply: Union[Message, str] = "Working on it, one moment please") -> HangReply:
    """A reply that hangs after its first delta; keep it to ``release()`` it."""
    return HangReply(text(reply) if isinstance(reply, str) else reply)


def http_error(
    status: int, message: Optional[str] = None, *, error_type: Optional[str] = None, retry_after: Optional[float] = None
) -> HttpError:
    """An HTTP error; ``error_type`` defaults to the provider's type for ``status``."""
    return HttpError(status, message, error_type, retry_after)


def server_error(message: Optional[str] = None) -> HttpError:
    """HTTP 500 (Anthropic ``api_error``, OpenAI ``server_error``)."""
    return HttpError(500, message)


def overloaded(message: Optional[str] = None) -> HttpError:
    """HTTP 529 (Anthropic ``overloaded_error``)."""
    return HttpError(529, message)


def rate_limited(retry_after: float = 1, message: Optional[str] = None) -> HttpError:
    """HTTP 429 (``rate_limit_error``) with a ``retry-after`` header in seconds."""
    return HttpError(429, message, retry_after=retry_after)


def garbage(body: Optional[bytes] = None) -> Garbage:
    """HTTP 200 with a body the client cannot parse."""
    return Garbage(body)


_ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}
_OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request"),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", None, "Not found"),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", "server_is_overloaded", "The server is overloaded. Please try again later."),
    529: ("server_error", "server_is_overloaded", "The server is overloaded. Please try again later."),
}


# requests -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolResult:
    """What the agent sent back for a tool call: an Anthropic ``tool_result`` block or a
    Responses ``function_call_output`` item. ``output`` is the text (text parts joined)."""

    provider: Provider
    call_id: str
    output: str
    is_error: bool = False


def _text_of(content: Any) -> str:
    """Text of a string or a list of content parts (``text`` / ``input_text`` / ``output_text``)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _user_texts(content: Any) -> list[str]:
    """The user-typed text parts of one message's content, context blocks left out."""
    parts = [content] if isinstance(content, str) else content if isinstance(content, list) else []
    found: list[str] = []
    for part in parts:
        value = part if isinstance(part, str) else part.get("text") if isinstance(part, dict) else None
        if isinstance(part, dict) and part.get("type") not in (None, "text", "input_text"):
            continue
        if isinstance(value, str) and value.strip() and not _CONTEXT_BLOCK.match(value):
            found.append(value)
    return found


@dataclass
class ModelRequest:
    """One request as the server saw it (secret headers redacted) and how it was answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    time: float
    provider: Optional[Provider]
    kind: RequestKind
    authorized: bool = True
    status: Optional[int] = None
    # what answered it: "text", "tool_call", "hang", "garbage", "error 529"; prefixed "default "
    # (the queue was empty) or "side " (a side request)
    reply: Optional[str] = None
    tool_call_ids: list[str] = field(default_factory=list)

    @property
    def body(self) -> dict[str, Any]:
        return self.json if isinstance(self.json, dict) else {}

    @property
    def model(self) -> Optional[str]:
        value = self.body.get("model")
        return value if isinstance(value, str) else None

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def tools(self) -> list[str]:
        """Names of the tools the request offers."""
        tools = self.body.get("tools")
        names = [t.get("name") for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []
        return [n for n in names if isinstance(n, str)]

    def system_text(self) -> str:
        """The system prompt / instructions as text (Anthropic ``system``, Responses ``instructions``)."""
        return _text_of(self.body.get("system") if self.provider == "anthropic" else self.body.get("instructions"))

    def _items(self) -> list[dict[str, Any]]:
        items = self.body.get("messages") if self.provider == "anthropic" else self.body.get("input")
        if isinstance(items, str):
            return [{"role": "user", "content": items}]
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    def user_texts(self) -> list[str]:
        """Every user-typed text in the conversation, oldest first (context blocks such as
        ``<system-reminder>…</system-reminder>`` or ``<environment_context>…`` left out)."""
        return [
            t
            for item in self._items()
            if item.get("role") == "user" and item.get("type") in (None, "message")
            for t in _user_texts(item.get("content"))
        ]

    def last_user_text(self) -> Optional[str]:
        """The most recent user-typed text, or None."""
        texts = self.user_texts()
        return texts[-1] if texts else None

    def tool_results(self) -> list[ToolResult]:
        """Tool results this request carries, in conversation order."""
        found: list[ToolResult] = []
        for item in self._items():
            if self.provider == "anthropic":
                content = item.get("content")
                if item.get("role") != "user" or not isinstance(content, list):
                    continue
                for block in content:
                    if isinstance(block, dict) and block.get("type") == "tool_result":
                        found.append(
                            ToolResult(
                                "anthropic",
                                str(block.get("tool_use_id", "")),
                                _text_of(block.get("content")),
                                block.get("is_error") is True,
                            )
                        )
            elif item.get("type") in ("function_call_output", "custom_tool_call_output"):
                found.append(ToolResult("openai", str(item.get("call_id", "")), _text_of(item.get("output"))))
        return found


def default_side_request(request: ModelRequest) -> bool:
    """The documented rule: a side request offers no tools (``tools`` missing or empty), or asks
    for a JSON schema whose only property is ``title`` (a session-title request)."""
    if not request.body.get("tools"):
        return True
    body = request.body
    text_format = body.get("text", {}).get("format") if isinstance(body.get("text"), dict) else None
    for spec in (text_format, body.get("output_format")):
        if isinstance(spec, dict):
            schema = spec.get("schema", {})
            props = schema.get("properties") if isinstance(schema, dict) else None
            if isinstance(props, dict) and set(props) == {"title"}:
                return True
    return False


def default_side_reply(request: ModelRequest) -> Message:
    """A short session title, as JSON text (both agents parse ``{"title": …}``)."""
    return text(json.dumps({"title": "Scripted session"}))


# scripting ----------------------------------------------------------------------------------


Predicate = Callable[[ModelRequest], bool]


@dataclass
class _Rule:
    provider: Optional[Provider]
    when: Optional[Predicate]
    replies: deque[ModelReply]


class ProviderScript:
    """``server.anthropic`` / ``server.openai``: script replies for one provider's turns."""

    def __init__(self, server: ModelServer, provider: Provider) -> None:
        self._server = server
        self.provider: Provider = provider

    def script(self, *replies: ModelReply, when: Optional[Predicate] = None) -> None:
        """Queue replies for this provider's turn requests (those matching ``when``, if given)."""
        self._server.script(*replies, provider=self.provider, when=when)

    def requests(self, kind: Optional[RequestKind] = None) -> list[ModelRequest]:
        return self._server.requests(kind=kind, provider=self.provider)

    def tool_results(self) -> list[ToolResult]:
        return self._server.tool_results(provider=self.provider)

    def last_user_text(self) -> Optional[str]:
        return self._server.last_user_text(provider=self.provider)


# the wire -----------------------------------------------------------------------------------


class _Abort(Exception):
    """The server is stopping: drop the connection without finishing the stream."""


def _new_id(prefix: str, length: int = 24) -> str:
    return prefix + secrets.token_hex(length // 2)


def _chunks(value: str, parts: int = 0) -> list[str]:
    """Split text into delta chunks (words, a few at a time); at least ``parts`` chunks when the
    text is long enough."""
    if parts:
        size = max(1, -(-len(value) // parts))
        return [value[i : i + size] for i in range(0, len(value), size)] or [""]
    words = re.findall(r"\s*\S+\s*", value) or [value]
    return ["".join(words[i : i + 3]) for i in range(0, len(words), 3)]


class _Handler(BaseHTTPRequestHandler):
    model_server: ModelServer  # set on a per-server subclass
    protocol_version = "HTTP/1.1"

    # -- transport helpers
    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
            body = bytes(data)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
        except (OSError, zlib.error):
            pass
        return body

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] = {}) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_bytes(self, status: int, data: bytes, content_type: str, headers: Mapping[str, str] = {}) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _start_stream(self, headers: Mapping[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _event(self, name: str, payload: Mapping[str, Any]) -> None:
        self._chunk(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- entry points
    def do_POST(self) -> None:
        split = urlsplit(self.path)
        raw = self._read_body()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        server = self.model_server
        rec = server._record(self.command, split.path, parse_qs(split.query), self.headers.items(), parsed)
        try:
            server._serve(self, rec)
        except _Abort:
            self.close_connection = True
            self._drop()
        except OSError:
            self.close_connection = True  # the client went away; nothing to tell it

    do_GET = do_POST

    def _drop(self) -> None:
        try:
            self.connection.shutdown(2)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the recorded requests are the log (and headers are never logged)."""


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
        self._rules: list[_Rule] = []  # predicate rules first, in order
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
                handler = type("ModelServerHandler", (_Handler,), {"model_server": self})
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
                self._rules.append(_Rule(provider, when, deque(replies)))
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
            clean[name] = REDACTED if name.lower() in _SECRET_HEADERS else value
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
    def _serve(self, h: _Handler, rec: ModelRequest) -> None:
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
            return h._send_json(200, {"input_tokens": self._input_tokens(rec)})
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
                raise _Abort

        if not rec.stream:
            pause()
            rec.status = 200
            payload = (
                self._anthropic_message(rec, message, calls)
                if rec.provider == "anthropic"
                else self._openai_response(rec, message, calls, "completed")
            )
            return h._send_json(200, payload, self._id_headers(rec))
        with self._changed:
            self._streams += 1
        try:
            rec.status = 200
            h._start_stream(self._id_headers(rec))
            if rec.provider == "anthropic":
                self._stream_anthropic(h, rec, message, calls, pause)
            else:
                self._stream_openai(h, rec, message, calls, pause)
            h._end_stream()
        finally:
            with self._changed:
                self._streams -= 1
                self._changed.notify_all()

    @staticmethod
    def _id_headers(rec: ModelRequest) -> dict[str, str]:
        if rec.provider == "openai":
            return {"x-request-id": _new_id("req_")}
        return {"request-id": _new_id("req_")}

    def _assign_ids(self, rec: ModelRequest, message: Message) -> list[str]:
        """One id per tool call block (explicit ones kept), remembered as served."""
        provider: Provider = rec.provider or "anthropic"
        ids: list[str] = []
        with self._lock:
            for block in message.blocks:
                if isinstance(block, ToolCallBlock):
                    call_id = block.id or _new_id("toolu_" if provider == "anthropic" else "call_")
                    ids.append(call_id)
                    self._tool_calls.append((provider, call_id, block.name, dict(block.input)))
            rec.tool_call_ids = list(ids)
        return ids

    @staticmethod
    def _input_tokens(rec: ModelRequest) -> int:
        return max(1, len(json.dumps(rec.json)) // 4)

    def _error(self, h: _Handler, rec: ModelRequest, err: HttpError, label: str = "") -> None:
        rec.status, rec.reply = err.status, f"{label}error {err.status}"
        headers = self._id_headers(rec)
        if err.retry_after is not None:
            headers["retry-after"] = f"{err.retry_after:g}"
        if rec.provider == "openai":
            default_type, code, default_message = _OPENAI_ERRORS.get(err.status, ("server_error", None, "error"))
            error: dict[str, Any] = {
                "message": err.message or default_message,
                "type": err.error_type or default_type,
                "param": None,
                "code": code,
            }
            return h._send_json(err.status, {"error": error}, headers)
        default_type, default_message = _ANTHROPIC_ERRORS.get(err.status, ("api_error", "error"))
        payload = {
            "type": "error",
            "error": {"type": err.error_type or default_type, "message": err.message or default_message},
            "request_id": headers["request-id"],
        }
        h._send_json(err.status, payload, headers)

    # -- Anthropic
    def _anthropic_usage(self, rec: ModelRequest, output_tokens: int) -> dict[str, Any]:
        return {
            "input_tokens": self._input_tokens(rec),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
        }

    @staticmethod
    def _anthropic_blocks(message: Message, calls: list[str]) -> list[dict[str, Any]]:
        ids = iter(calls)
        return [
            {"type": "text", "text": b.text}
            if isinstance(b, TextBlock)
            else {"type": "tool_use", "id": next(ids), "name": b.name, "input": dict(b.input)}
            for b in message.blocks
        ]

    def _anthropic_message(self, rec: ModelRequest, message: Message, calls: list[str]) -> dict[str, Any]:
        return {
            "id": _new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": rec.model or DEFAULT_MODELS[0],
            "content": self._anthropic_blocks(message, calls),
            "stop_reason": message.stop_reason,
            "stop_sequence": None,
            "usage": self._anthropic_usage(rec, self._output_tokens(message)),
        }

    @staticmethod
    def _output_tokens(message: Message) -> int:
        return max(
            1, sum(len(b.text if isinstance(b, TextBlock) else json.dumps(dict(b.input))) for b in message.blocks) // 4
        )

    def _stream_anthropic(
        self, h: _Handler, rec: ModelRequest, message: Message, calls: list[str], pause: Callable[[], None]
    ) -> None:
        start = self._anthropic_message(rec, message, calls)
        start.update(content=[], stop_reason=None, usage=self._anthropic_usage(rec, 1))
        h._event("message_start", {"type": "message_start", "message": start})
        h._event("ping", {"type": "ping"})
        first = True
        for index, block in enumerate(self._anthropic_blocks(message, calls)):
            if block["type"] == "text":
                h._event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                )
                deltas = [{"type": "text_delta", "text": c} for c in _chunks(block["text"])]
            else:
                h._event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}},
                )
                deltas = [
                    {"type": "input_json_delta", "partial_json": c} for c in _chunks(json.dumps(block["input"]), 3)
                ]
            for delta in deltas:
                h._event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                if first:
                    first = False
                    pause()
            h._event("content_block_stop", {"type": "content_block_stop", "index": index})
        if first:
            pause()
        h._event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message.stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": self._output_tokens(message)},
            },
        )
        h._event("message_stop", {"type": "message_stop"})

    # -- OpenAI Responses
    @staticmethod
    def _openai_items(message: Message, calls: list[str], status: str) -> list[dict[str, Any]]:
        ids = iter(calls)
        items: list[dict[str, Any]] = []
        for block in message.blocks:
            if isinstance(block, TextBlock):
                items.append(
                    {
                        "id": _new_id("msg_"),
                        "type": "message",
                        "role": "assistant",
                        "status": status,
                        "content": [{"type": "output_text", "text": block.text, "annotations": [], "logprobs": []}],
                    }
                )
            else:
                items.append(
                    {
                        "id": _new_id("fc_"),
                        "type": "function_call",
                        "status": status,
                        "call_id": next(ids),
                        "name": block.name,
                        "arguments": json.dumps(dict(block.input)),
                    }
                )
        return items

    def _openai_response(
        self,
        rec: ModelRequest,
        message: Message,
        calls: list[str],
        status: str,
        items: Optional[list[dict[str, Any]]] = None,
        response_id: Optional[str] = None,
    ) -> dict[str, Any]:
        done = status == "completed"
        output = (items if items is not None else self._openai_items(message, calls, "completed")) if done else []
        input_tokens, output_tokens = self._input_tokens(rec), self._output_tokens(message)
        body = rec.body
        return {
            "id": response_id or _new_id("resp_"),
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": rec.model or DEFAULT_MODELS[1],
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "store": body.get("store", False),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            }
            if done
            else None,
            "user": None,
            "metadata": body.get("metadata") or {},
        }

    def _stream_openai(
        self, h: _Handler, rec: ModelRequest, message: Message, calls: list[str], pause: Callable[[], None]
    ) -> None:
        seq = itertools.count()
        response_id = _new_id("resp_")

        def event(kind: str, /, **payload: Any) -> None:
            h._event(kind, {"type": kind, "sequence_number": next(seq), **payload})

        event(
            "response.created",
            response=self._openai_response(rec, message, calls, "in_progress", response_id=response_id),
        )
        event(
            "response.in_progress",
            response=self._openai_response(rec, message, calls, "in_progress", response_id=response_id),
        )
        items = self._openai_items(message, calls, "completed")
        first = True
        for index, item in enumerate(items):
            if item["type"] == "message":
                part = item["content"][0]
                event(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "content": []},
                )
                event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part={**part, "text": ""},
                )
                for chunk in _chunks(part["text"]):
                    event(
                        "response.output_text.delta",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        delta=chunk,
                        logprobs=[],
                    )
                    if first:
                        first = False
                        pause()
                event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=part["text"],
                    logprobs=[],
                )
                event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part)
            else:
                event(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "arguments": ""},
                )
                for chunk in _chunks(item["arguments"], 3):
                    event("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=chunk)
                    if first:
                        first = False
                        pause()
                event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            event("response.output_item.done", output_index=index, item=item)
        if first:
            pause()
        event(
            "response.completed",
            response=self._openai_response(rec, message, calls, "completed", items=items, response_id=response_id),
        )
