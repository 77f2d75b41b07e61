"""The recorded requests: what the agent sent, the tool results it carries, and the side-request rule."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from .replies import Message, text

Provider = Literal["anthropic", "openai"]
RequestKind = Literal["turn", "side", "count_tokens", "models", "unknown"]
PROVIDERS: tuple[Provider, ...] = ("anthropic", "openai")
DEFAULT_MODELS = ("claude-sonnet-4-5", "gpt-5-codex")
REDACTED = "<redacted>"
SECRET_HEADERS = {"authorization", "x-api-key", "proxy-authorization", "cookie"}
# A text part that is context the agent adds beside the user's prompt, not typed by the user:
# an XML-wrapped block (Claude Code's <system-reminder>, codex's <environment_context>,
# <user_instructions>, <permissions instructions>) or codex's AGENTS.md preamble.
_CONTEXT_BLOCK = re.compile(r"^\s*(<([\w-]+)[^>]*>.*</\2[^>]*>\s*$|# AGENTS\.md instructions)", re.S)


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
