"""Per-provider scripting: the ``when`` rules and ``server.anthropic`` / ``server.openai``."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from .replies import ModelReply
from .requests import ModelRequest, Provider, RequestKind, ToolResult

if TYPE_CHECKING:
    from .server import ModelServer


Predicate = Callable[[ModelRequest], bool]


@dataclass
class Rule:
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
