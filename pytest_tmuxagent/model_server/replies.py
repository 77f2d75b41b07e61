"""The scripted replies: text and tool-call messages, HTTP errors, garbage, and replies that hang."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional, Union

from ..waiting import WaitTimeout


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
