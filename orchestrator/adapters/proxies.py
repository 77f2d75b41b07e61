"""Which proxy an outgoing HTTP request takes, decided from the *merged* environment.

Why this module exists: `requests` and the OpenAI SDK's HTTP client read proxies from the process
environment only, but the playbook puts them in `~/.env` (`HTTP_PROXY`, `HTTPS_PROXY`,
`ALL_PROXY=socks5://…`, `NO_PROXY`), which the orchestrator reads itself (`envfile.EnvSource`).
So every client here is built with the environment's proxies stated explicitly and with the
library's own environment lookup switched off (`trust_env=False`): one rule, the same for both
clients, whichever of the two places a variable came from.

The rule is curl's: the scheme's own variable (`https_proxy` for an https URL, lower case before
upper case), else `all_proxy`; none when the host matches `no_proxy` (`*`, a host name or a
domain suffix with or without a leading dot, an IP address or CIDR block, optionally `:port`);
a proxy written without a scheme (`127.0.0.1:7890`) is an http:// one.

A proxy a client cannot use (socks support not installed, a scheme it does not speak) is one
`ProxySupportError` line naming the proxy (never its password) and the fix, not an ImportError
from inside the client: `proxy_problem` says it beforehand, for `doctor` too.
"""

from __future__ import annotations

import importlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import requests
from requests.utils import select_proxy

if TYPE_CHECKING:  # the SDK's client is imported only by the code that talks to OpenAI
    import httpx2


ProxyClient = Literal["requests", "httpx"]  # the WeCom client, the OpenAI SDK's client
# what each client speaks, and the module + extra its socks support needs
CLIENT_SCHEMES: dict[ProxyClient, frozenset[str]] = {
    "requests": frozenset({"http", "https", "socks4", "socks4a", "socks5", "socks5h"}),
    "httpx": frozenset({"http", "https", "socks5", "socks5h"}),
}
SOCKS_SUPPORT: dict[ProxyClient, tuple[str, str]] = {
    "requests": ("socks", "requests[socks]"),
    "httpx": ("socksio", "httpx2[socks]"),
}


class ProxySupportError(RuntimeError):
    """A proxy the client cannot use; the message is one line with the fix and no password."""


@dataclass(frozen=True)
class ProxyProblem:
    """Why a client cannot use a proxy (`what`, naming the proxy without its password) and the fix."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what} — {self.fix}"


def _variable(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """(the variable as spelled in `env`, its value) for `name` in either case, lower first."""
    for spelled in (name.lower(), name.upper()):
        value = (env.get(spelled) or "").strip()
        if value:
            return spelled, value
    return None


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    host = host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        name, want_port = entry, None
        if entry.count(":") == 1 and not entry.startswith("["):  # host:port (IPv6 needs brackets)
            name, _, port_text = entry.partition(":")
            want_port = int(port_text) if port_text.isdigit() else None
        name = name.strip("[]")
        if want_port is not None and want_port != port:
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = name.lstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


def proxy_for(url: str, env: Mapping[str, str]) -> str | None:
    """The proxy URL that `url` goes through under `env`, or None for a direct connection.

    >>> env = {"HTTPS_PROXY": "http://p:3128", "ALL_PROXY": "socks5://s:1080", "NO_PROXY": "localhost,.lan"}
    >>> proxy_for("https://qyapi.weixin.qq.com/cgi-bin/webhook/send", env)
    'http://p:3128'
    >>> proxy_for("http://example.com/", env)
    'socks5://s:1080'
    >>> proxy_for("http://nas.lan:8080/", env) is None
    True
    """
    chosen = proxy_variable(url, env)
    if chosen is None:
        return None
    return proxy_url(env[chosen])


def proxy_url(value: str) -> str:
    """A proxy variable's value as a URL: without a scheme it is an http:// proxy (curl's reading)."""
    value = value.strip()
    return value if "://" in value else f"http://{value}"


def proxy_variable(url: str, env: Mapping[str, str]) -> str | None:
    """The variable (as spelled in `env`) whose proxy `url` goes through, or None (direct).

    >>> proxy_variable("https://api.openai.com/v1", {"ALL_PROXY": "socks5://s:1080"})
    'ALL_PROXY'
    """
    parts = urlsplit(url)
    if parts.hostname is None:
        return None
    no_proxy = _variable(env, "no_proxy")
    if no_proxy and _bypassed(parts.hostname, parts.port, no_proxy[1]):
        return None
    chosen = _variable(env, f"{parts.scheme}_proxy") or _variable(env, "all_proxy")
    return chosen[0] if chosen else None


def proxy_problem(proxy: str | None, client: ProxyClient) -> ProxyProblem | None:
    """Why `client` cannot use `proxy`, or None when it can."""
    if not proxy:
        return None
    scheme = urlsplit(proxy).scheme.lower()
    shown = describe_proxy(proxy)
    if scheme not in CLIENT_SCHEMES[client]:
        speaks = ", ".join(f"{s}://" for s in sorted(CLIENT_SCHEMES[client]))
        return ProxyProblem(f"{shown}: the {client} client cannot use {scheme}:// proxies", f"use one of {speaks}")
    if scheme.startswith("socks"):
        module, extra = SOCKS_SUPPORT[client]
        try:
            importlib.import_module(module)
        except ImportError:
            return ProxyProblem(
                f"{shown}: SOCKS support for the {client} client is not installed ({module})", f"pip install '{extra}'"
            )
    return None


def requests_proxies(url: str, env: Mapping[str, str]) -> dict[str, str]:
    """`proxies=` for a `requests` call to `url` (empty: connect directly)."""
    proxy = proxy_for(url, env)
    return {"http": proxy, "https": proxy} if proxy else {}


class _ProxyCheckedSession(requests.Session):
    """Refuses a proxy requests cannot use with `proxy_problem`'s line (requests' own words,
    "Missing dependencies for SOCKS support.", name neither the proxy nor the package)."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        problem = proxy_problem(select_proxy(request.url or "", kwargs.get("proxies") or {}), "requests")
        if problem is not None:
            raise requests.exceptions.InvalidSchema(str(problem), request=request)
        return super().send(request, **kwargs)


def requests_session() -> requests.Session:
    """A session that uses only the proxies it is given, never the process environment's."""
    session = _ProxyCheckedSession()
    session.trust_env = False
    return session


def httpx_client(url: str, env: Mapping[str, str], timeout: float) -> httpx2.Client:
    """The OpenAI SDK's HTTP client for `url`, with the environment's proxy for it (if any).

    Raises ProxySupportError (one line) for a proxy it cannot use, never ImportError."""
    import httpx2

    proxy = proxy_for(url, env)
    problem = proxy_problem(proxy, "httpx")
    if problem:
        raise ProxySupportError(str(problem))
    return httpx2.Client(trust_env=False, proxy=proxy, timeout=timeout)


def describe_proxy(proxy: str | None) -> str:
    """The proxy as logs may show it: scheme, host and port, never a user or password.

    >>> describe_proxy("socks5://user:secret@127.0.0.1:7890")
    'socks5://127.0.0.1:7890'
    >>> describe_proxy(None)
    'direct'
    """
    if not proxy:
        return "direct"
    parts = urlsplit(proxy)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
