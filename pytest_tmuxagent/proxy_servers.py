"""Real local proxies for tests: an HTTP proxy and a SOCKS5 proxy on 127.0.0.1, port 0.

Why real ones: what a proxy setting changes is which socket a client opens and what it says
on it (an absolute URI, a CONNECT line, a SOCKS handshake, with or without a password). Only a
server that speaks those protocols shows that `WeCom` and `OpenAI` traffic really went through
the proxy the environment names, and that `NO_PROXY` really bypasses it. Each proxy records
where every request or tunnel went (`host:port` as the client asked for it), so a test asserts
the route, not just the answer.

No pytest needed: `with HttpProxy() as proxy:` / `Socks5Proxy(username=..., password=...)`,
or `.start()` / `.stop()`; the plugin's `tmuxagent_http_proxy` and `tmuxagent_socks_proxy`
fixtures hand out started ones. `refusing_port()` is the address of a proxy that is down.
"""

from __future__ import annotations

import contextlib
import ipaddress
import selectors
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal, Optional, TypeVar
from urllib.parse import quote, urlsplit

from .waiting import wait_until

__all__ = ["HttpProxy", "ProxiedConnection", "Socks5Proxy", "refusing_port"]

ConnectionKind = Literal["forward", "connect", "socks5"]
AddressType = Literal["ipv4", "ipv6", "domain"]
UPSTREAM_TIMEOUT = 5.0
HEAD_LIMIT = 64 * 1024
_P = TypeVar("_P", bound="_ProxyServer")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "upgrade"}


@dataclass(frozen=True)
class ProxiedConnection:
    """One request (HTTP forwarding) or tunnel (CONNECT, SOCKS5) as the proxy saw it.

    `target` is `host:port` as the client named it; `address_type` says whether a SOCKS client
    sent a name (`socks5h://`: the proxy resolves it) or an address it resolved itself; `error`
    is why the proxy could not reach the target (None: it did)."""

    kind: ConnectionKind
    target: str
    method: Optional[str] = None
    path: Optional[str] = None
    address_type: Optional[AddressType] = None
    username: Optional[str] = None
    error: Optional[str] = None


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("client closed the connection mid-handshake")
        data += chunk
    return data


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """An HTTP head (through the blank line) and whatever arrived after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the end of the HTTP head")
        data += chunk
        if len(data) > HEAD_LIMIT:
            raise ConnectionError("HTTP head too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _relay(client: socket.socket, upstream: socket.socket, stopping: threading.Event) -> None:
    """Copy bytes both ways until either side closes (or the proxy stops)."""
    other = {client: upstream, upstream: client}
    with selectors.DefaultSelector() as selector:
        for sock in other:
            selector.register(sock, selectors.EVENT_READ)
        while not stopping.is_set():
            for key, _ in selector.select(timeout=0.1):
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                data = source.recv(65536)
                if not data:
                    return
                other[source].sendall(data)


def _connect(host: str, port: int) -> socket.socket:
    return socket.create_connection((host, port), timeout=UPSTREAM_TIMEOUT)


class _ProxyServer:
    """What both proxies share: the listening thread, the record, start/stop/`with`."""

    scheme: ClassVar[str]

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[ProxiedConnection] = []
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: Optional[socketserver.ThreadingTCPServer] = None
        self._port = 0

    # -- lifecycle
    def start(self: _P) -> _P:
        """Listen on 127.0.0.1 (a free port the first time, the same one after a stop)."""
        with self._lock:
            if self._server is not None:
                return self
            proxy = self

            class Handler(socketserver.BaseRequestHandler):
                def handle(self) -> None:
                    proxy._serve(self.request)

            server = socketserver.ThreadingTCPServer(("127.0.0.1", self._port), Handler, bind_and_activate=False)
            server.allow_reuse_address = True
            server.daemon_threads = True
            server.server_bind()
            server.server_activate()
            self._server, self._port = server, server.server_address[1]
            self._stopping.clear()
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{self.scheme}-proxy", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open tunnel."""
        self._stopping.set()
        with self._lock:
            server, self._server = self._server, None
            sockets, self._open = list(self._open), set()
        if server is not None:
            server.shutdown()
            server.server_close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    __enter__ = start

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- addresses
    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    @property
    def url(self) -> str:
        """The proxy URL for HTTP_PROXY / ALL_PROXY, e.g. `http://127.0.0.1:40123`."""
        return self.url_for(self.scheme)

    def url_for(self, scheme: str) -> str:
        return f"{scheme}://{self._userinfo()}127.0.0.1:{self.port}"

    def _userinfo(self) -> str:
        return ""

    # -- the record
    @property
    def connections(self) -> list[ProxiedConnection]:
        """Every request or tunnel so far, oldest first (a copy)."""
        with self._lock:
            return list(self._records)

    def targets(self) -> list[str]:
        """`host:port` of every request or tunnel that reached its target."""
        return [c.target for c in self.connections if c.error is None]

    def wait_for_connections(self, count: int, timeout: float = 10.0) -> list[ProxiedConnection]:
        def enough() -> Optional[list[ProxiedConnection]]:
            seen = self.connections
            return seen if len(seen) >= count else None

        return wait_until(enough, timeout=timeout, message=f"{count} connection(s) through {type(self).__name__}")

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def _record(self, record: ProxiedConnection) -> None:
        with self._lock:
            self._records.append(record)

    # -- serving
    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        try:
            self._handle(client)
        except (OSError, ValueError):
            pass  # a client that hung up or spoke garbage: nothing to answer
        finally:
            with self._lock:
                self._open.discard(client)
            with contextlib.suppress(OSError):
                client.close()

    def _handle(self, client: socket.socket) -> None:
        raise NotImplementedError

    def _tunnel(self, client: socket.socket, upstream: socket.socket, first: bytes = b"") -> None:
        self._track(upstream)
        try:
            upstream.settimeout(None)
            if first:
                upstream.sendall(first)
            _relay(client, upstream, self._stopping)
        finally:
            with self._lock:
                self._open.discard(upstream)
            upstream.close()


