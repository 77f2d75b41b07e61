"""WeCom's published API contract, as data and pure checks, for the WeCom mock.

The mock used to accept any size, any key, any secret, any rate and no recipients, so tests
passed that the real WeCom fails (a 6,295-byte alert answered 40058 and retried for ever). The
limits and errcodes live here, in one place, so the mock, its tests and its docs quote the same
numbers. Sources: the group-robot page (developer.work.weixin.qq.com/document/path/99110:
``text`` 2048 bytes, ``markdown`` / ``markdown_v2`` 4096 bytes UTF-8, 20 messages a minute per
robot), the app ``message/send`` page (path/90236: ``text`` and ``markdown`` 2048 bytes; one of
``touser`` / ``toparty`` / ``totag``) and the global errcode list (path/90313).

Everything is pure except ``RateWindow``, which holds the per-key send times.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Optional

__all__ = [
    "APP_AGENT_ID",
    "APP_CORP_ID",
    "DEFAULT_APP_SECRET",
    "DEFAULT_WEBHOOK_KEY",
    "ERRMSG",
    "Endpoint",
    "RateWindow",
    "Refusal",
    "WeComLimits",
    "check_app_message",
    "check_gettoken",
    "check_webhook_message",
    "message_content",
    "refuse",
]

Endpoint = Literal["webhook", "gettoken", "app", "unknown"]
MsgType = Literal["text", "markdown", "markdown_v2"]
MSG_TYPES: tuple[MsgType, ...] = ("text", "markdown", "markdown_v2")

DEFAULT_WEBHOOK_KEY = "test-webhook-key-0001"
DEFAULT_APP_SECRET = "test-app-secret-0001"
APP_CORP_ID = "ww-test-corp"
APP_AGENT_ID = 1000002

# errcode -> WeCom's errmsg (English, as WeCom answers; the mock appends what it measured).
ERRMSG: Mapping[int, str] = {
    40001: "invalid credential: corpsecret does not match the app",
    40008: "invalid message type",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40056: "invalid agentid",
    40058: "invalid Request Parameter: content exceed max length",
    41001: "access_token missing",
    41002: "corpid missing",
    41004: "corpsecret missing",
    42001: "access_token expired",
    44004: "empty content",
    45009: "api freq out of limit",
    81013: "user & party & tag all invalid",
    93000: "invalid webhook url",
}


@dataclass(frozen=True)
class WeComLimits:
    """The numbers WeCom enforces; a test that needs another value replaces one field
    (``WeComLimits(rate_per_minute=3)``) instead of turning the whole contract off."""

    webhook_text_bytes: int = 2048
    webhook_markdown_bytes: int = 4096  # markdown and markdown_v2
    app_text_bytes: int = 2048
    app_markdown_bytes: int = 2048
    rate_per_minute: int = 20  # per robot key, every request WeCom takes in counts
    rate_window_seconds: float = 60.0

    def content_bytes(self, endpoint: Endpoint) -> Mapping[str, int]:
        """msgtype -> byte limit of its ``content``: the msgtypes ``endpoint`` accepts."""
        if endpoint == "webhook":
            return {
                "text": self.webhook_text_bytes,
                "markdown": self.webhook_markdown_bytes,
                "markdown_v2": self.webhook_markdown_bytes,
            }
        if endpoint == "app":  # the app's message/send has no markdown_v2
            return {"text": self.app_text_bytes, "markdown": self.app_markdown_bytes}
        return {}


@dataclass(frozen=True)
class Refusal:
    """An errcode answer. ``violation`` is False only for refusals that are part of a correct
    conversation with WeCom (an expired access_token the client is expected to refresh)."""

    errcode: int
    detail: str = ""
    violation: bool = True

    @property
    def errmsg(self) -> str:
        base = ERRMSG.get(self.errcode, "error")
        return f"{base}: {self.detail}" if self.detail else base

    def reply(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "errmsg": self.errmsg}


def refuse(errcode: int, detail: str = "") -> Refusal:
    return Refusal(errcode, detail)


def message_content(payload: Any, accepted: Optional[Mapping[str, int]] = None) -> Optional[str]:
    """The ``content`` of a text / markdown / markdown_v2 body (only the ``accepted`` msgtypes
    when given), or None if it has none."""
    if not isinstance(payload, dict):
        return None
    msgtype = payload.get("msgtype")
    if msgtype not in (accepted if accepted is not None else MSG_TYPES):
        return None
    section = payload.get(msgtype)
    content = section.get("content") if isinstance(section, dict) else None
    return content if isinstance(content, str) and content else None


def _check_message(payload: Any, accepted: Mapping[str, int], strict: bool) -> Optional[Refusal]:
    msgtype = payload.get("msgtype") if isinstance(payload, dict) else None
    if msgtype not in accepted:
        return refuse(40008, f"msgtype {msgtype!r}; this endpoint takes {', '.join(accepted)}")
    content = message_content(payload, accepted)
    if content is None:
        return refuse(44004, f"{msgtype}.content is missing or empty")
    size, limit = len(content.encode("utf-8")), accepted[str(msgtype)]
    if strict and size > limit:
        return refuse(40058, f"{msgtype}.content is {size} bytes UTF-8, over the {limit}-byte limit")
    return None


def check_webhook_message(payload: Any, limits: WeComLimits, strict: bool) -> Optional[Refusal]:
    """The body of a group-robot send."""
    return _check_message(payload, limits.content_bytes("webhook"), strict)


def check_app_message(payload: Any, limits: WeComLimits, strict: bool) -> Optional[Refusal]:
    """The body of an app ``message/send``: agentid, recipients, then the message itself."""
    if strict and isinstance(payload, dict):
        if str(payload.get("agentid")) != str(APP_AGENT_ID):
            return refuse(40056, f"agentid {payload.get('agentid')!r}; the app's AgentId is {APP_AGENT_ID}")
        if not any(isinstance(payload.get(k), str) and payload[k].strip() for k in ("touser", "toparty", "totag")):
            return refuse(81013, "touser, toparty and totag are all empty; give at least one")
    return _check_message(payload, limits.content_bytes("app"), strict)


def check_gettoken(query: Mapping[str, str], secret_ok: Callable[[str], bool], strict: bool) -> Optional[Refusal]:
    """``gettoken``'s ``corpid`` / ``corpsecret``. ``secret_ok`` says whether a secret is the
    app's; the secret itself never appears in the errmsg.

    A bare ``gettoken`` (neither parameter) is a reachability probe (``doctor`` sends one: no
    secret on the wire, and WeCom's JSON 41002 tells it apart from a proxy's login page), so
    its 41002 is not a violation; half a credential is."""
    corpid, secret = query.get("corpid"), query.get("corpsecret")
    if not corpid and not secret:
        return Refusal(41002, "a bare gettoken: no corpid, no corpsecret", violation=False)
    if not corpid:
        return refuse(41002)
    if not secret:
        return refuse(41004)
    if strict and corpid != APP_CORP_ID:
        return refuse(40013, f"corpid {corpid!r}; the mock's corp is {APP_CORP_ID!r}")
    if strict and not secret_ok(secret):
        return refuse(40001)
    return None


class RateWindow:
    """Requests per robot key in a sliding window. Every request WeCom takes in counts (a
    40058 too: WeCom read it); one refused with 45009 does not, so a client that waits gets
    through again."""

    def __init__(self, limits: WeComLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._sent: dict[str, deque[float]] = {}

    def admit(self, key: str) -> Optional[Refusal]:
        """Count one request for ``key``, or refuse it with 45009 when the window is full."""
        now = self._clock()
        with self._lock:
            window = self._sent.setdefault(key, deque())
            while window and now - window[0] >= self.limits.rate_window_seconds:
                window.popleft()
            if len(window) >= self.limits.rate_per_minute:
                return refuse(
                    45009,
                    f"{len(window)} messages to this robot in the last {self.limits.rate_window_seconds:g}s "
                    f"(limit {self.limits.rate_per_minute})",
                )
            window.append(now)
            return None
