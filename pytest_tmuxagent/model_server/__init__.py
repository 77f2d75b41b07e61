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

from .replies import (
    Garbage,
    HangReply,
    HttpError,
    Message,
    ModelReply,
    TextBlock,
    ToolCallBlock,
    garbage,
    hang,
    http_error,
    overloaded,
    rate_limited,
    server_error,
    text,
    tool_call,
)
from .requests import DEFAULT_MODELS, ModelRequest, ToolResult, default_side_request
from .scripting import ProviderScript
from .server import ModelServer

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
