"""A real local HTTP stand-in for WeCom (qyapi.weixin.qq.com).

The orchestrator runs as a subprocess in integration and scenario tests, so in-process mocks
(``responses``) cannot see its traffic. ``WeComMock`` is a genuine HTTP server on 127.0.0.1 that
speaks the three WeCom endpoints the notifier uses, records every request, and injects the
failures the degradation/outbox logic must survive: HTTP 500, rate limiting (errcode 45009),
expired tokens (errcode 42001), slowness, and refused connections.

It is strict by default: it answers as WeCom's published contract says (``wecom_contract``:
byte limits, 20 messages a minute per robot key, known keys, the app's corpid / secret /
agentid, recipients), so a test sees what WeCom would do. A request refused for breaking that
contract is a *violation*: it is recorded (``violations``) and fails the session unless the
test declared it (``expect_violation`` / ``allow_violations``), see ``wecom_check``.
``WeComMock(strict=False)`` keeps the old lax checks (any key, secret, size, rate, recipient).

Faults model *delivery* failures, so they apply to the two send endpoints only (``token_expired``
to the app ``message/send`` only); ``gettoken`` always answers unless the mock is refusing.
An injected fault is never a violation, and a request it answers is not counted by the rate
limit: WeCom never took it in.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

from . import wecom_violations
from .waiting import wait_until
from .wecom_contract import (
    APP_AGENT_ID,
    APP_CORP_ID,
    DEFAULT_APP_SECRET,
    DEFAULT_WEBHOOK_KEY,
    Endpoint,
    RateWindow,
    Refusal,
    WeComLimits,
    check_app_message,
    check_gettoken,
    check_webhook_message,
    message_content,
    refuse,
)
from .wecom_violations import Violation, ViolationLedger

__all__ = ["FAULT_KINDS", "RecordedRequest", "Violation", "WeComLimits", "WeComMock"]

FAULT_KINDS = frozenset({"http_500", "rate_limit", "token_expired", "slow", "refuse"})
WEBHOOK_PATH = "/cgi-bin/webhook/send"
GETTOKEN_PATH = "/cgi-bin/gettoken"
APP_SEND_PATH = "/cgi-bin/message/send"
_SEND_PATHS = {WEBHOOK_PATH: "webhook", APP_SEND_PATH: "app"}
_OK = {"errcode": 0, "errmsg": "ok"}
_INJECTED = {  # fault kind -> (HTTP status, body), mirroring what WeCom really answers
    "http_500": (500, {"errcode": -1, "errmsg": "system error (injected)"}),
    "rate_limit": (200, {"errcode": 45009, "errmsg": "api freq out of limit (injected)"}),
    "token_expired": (200, {"errcode": 42001, "errmsg": "access_token expired (injected)"}),
}
Reply = tuple[int, dict[str, Any]]


@dataclass
class RecordedRequest:
    """One request as the mock saw it, plus the outcome once decided; ``message`` is set only
    when the text counts as delivered (HTTP 200 and errcode 0 on a send endpoint)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any
    time: float
    status: Optional[int] = None
    errcode: Optional[int] = None
    fault: Optional[str] = None
    message: Optional[str] = None
    violation: Optional[str] = None  # why the contract refused it, if it did


def _message_text(payload: Any) -> Optional[str]:
    """Text of a WeCom ``text``, ``markdown`` or ``markdown_v2`` message body, or None."""
    return message_content(payload)


def _new_token() -> str:
    return f"mock-token-{secrets.token_hex(8)}"


