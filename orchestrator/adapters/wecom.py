"""WeCom (企业微信) delivery channels for the notifier: the group-robot webhook and the
self-built app (gettoken + message/send).

Why it looks like this:
- WeCom answers HTTP 200 for most failures and puts the verdict in the JSON `errcode`, so every
  reply's `errcode` is checked, not just the status line.
- Every failure becomes one `ChannelError` with a small `kind` vocabulary the notifier can act on
  (back off longer on "rate_limited", degrade on the rest) without parsing text.
- Webhook keys, app secrets and access tokens are registered with `redact` the moment they are
  known, and every error text is redacted, so a failure can be logged, audited or shown as-is.
- The app's access token is cached until shortly before it expires (WeCom limits gettoken calls)
  and `channels_from_env` hands back the same channel object while the config is unchanged, so
  re-reading the env file every few seconds does not throw that cache away.
- WeCom's published contract is followed, not just what a mock accepts: each message is cut to
  its channel's byte limit (`wecom_limits`), the webhook sends `markdown_v2` (it renders fenced
  code blocks, which the output tails are) and the app plain `markdown` (the only one it has);
  errcodes that will never succeed become kind "refused" with the table's fix (`wecom_errcodes`).
- Requests go through a session that ignores the process environment and uses the proxy that
  the *merged* environment (env file over process) names for the endpoint (`proxies`), so the
  playbook's proxies in `~/.env` apply; the proxy is part of `config_key`, so changing it
  rebuilds the channel.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

import requests

from orchestrator.adapters.proxies import proxy_for, proxy_problem, requests_session
from orchestrator.adapters.wecom_errcodes import Refusal, refusal
from orchestrator.adapters.wecom_limits import APP_MARKDOWN_LIMIT, WEBHOOK_LIMITS, fit
from orchestrator.clock import Clock, SystemClock
from orchestrator.redact import redact, register_secret

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://qyapi.weixin.qq.com"
RATE_LIMIT_ERRCODE = 45009
RATE_LIMIT_RETRY_AFTER = 60.0  # WeCom's limits are per minute
TOKEN_ERRCODES = frozenset({40014, 42001, 42009})  # invalid / expired access_token
TOKEN_MARGIN_SECONDS = 60.0  # refresh this long before WeCom says the token expires
DEFAULT_TOKEN_LIFETIME = 7200.0
#: The webhook's message type: `markdown_v2` renders fenced code blocks (the output tails).
WEBHOOK_MSGTYPE: Literal["markdown_v2"] = "markdown_v2"
#: Who gets the app's messages when none of WECOM_TOUSER / WECOM_TOPARTY / WECOM_TOTAG is set.
DEFAULT_TOUSER = "@all"
ChannelErrorKind = Literal["network", "timeout", "http", "errcode", "rate_limited", "token", "bad_reply", "refused"]
KINDS: tuple[ChannelErrorKind, ...] = (
    "network",
    "timeout",
    "http",
    "errcode",
    "rate_limited",
    "token",
    "bad_reply",
    "refused",
)


class ChannelError(Exception):
    """A send that did not reach WeCom or was refused by it. The message is always redacted.

    Kind "refused" is final (`refusal` says what it means and the fix); every other kind may
    work on a later try.
    """

    def __init__(
        self,
        channel: str,
        kind: ChannelErrorKind,
        detail: str,
        errcode: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        assert kind in KINDS, kind
        self.channel = channel
        self.kind: ChannelErrorKind = kind
        self.errcode = errcode
        self.retry_after = retry_after
        self.refusal: Refusal | None = refusal(errcode) if kind == "refused" else None
        self.message = redact(f"{channel} {kind}: {detail}")
        super().__init__(self.message)

    def __repr__(self) -> str:
        return (
            f"ChannelError(channel={self.channel!r}, kind={self.kind!r}, errcode={self.errcode!r}, "
            f"retry_after={self.retry_after!r}, message={self.message!r})"
        )


class Channel(Protocol):
    name: str

    def send(self, title: str, markdown: str) -> None:
        """Deliver one message or raise ChannelError."""


def _content(title: str, markdown: str) -> str:
    return f"## {title}\n{markdown}"


def _proxies(proxy: str | None) -> dict[str, str]:
    """`proxies=` for requests; the proxy's password (if any) is registered as a secret first."""
    if not proxy:
        return {}
    password = urlsplit(proxy).password
    register_secret(password)
    return {"http": proxy, "https": proxy}