class HttpProxy(_ProxyServer):
    """An HTTP proxy: absolute-URI requests (`GET http://host/path`) are forwarded, one per
    connection (`Connection: close`); `CONNECT host:port` opens a tunnel. Unreachable target:
    502, recorded with the error."""

    scheme = "http"

    def _handle(self, client: socket.socket) -> None:
        head, rest = _read_head(client)
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        if method == "CONNECT":
            self._connect_tunnel(client, target, rest)
        else:
            self._forward(client, method, target, version, header_lines, rest)

    def _connect_tunnel(self, client: socket.socket, target: str, rest: bytes) -> None:
        host, _, port = target.rpartition(":")
        host = host.strip("[]")
        try:
            upstream = _connect(host, int(port))
        except OSError as exc:
            self._record(ProxiedConnection("connect", target, "CONNECT", error=str(exc)))
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        self._record(ProxiedConnection("connect", target, "CONNECT"))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._tunnel(client, upstream, rest)

    def _forward(
        self, client: socket.socket, method: str, url: str, version: str, header_lines: list[str], rest: bytes
    ) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 80
        target = f"{host}:{port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [line for line in header_lines if line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP]
        try:
            upstream = _connect(host, port)
        except OSError as exc:
            self._record(ProxiedConnection("forward", target, method, path, error=str(exc)))
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        self._record(ProxiedConnection("forward", target, method, path))
        lines = [f"{method} {path} {version}", *headers, "Connection: close"]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        with upstream:
            upstream.sendall(head + rest + self._body(client, headers, len(rest)))
            reply_head, reply_rest = _read_head(upstream)
            status, *reply_headers = reply_head.decode("latin-1").split("\r\n")
            kept = [h for h in reply_headers if h.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP]
            client.sendall(("\r\n".join([status, *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1"))
            client.sendall(reply_rest)
            while chunk := upstream.recv(65536):  # the target closes after its reply (Connection: close)
                client.sendall(chunk)

    @staticmethod
    def _body(client: socket.socket, headers: list[str], have: int) -> bytes:
        """The rest of a request body of known length (the clients here always send one)."""
        lengths = [h.split(":", 1)[1] for h in headers if h.split(":", 1)[0].strip().lower() == "content-length"]
        wanted = int(lengths[0]) if lengths else 0
        return _recv_exact(client, wanted - have) if wanted > have else b""


_SOCKS_VERSION = 5
_NO_AUTH, _USER_PASSWORD, _NO_METHOD = 0x00, 0x02, 0xFF
_CONNECT = 0x01
_REPLY_OK, _REPLY_REFUSED, _REPLY_UNSUPPORTED = 0x00, 0x05, 0x07


class Socks5Proxy(_ProxyServer):
    """A SOCKS5 proxy (RFC 1928): CONNECT only, no authentication, or username/password
    (RFC 1929) when both are given. A wrong password is refused and counted in
    `refused_logins`; the target is connected as sent (a name is resolved here)."""

    scheme = "socks5"

    def __init__(self, username: Optional[str] = None, password: Optional[str] = None) -> None:
        super().__init__()
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.username, self.password = username, password
        self.refused_logins: list[str] = []  # usernames whose login was refused

    def _userinfo(self) -> str:
        if self.username is None or self.password is None:
            return ""
        return f"{quote(self.username, safe='')}:{quote(self.password, safe='')}@"

    def _handle(self, client: socket.socket) -> None:
        version, count = _recv_exact(client, 2)
        if version != _SOCKS_VERSION:
            return
        methods = _recv_exact(client, count)
        wanted = _NO_AUTH if self.username is None else _USER_PASSWORD
        if wanted not in methods:
            client.sendall(bytes([_SOCKS_VERSION, _NO_METHOD]))
            return
        client.sendall(bytes([_SOCKS_VERSION, wanted]))
        user = self._login(client) if wanted == _USER_PASSWORD else None
        if wanted == _USER_PASSWORD and user is None:
            return
        _, command, _, address_kind = _recv_exact(client, 4)
        host, address_type = self._address(client, address_kind)
        (port,) = struct.unpack("!H", _recv_exact(client, 2))
        target = f"[{host}]:{port}" if address_type == "ipv6" else f"{host}:{port}"
        if command != _CONNECT:
            client.sendall(self._reply(_REPLY_UNSUPPORTED))
            return
        try:
            upstream = _connect(host, port)
        except OSError as exc:
            self._record(ProxiedConnection("socks5", target, address_type=address_type, username=user, error=str(exc)))
            client.sendall(self._reply(_REPLY_REFUSED))
            return
        self._record(ProxiedConnection("socks5", target, address_type=address_type, username=user))
        client.sendall(self._reply(_REPLY_OK))
        self._tunnel(client, upstream)

    def _login(self, client: socket.socket) -> Optional[str]:
        _, length = _recv_exact(client, 2)
        user = _recv_exact(client, length).decode("utf-8", "replace")
        (length,) = _recv_exact(client, 1)
        password = _recv_exact(client, length).decode("utf-8", "replace")
        if user == self.username and password == self.password:
            client.sendall(b"\x01\x00")
            return user
        with self._lock:
            self.refused_logins.append(user)
        client.sendall(b"\x01\x01")
        return None

    @staticmethod
    def _address(client: socket.socket, kind: int) -> tuple[str, AddressType]:
        if kind == 0x01:
            return str(ipaddress.IPv4Address(_recv_exact(client, 4))), "ipv4"
        if kind == 0x04:
            return str(ipaddress.IPv6Address(_recv_exact(client, 16))), "ipv6"
        if kind == 0x03:
            (length,) = _recv_exact(client, 1)
            return _recv_exact(client, length).decode("idna"), "domain"
        raise ValueError(f"unknown SOCKS5 address type {kind}")

    @staticmethod
    def _reply(code: int) -> bytes:
        return bytes([_SOCKS_VERSION, code, 0, 0x01, 0, 0, 0, 0, 0, 0])


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A 127.0.0.1 port that refuses connections (bound, never listening) while the block runs:
    where a proxy that is down would be, without another process taking the port meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