class _Handler(BaseHTTPRequestHandler):
    mock: WeComMock  # set on a per-mock subclass in WeComMock._listen
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        rec = RecordedRequest(
            method=self.command,
            path=split.path,
            query={k: v[0] for k, v in parse_qs(split.query).items()},
            headers=dict(self.headers.items()),
            body=body,
            json=parsed,
            time=time.time(),
        )
        status, reply = self.mock._respond(rec)
        data = json.dumps(reply).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up (e.g. timed out on a "slow" reply); nothing to tell it

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request stderr noise; the recorded requests are the log."""


class WeComMock:
    """Local WeCom server: webhook robot, ``gettoken`` and app ``message/send``."""

    CORP_ID = APP_CORP_ID
    AGENT_ID = APP_AGENT_ID

    def __init__(self, slow_seconds: float = 3.0, *, strict: bool = True, limits: Optional[WeComLimits] = None) -> None:
        self.slow_seconds = slow_seconds
        self.strict = strict
        self.limits = limits or WeComLimits()
        self._lock = threading.RLock()
        self._requests: list[RecordedRequest] = []
        self._pending: list[list[Any]] = []  # [kind, remaining], oldest first
        self._mode: Optional[str] = None
        self._expected: list[str] = []
        self._keys = {DEFAULT_WEBHOOK_KEY}
        self._secrets = {DEFAULT_APP_SECRET}
        self._rate = RateWindow(self.limits)
        self._ledger = wecom_violations.register(ViolationLedger(wecom_violations.current_test()))
        self._token = _new_token()
        self._issued = {self._token}
        self._port = 0
        self._server: Optional[ThreadingHTTPServer] = None
        self._placeholder: Optional[socket.socket] = None  # holds the port while refusing
        self._stopping = threading.Event()

    def start(self) -> WeComMock:
        """Start listening (on a free port the first time, on the same port afterwards)."""
        with self._lock:
            if self._server is None:
                self._stopping.clear()
                self._listen()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; in-flight "slow" replies are woken up."""
        self._stopping.set()
        with self._lock:
            self._close(keep_port=False)

    __enter__ = start

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _listen(self) -> None:
        # The placeholder is closed only right before re-binding, so no other process (e.g.
        # another xdist worker binding port 0) can take our port while we were "refusing".
        # ThreadingHTTPServer uses daemon threads (stop() never waits on a "slow" handler) and
        # SO_REUSEADDR (re-listening on our port after "refuse" works despite TIME_WAIT).
        self._close(keep_port=False)
        handler = type("WeComMockHandler", (_Handler,), {"mock": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._port = self._server.server_port
        # A short poll interval keeps stop()/set_mode("refuse") fast: shutdown() waits for it.
        threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"wecom-mock-{self._port}",
            daemon=True,
        ).start()

    def _close(self, keep_port: bool) -> None:
        """Stop listening; with ``keep_port`` keep the port bound but not listening, so
        connection attempts are refused (RST) rather than hanging in a backlog."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if keep_port and self._placeholder is None:
            port = self.port  # raises if never started: there is no port to refuse on
            self._placeholder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._placeholder.bind(("127.0.0.1", port))
        elif not keep_port and self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None

    def _resume_if_refusing(self) -> None:
        if self._placeholder is not None:
            self._listen()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("WeComMock is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL to use as ``WECOM_API_BASE``, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    def webhook_url(self, key: str = DEFAULT_WEBHOOK_KEY) -> str:
        return f"{self.url}{WEBHOOK_PATH}?key={key}"

    def add_webhook_key(self, key: str) -> None:
        """Make ``key`` a robot this WeCom knows (the default key always is)."""
        with self._lock:
            self._keys.add(key)

    def add_app_secret(self, secret: str) -> None:
        """Make ``secret`` a valid ``corpsecret`` of the app (the default one always is)."""
        with self._lock:
            self._secrets.add(secret)

    def env(
        self, mode: str = "webhook", key: str = DEFAULT_WEBHOOK_KEY, secret: str = DEFAULT_APP_SECRET
    ) -> dict[str, str]:
        """The environment that points the orchestrator's notifier at this mock; the ``key``
        or ``secret`` given becomes a valid one."""
        if mode == "webhook":
            self.add_webhook_key(key)
            return {"WECOM_WEBHOOK": f"https://qyapi.weixin.qq.com{WEBHOOK_PATH}?key={key}", "WECOM_API_BASE": self.url}
        if mode == "app":
            self.add_app_secret(secret)
            return {
                "WECOM_CORP_ID": self.CORP_ID,
                "WECOM_AGENT_ID": str(self.AGENT_ID),
                "WECOM_APP_SECRET": secret,
                "WECOM_API_BASE": self.url,
            }
        raise ValueError(f"unknown WeCom mode {mode!r}: use 'webhook' or 'app'")

    @property
    def access_token(self) -> str:
        with self._lock:
            return self._token

    def expire_tokens(self) -> None:
        """Issue a new token; app sends still using the old one now get errcode 42001."""
        with self._lock:
            self._token = _new_token()
            self._issued.add(self._token)

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")

    def fail_next(self, kind: str, times: int = 1) -> None:
        """Make the next ``times`` send requests the fault applies to fail with ``kind``."""
        self._check_kind(kind)
        if kind == "refuse":
            raise ValueError("'refuse' cannot be counted per request; use set_mode('refuse') then reset()")
        with self._lock:
            self._pending.append([kind, times])

    def set_mode(self, kind: str) -> None:
        """Fail every request the fault applies to with ``kind`` until ``reset()``."""
        self._check_kind(kind)
        with self._lock:
            if kind == "refuse":
                self._close(keep_port=True)
            else:
                self._resume_if_refusing()
            self._mode = kind

    def reset(self) -> None:
        """Drop all faults and, if refusing, listen again on the same port."""
        with self._lock:
            self._mode = None
            self._pending.clear()
            self._resume_if_refusing()

    @staticmethod
    def _applies(kind: Optional[str], endpoint: Optional[str]) -> bool:
        return bool(kind and endpoint) and (kind != "token_expired" or endpoint == "app")

    def _take_fault(self, endpoint: Optional[str]) -> Optional[str]:
        with self._lock:
            for entry in self._pending:
                if self._applies(entry[0], endpoint):
                    entry[1] -= 1
                    if entry[1] <= 0:
                        self._pending.remove(entry)
                    return str(entry[0])
            return self._mode if self._applies(self._mode, endpoint) else None

    def _respond(self, rec: RecordedRequest) -> Reply:
        """Record, apply faults, answer. Runs on a server thread."""
        with self._lock:
            self._requests.append(rec)
        endpoint = _SEND_PATHS.get(rec.path)
        rec.fault = self._take_fault(endpoint)
        if rec.fault == "slow":
            self._stopping.wait(self.slow_seconds)
        status, reply = _INJECTED.get(rec.fault or "") or self._answer(rec, endpoint)
        with self._lock:
            errcode = reply.get("errcode")
            rec.status, rec.errcode = status, errcode if isinstance(errcode, int) else None
            if status == 200 and rec.errcode == 0 and endpoint is not None:
                rec.message = _message_text(rec.json)
        return status, reply

    def _answer(self, rec: RecordedRequest, endpoint: Optional[str]) -> Reply:
        """WeCom's answer by its contract; a refusal that breaks it is recorded as a violation."""
        kind: Endpoint = "gettoken" if rec.path == GETTOKEN_PATH and rec.method == "GET" else "unknown"
        if endpoint is not None and rec.method == "POST":
            kind = "webhook" if endpoint == "webhook" else "app"
        if kind == "unknown":
            self._violate(rec, kind, 404, f"no such endpoint: {rec.method} {rec.path}")
            return 404, {"errcode": 404, "errmsg": f"no such endpoint: {rec.method} {rec.path}"}
        refusal = {"gettoken": self._check_gettoken, "webhook": self._check_webhook, "app": self._check_app}[kind](rec)
        if refusal is not None:
            if refusal.violation:
                self._violate(rec, kind, refusal.errcode, refusal.errmsg)
            return 200, refusal.reply()
        if kind == "gettoken":
            return 200, {**_OK, "access_token": self.access_token, "expires_in": 7200}
        return 200, dict(_OK)

    def _check_gettoken(self, rec: RecordedRequest) -> Optional[Refusal]:
        with self._lock:
            secrets_ = set(self._secrets)
        return check_gettoken(rec.query, secrets_.__contains__, self.strict)

    def _check_webhook(self, rec: RecordedRequest) -> Optional[Refusal]:
        key = rec.query.get("key")
        if not key:
            return refuse(93000, "the URL has no key")
        with self._lock:
            known = key in self._keys
        if self.strict and not known:
            return refuse(93000, "no robot has this key (add it with add_webhook_key)")
        if self.strict and (full := self._rate.admit(key)) is not None:
            return full
        return check_webhook_message(rec.json, self.limits, self.strict)

    def _check_app(self, rec: RecordedRequest) -> Optional[Refusal]:
        token = rec.query.get("access_token")
        if not token:
            return refuse(41001)
        with self._lock:
            current, issued = self._token, token in self._issued
        if token != current:
            if issued or not self.strict:  # an expired token: refreshing it is the client's job
                return Refusal(42001, violation=False)
            return refuse(40014, "never issued by gettoken")
        return check_app_message(rec.json, self.limits, self.strict)

    def _violate(self, rec: RecordedRequest, endpoint: Endpoint, errcode: int, reason: str) -> None:
        rec.violation = reason
        self._ledger.record(endpoint, errcode, reason)

    @property
    def violations(self) -> list[Violation]:
        """Requests refused for breaking WeCom's contract (not injected faults), oldest first.
        ``clear()`` keeps them: they are what the session-end check reports."""
        return self._ledger.violations

    def expect_violation(self, errcode: int | str) -> None:
        """Declare that this test provokes ``errcode`` on purpose: such violations do not fail
        the session, and ``check_assertions`` reports it if it never happened."""
        self._ledger.expect(errcode)

    def allow_violations(self) -> None:
        """Declare every violation of this mock intended (a test of the contract itself)."""
        self._ledger.allow_all()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot copy of every request received so far, failed ones included."""
        with self._lock:
            return list(self._requests)

    def messages(self) -> list[str]:
        """Texts actually delivered (HTTP 200, errcode 0), webhook and app, in arrival order."""
        with self._lock:
            return [r.message for r in self._requests if r.message is not None]

    def wait_for_messages(self, n: int, timeout: float = 10.0) -> list[str]:
        """Wait until at least ``n`` messages were delivered and return them all."""

        def enough() -> Optional[list[str]]:
            delivered = self.messages()
            return delivered if len(delivered) >= n else None

        return wait_until(enough, timeout=timeout, message=f"{n} delivered WeCom message(s)")

    def clear(self) -> None:
        """Forget recorded requests and expectations (faults stay; see ``reset``)."""
        with self._lock:
            self._requests.clear()
            self._expected.clear()

    def expect_message(self, substring: str) -> None:
        """Declare that some delivered message must contain ``substring``."""
        with self._lock:
            self._expected.append(substring)

    def check_assertions(self) -> None:
        """Raise AssertionError listing unmet expectations and requests to unknown endpoints."""
        with self._lock:
            delivered = self.messages()
            problems = [
                f"no delivered message contains {s!r}" for s in self._expected if not any(s in m for m in delivered)
            ]
            problems += [f"unexpected request {r.method} {r.path}" for r in self._requests if r.status == 404]
            problems += [f"expected violation errcode {code} never happened" for code in self._ledger.unmet()]
        if problems:
            raise AssertionError(
                "WeComMock expectations not met:\n  " + "\n  ".join(problems) + f"\ndelivered messages: {delivered!r}"
            )