def _check_base(api_base: str) -> tuple[str, str, str]:
    parts = urlsplit(api_base.strip().rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("WECOM_API_BASE must look like http://host:port")
    return parts.scheme, parts.netloc, parts.path


def _api_root(api_base: str | None) -> str:
    """Scheme, host and path prefix the app's endpoints hang off."""
    return urlunsplit(_check_base(api_base) + ("", "")) if api_base else DEFAULT_API_BASE


def _rebase(url: str, api_base: str | None) -> str:
    """Point `url` at `api_base` (tests' mock server), keeping path and query."""
    if not api_base:
        return url
    scheme, netloc, prefix = _check_base(api_base)
    parts = urlsplit(url)
    return urlunsplit((scheme, netloc, prefix + parts.path, parts.query, ""))


@dataclass(frozen=True)
class _Transport:
    """One channel's HTTP side: a session blind to the process environment, and its proxy."""

    channel: str
    timeout: float
    proxy: str | None = field(default=None, repr=False)
    session: requests.Session = field(default_factory=requests_session, repr=False)

    def call(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        refused_kind: ChannelErrorKind = "errcode",
    ) -> dict[str, Any]:
        """One HTTP exchange turned into a JSON reply with errcode 0, or a ChannelError.

        `from None` keeps the original requests exception (whose text holds the URL) out of
        tracebacks. A proxy `requests` cannot use (a scheme it does not speak, socks support not
        installed) is said in one line with the fix instead of the library's exception.
        """
        problem = proxy_problem(self.proxy, "requests")
        if problem is not None:
            raise ChannelError(self.channel, "network", f"proxy unusable: {problem}")
        try:
            resp = self.session.request(
                method, url, params=params, json=body, timeout=self.timeout, proxies=_proxies(self.proxy)
            )
        except requests.Timeout as exc:  # before ConnectionError: ConnectTimeout is both
            raise ChannelError(
                self.channel, "timeout", f"no reply within {self.timeout:g}s ({type(exc).__name__})"
            ) from None
        except requests.ConnectionError as exc:
            raise ChannelError(self.channel, "network", f"cannot reach WeCom: {exc}") from None
        except requests.RequestException as exc:
            raise ChannelError(self.channel, "network", f"request failed: {type(exc).__name__}: {exc}") from None
        return _verdict(self.channel, resp, refused_kind)


def _verdict(channel: str, resp: requests.Response, refused_kind: ChannelErrorKind) -> dict[str, Any]:
    """WeCom's reply as a dict with errcode 0, or the ChannelError it amounts to."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    errcode = data.get("errcode") if isinstance(data, dict) else None
    errcode = errcode if isinstance(errcode, int) and not isinstance(errcode, bool) else None
    if resp.status_code >= 400:
        raise ChannelError(channel, "http", f"HTTP {resp.status_code}: {resp.text[:200]}", errcode=errcode)
    if not isinstance(data, dict) or errcode is None:
        raise ChannelError(
            channel, "bad_reply", f"HTTP {resp.status_code}, not a WeCom JSON reply: {resp.text[:200]!r}"
        )
    if errcode == 0:
        return data
    detail = f"errcode {errcode}: {data.get('errmsg', '')}"
    if errcode == RATE_LIMIT_ERRCODE:
        raise ChannelError(channel, "rate_limited", detail, errcode=errcode, retry_after=RATE_LIMIT_RETRY_AFTER)
    final = refusal(errcode)
    if final is not None:
        raise ChannelError(channel, "refused", f"{detail} ({final.meaning})", errcode=errcode)
    kind: ChannelErrorKind = "token" if errcode in TOKEN_ERRCODES else refused_kind
    raise ChannelError(channel, kind, detail, errcode=errcode)


def _rate_key(kind: str, identity: str) -> str:
    """What WeCom's per-minute limit counts against, without the secret in it (a short hash)."""
    return f"{kind}:{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


@dataclass(eq=False)
class WebhookChannel:
    """A group robot: one POST per message, the key in the URL is the only credential."""

    url: str = field(repr=False)
    timeout: float
    api_base: str | None = None
    proxy: str | None = field(default=None, repr=False)
    name: str = field(default="webhook", init=False)

    def __post_init__(self) -> None:
        register_secret(self.url.strip())  # also registers the bare key
        parts = urlsplit(self.url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"WECOM_WEBHOOK must be an http(s) URL like {DEFAULT_API_BASE}/cgi-bin/webhook/send?key=..."
            )
        self._endpoint = _rebase(self.url.strip(), self.api_base)
        self._transport = _Transport(self.name, self.timeout, self.proxy)
        self.rate_key = _rate_key("webhook", parse_qs(parts.query).get("key", [self.url.strip()])[0])

    @property
    def config_key(self) -> tuple[Any, ...]:
        """Identity of the configuration (contains the secret URL: compare it, never log it)."""
        return ("webhook", self.url, self.api_base, self.timeout, self.proxy)

    @property
    def endpoint(self) -> str:
        """The URL this channel posts to (secret: it holds the key)."""
        return self._endpoint

    def send(self, title: str, markdown: str) -> None:
        content = fit(_content(title, markdown), WEBHOOK_LIMITS[WEBHOOK_MSGTYPE])
        self._transport.call(
            "POST", self._endpoint, {"msgtype": WEBHOOK_MSGTYPE, WEBHOOK_MSGTYPE: {"content": content}}
        )


def recipient_ids(value: str) -> str:
    """WeCom's `a|b|c` form of a recipients setting; `|`, `,` and spaces all separate ids."""
    return "|".join(part for part in re.split(r"[|,\s]+", value) if part)


@dataclass(eq=False)
class AppChannel:
    """A self-built app: an access token from gettoken, then message/send to its recipients.

    With none of `touser` / `toparty` / `totag` given, it sends to every member it can see
    (`touser="@all"`), as before recipients could be configured.
    """

    corp_id: str
    agent_id: str
    secret: str = field(repr=False)
    timeout: float
    api_base: str | None = None
    clock: Clock | None = field(default=None, repr=False)
    touser: str = ""
    toparty: str = ""
    totag: str = ""
    proxy: str | None = field(default=None, repr=False)
    name: str = field(default="app", init=False)

    def __post_init__(self) -> None:
        register_secret(self.secret)
        try:
            self._agent_id = int(self.agent_id)
        except ValueError:
            raise ValueError("WECOM_AGENT_ID must be the app's numeric AgentId") from None
        if not (self.touser or self.toparty or self.totag):
            self.touser = DEFAULT_TOUSER
        self._base = _api_root(self.api_base)
        self._clock: Clock = self.clock or SystemClock()
        self._transport = _Transport(self.name, self.timeout, self.proxy)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_valid_until = 0.0
        self.rate_key = f"app:{self.corp_id}:{self.agent_id}"

    @property
    def config_key(self) -> tuple[Any, ...]:
        """Identity of the configuration (contains the secret: compare it, never log it)."""
        recipients = (self.touser, self.toparty, self.totag)
        return ("app", self.corp_id, self.agent_id, self.secret, self.api_base, recipients, self.timeout, self.proxy)

    @property
    def recipients(self) -> dict[str, str]:
        """The `touser` / `toparty` / `totag` fields sent, only the ones that are set."""
        fields = {"touser": self.touser, "toparty": self.toparty, "totag": self.totag}
        return {name: ids for name, ids in fields.items() if ids}

    def _access_token(self) -> str:
        with self._lock:
            if self._token is not None and self._clock.monotonic() < self._token_valid_until:
                return self._token
            data = self._transport.call(
                "GET",
                f"{self._base}/cgi-bin/gettoken",
                params={"corpid": self.corp_id, "corpsecret": self.secret},
                refused_kind="token",
            )
            token, lifetime = data.get("access_token"), data.get("expires_in", DEFAULT_TOKEN_LIFETIME)
            if not isinstance(token, str) or not token or not isinstance(lifetime, (int, float)):
                raise ChannelError(self.name, "bad_reply", "gettoken reply lacks access_token/expires_in")
            register_secret(token)
            self._token = token
            self._token_valid_until = self._clock.monotonic() + max(0.0, float(lifetime) - TOKEN_MARGIN_SECONDS)
            return token

    def _forget(self, token: str) -> None:
        with self._lock:
            if self._token == token:  # another thread may already hold a fresh one
                self._token = None

    def _post(self, token: str, body: dict[str, Any]) -> None:
        self._transport.call("POST", f"{self._base}/cgi-bin/message/send?access_token={token}", body)

    def send(self, title: str, markdown: str) -> None:
        content = fit(_content(title, markdown), APP_MARKDOWN_LIMIT)
        body = {**self.recipients, "msgtype": "markdown", "agentid": self._agent_id, "markdown": {"content": content}}
        token = self._access_token()
        try:
            self._post(token, body)
        except ChannelError as err:
            if err.errcode not in TOKEN_ERRCODES:
                raise
            self._forget(token)  # WeCom revoked or expired it early: one fresh token, one retry
            self._post(self._access_token(), body)


_warned: set[str] = set()


def channels_from_env(
    env: Mapping[str, str], timeout: float = 5.0, previous: Sequence[Channel] = (), clock: Clock | None = None
) -> list[Channel]:
    """The configured channels, webhook first, reusing objects from `previous` with the same config.

    Each channel gets the proxy that `env` (the merged environment) names for the URL it calls,
    so proxies in the env file apply although `requests` itself reads only the process's.
    A malformed value skips that channel with one warning (naming the variable, never its value)
    instead of raising, so one bad setting cannot stop the other channel or the notifier loop.
    """

    def value(name: str) -> str:
        return (env.get(name) or "").strip()

    api_base = value("WECOM_API_BASE") or None

    def webhook() -> Channel:
        url = value("WECOM_WEBHOOK")
        return WebhookChannel(url, timeout, api_base, proxy=proxy_for(_rebase(url, api_base), env))

    def app() -> Channel:
        return AppChannel(
            value("WECOM_CORP_ID"),
            value("WECOM_AGENT_ID"),
            value("WECOM_APP_SECRET"),
            timeout,
            api_base,
            clock=clock,
            touser=recipient_ids(value("WECOM_TOUSER")),
            toparty=recipient_ids(value("WECOM_TOPARTY")),
            totag=recipient_ids(value("WECOM_TOTAG")),
            proxy=proxy_for(_api_root(api_base), env),
        )

    builders: list[Callable[[], Channel]] = []
    if value("WECOM_WEBHOOK"):
        builders.append(webhook)
    if value("WECOM_CORP_ID") and value("WECOM_AGENT_ID") and value("WECOM_APP_SECRET"):
        builders.append(app)
    wanted: list[Channel] = []
    for build in builders:
        try:
            wanted.append(build())
        except ValueError as exc:
            problem = redact(str(exc))
            if problem not in _warned:
                _warned.add(problem)
                log.warning("WeCom channel skipped: %s", problem)
    reusable = {key: ch for ch in previous if (key := getattr(ch, "config_key", None)) is not None}
    return [reusable.get(getattr(ch, "config_key", None), ch) for ch in wanted]


def describe(channels: Sequence[Channel]) -> str:
    """Channel names only, safe for logs: "webhook, app" or "none"."""
    return ", ".join(ch.name for ch in channels) or "none"
