"""Which proxy an outgoing HTTP request takes, decided from the *merged* environment.

Why this module exists: `requests` and the OpenAI SDK's HTTP client read proxies from the process
environment only, but the playbook puts them in `~/.env` (`HTTP_PROXY`, `HTTPS_PROXY`,
`ALL_PROXY=socks5://…`, `NO_PROXY`), which the orchestrator reads itself (`envfile.EnvSource`).
So every client here is built with the environment's proxies stated explicitly and with the
library's own environment lookup switched off (`trust_env=False`): one rule, the same for both
clients, whichever of the two places a variable came from.

The rule is curl's: the scheme's own variable (`https_proxy` for an https URL, lower case before
upper case), else `all_proxy`; none when the host matches `no_proxy` (`*`, a host name or a
domain suffix with or without a leading dot, an IP address or CIDR block, optionally `:port`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests

if TYPE_CHECKING:  # the SDK's client is imported only by the code that talks to OpenAI
    import httpx2


def _variable(env: Mapping[str, str], name: str) -> str:
    return (env.get(name.lower()) or env.get(name.upper()) or "").strip()


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
    parts = urlsplit(url)
    if parts.hostname is None:
        return None
    if _bypassed(parts.hostname, parts.port, _variable(env, "no_proxy")):
        return None
    return _variable(env, f"{parts.scheme}_proxy") or _variable(env, "all_proxy") or None


def requests_proxies(url: str, env: Mapping[str, str]) -> dict[str, str]:
    """`proxies=` for a `requests` call to `url` (empty: connect directly)."""
    proxy = proxy_for(url, env)
    return {"http": proxy, "https": proxy} if proxy else {}


def requests_session() -> requests.Session:
    """A session that uses only the proxies it is given, never the process environment's."""
    session = requests.Session()
    session.trust_env = False
    return session


def httpx_client(url: str, env: Mapping[str, str], timeout: float) -> httpx2.Client:
    """The OpenAI SDK's HTTP client for `url`, with the environment's proxy for it (if any)."""
    import httpx2

    return httpx2.Client(trust_env=False, proxy=proxy_for(url, env), timeout=timeout)


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
