"""The dashboard's HTTP server (stdlib only).

Routes:
  /                 the page (static HTML + JS; every value is rendered as text)
  /api/state        everything the page shows, as JSON
  /api/sessions     the sessions; /api/sessions/<name> one of them (name URL-quoted)
  /api/events       recent audit events (?limit=N&session=S)
  /api/notifications  notification health and outbox size
  /api/stream       Server-Sent Events: a `state` event whenever the state changes
  /metrics          the dashboard's own Prometheus metrics
  /healthz          liveness: 200 when the state DB is readable, else 503 (never needs the token)

Every route, /healthz included, first checks the `Host` header: only the bound address, `localhost`,
the names given with `allowed_hosts` (`--allow-host`) and, on a wildcard bind, any literal address
and this machine's hostname are answered; any other name gets 421 and no data. That closes DNS
rebinding: a page on evil.example whose name is re-pointed at 127.0.0.1 still sends
`Host: evil.example`. A request without `Host` (HTTP/1.0, a probe) is answered: browsers always send one.

A background thread rebuilds the state every `interval` seconds and wakes the
SSE streams when it changed. With a token, every route but /healthz needs
`Authorization: Bearer <token>`, the `tmuxagent_token` cookie, or `?token=` once
(which sets the cookie and redirects to the same page without it).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from orchestrator.clock import parse_iso_utc
from orchestrator.config import SessionConfig
from orchestrator.dashboard.state import build_state, tail_events
from orchestrator.state.snapshot import Snapshot, StateSnapshot

log = logging.getLogger("orchestrator.dashboard")

COOKIE = "tmuxagent_token"
KEEPALIVE_SECONDS = 15.0
STATIC = {"/static/app.js": "application/javascript; charset=utf-8", "/static/app.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
ROUTES = (
    "/",
    "/static",
    "/api/state",
    "/api/sessions",
    "/api/events",
    "/api/notifications",
    "/api/stream",
    "/metrics",
    "/healthz",
)


HOST_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.\-]*[a-z0-9_])?")


def _host_part(header: str) -> str | None:
    """The host of a `Host` header (lower case, no port, no trailing dot), or None when malformed."""
    text = header.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :] if end > 0 else ""
        if end < 0 or (rest and not re.fullmatch(r":\d{1,5}", rest)):
            return None
        return host if ":" in host else None
    host, _, port = text.partition(":")
    if (port or text.endswith(":")) and not port.isdigit():
        return None
    host = host.rstrip(".") if host != "." else host
    return host if HOST_NAME.fullmatch(host) else None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def host_allowed(header: str, bound: str, names: Iterable[str]) -> bool:
    """Whether a request with this `Host` is for this dashboard: the bound address (any literal
    address on a wildcard bind: a literal cannot be rebound), or one of `names`."""
    host = _host_part(header)
    if host is None:
        return False
    address, bound_address = _ip(host), _ip(bound)
    if address is not None:
        return bound_address is not None and (bound_address.is_unspecified or address == bound_address)
    return host in {n.strip().lower().rstrip(".") for n in names}


def _static(name: str) -> bytes:
    return resources.files("orchestrator.dashboard").joinpath("static", name).read_bytes()


def _state_key(state: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in state.items() if k != "generated_at"}, sort_keys=True, default=str)


class StateHub:
    """The latest state, rebuilt on a timer; SSE streams wait here for a newer version."""

    def __init__(self, build: Callable[[], dict[str, Any]], interval: float) -> None:
        self.build = build
        self.interval = interval
        self.version = 0
        self.state: dict[str, Any] = {}
        self.payload = "{}"
        self._key = ""
        self._cond = threading.Condition()
        self.stopping = threading.Event()

    def refresh(self) -> tuple[int, dict[str, Any]]:
        state = self.build()
        key = _state_key(state)
        with self._cond:
            if key != self._key or not self.version:
                self._key, self.state, self.payload = key, state, json.dumps(state, ensure_ascii=False)
                self.version += 1
                self._cond.notify_all()
            return self.version, state

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.refresh()
            except Exception:  # a bad read must not stop live updates
                log.exception("dashboard state refresh failed")

    def wait_newer(self, version: int, timeout: float) -> tuple[int, str]:
        with self._cond:
            self._cond.wait_for(lambda: self.version > version or self.stopping.is_set(), timeout=timeout)
            return self.version, self.payload

    def stop(self) -> None:
        self.stopping.set()
        with self._cond:
            self._cond.notify_all()


class DashboardMetrics:
    """The dashboard's own requests and streams, plus a few gauges read from the state."""

    def __init__(self, hub: StateHub) -> None:
        self.hub = hub
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tmuxagent_dashboard_http_requests",
            "Dashboard HTTP requests by route and code.",
            ["route", "code"],
            registry=self.registry,
        )
        self.sse_clients = Gauge("tmuxagent_dashboard_sse_clients", "Open live-update streams.", registry=self.registry)
        self.registry.register(_StateCollector(hub))


class _StateCollector:
    def __init__(self, hub: StateHub) -> None:
        self.hub = hub

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self.hub.state
        sessions = state.get("sessions", [])
        yield GaugeMetricFamily(
            "tmuxagent_dashboard_state_ok",
            "1 when the last read of the state DB worked.",
            value=0 if state.get("error") or not state else 1,
        )
        yield GaugeMetricFamily("tmuxagent_dashboard_sessions", "Sessions in the state DB.", value=len(sessions))
        age = GaugeMetricFamily(
            "tmuxagent_dashboard_heartbeat_age_seconds",
            "Seconds since the orchestrator last wrote the session's heartbeat.",
            labels=["session"],
        )
        now = parse_iso_utc(state["generated_at"]) if state.get("generated_at") else 0.0
        for s in sessions:
            try:
                age.add_metric([s["name"]], max(0.0, now - parse_iso_utc(s["heartbeat"] or "")))
            except ValueError:
                continue
        yield age


@dataclass
class DashboardApp:
    db: Path
    audit_log: Path
    token: str | None = None
    interval: float = 1.0
    event_limit: int = 40
    sessions: tuple[SessionConfig, ...] = ()  # the config's sessions, when known: their kind and provider
    allowed_hosts: tuple[str, ...] = ()  # names besides the bound address and localhost (`--allow-host`)
    dsn: str | None = None  # a fleet's PostgreSQL database, shown instead of the `db` file

    def __post_init__(self) -> None:
        self.snapshot: Snapshot
        if self.dsn:  # psycopg only for a fleet
            from orchestrator.state.pg_snapshot import PgSnapshot

            self.snapshot = PgSnapshot(self.dsn)
            self.db = self.snapshot.path
        else:
            self.snapshot = StateSnapshot(Path(self.db))
        configs = {s.name: s for s in self.sessions}
        self.hub = StateHub(
            lambda: build_state(self.snapshot, Path(self.audit_log), self.event_limit, configs=configs), self.interval
        )
        self.metrics = DashboardMetrics(self.hub)
        self.pages = {"/": _static("index.html"), **{path: _static(path.rsplit("/", 1)[1]) for path in STATIC}}

    def authorized(self, handler: Handler, query: dict[str, list[str]]) -> bool:
        if not self.token:
            return True
        offered = [
            handler.headers.get("Authorization", "").removeprefix("Bearer ").strip(),
            query.get("token", [""])[0],
        ]
        try:
            cookie = SimpleCookie(handler.headers.get("Cookie", ""))
        except CookieError:
            cookie = SimpleCookie()
        if COOKIE in cookie:
            offered.append(cookie[COOKIE].value)
        return any(self.token_matches(o) for o in offered)

    def token_matches(self, offered: str) -> bool:
        """The offered text is the configured token (False when none is configured)."""
        return bool(self.token and offered and hmac.compare_digest(offered.encode(), self.token.encode()))


class Handler(BaseHTTPRequestHandler):
    server_version = "tmuxagent-dashboard"
    app: DashboardApp

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # responses -------------------------------------------------------------------------
    def _send(self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.app.metrics.requests.labels(route=self._route(), code=str(code)).inc()

    def _json(self, data: Any, code: int = 200) -> None:
        self._send(code, json.dumps(data, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def _route(self) -> str:
        path = urlsplit(self.path).path
        return next((r for r in ROUTES if path == r or (r != "/" and path.startswith(r + "/"))), "other")

    # requests --------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        host = self.headers.get("Host")
        if host is not None and not cast("DashboardServer", self.server).answers_host(host):
            return self._json(
                {"error": "misdirected request: this dashboard does not answer to that Host (see --allow-host)"},
                HTTPStatus.MISDIRECTED_REQUEST,
            )
        if path == "/healthz":
            return self._healthz()
        if path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        if not self.app.authorized(self, query):
            return self._json(
                {"error": "unauthorized: pass the dashboard token (Authorization: Bearer, or ?token=)"},
                HTTPStatus.UNAUTHORIZED,
            )
        if "token" in query and path in self.app.pages:
            rest = urlencode({k: v for k, v in query.items() if k != "token"}, doseq=True)
            headers = {"Location": path + (f"?{rest}" if rest else "")}
            if self.app.token_matches(query["token"][0]):
                # the configured token, never the offered text: that may carry CR/LF (header injection)
                headers["Set-Cookie"] = f"{COOKIE}={self.app.token}; Path=/; HttpOnly; SameSite=Strict"
            return self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", headers)
        if path in self.app.pages:
            kind = STATIC.get(path, "text/html; charset=utf-8")
            return self._send(200, self.app.pages[path], kind)
        if path == "/api/stream":
            return self._stream()
        if path == "/metrics":
            return self._send(200, generate_latest(self.app.metrics.registry), CONTENT_TYPE_LATEST)
        return self._api(path, query)

    def _api(self, path: str, query: dict[str, list[str]]) -> None:
        _, state = self.app.hub.refresh()
        if path == "/api/state":
            return self._json(state)
        if path == "/api/sessions":
            return self._json(state["sessions"])
        if path.startswith("/api/sessions/"):
            name = unquote(path[len("/api/sessions/") :])
            found = [s for s in state["sessions"] if s["name"] == name]
            return self._json(found[0]) if found else self._json({"error": f"no session {name!r}"}, 404)
        if path == "/api/notifications":
            return self._json(state["notifications"])
        if path == "/api/events":
            return self._events(query)
        return self._json({"error": "not found", "routes": list(ROUTES)}, HTTPStatus.NOT_FOUND)

    def _events(self, query: dict[str, list[str]]) -> None:
        try:
            limit = max(1, min(1000, int(query.get("limit", ["50"])[0])))
        except ValueError:
            return self._json({"error": "limit must be a number"}, HTTPStatus.BAD_REQUEST)
        session = query.get("session", [None])[0]
        events = tail_events(Path(self.app.audit_log), limit if session is None else 1000)
        if session is not None:
            events = [e for e in events if e.get("session") == session][:limit]
        return self._json(events)

    def _healthz(self) -> None:
        _, state = self.app.hub.refresh()
        ok = not state.get("error")
        self._json(
            {
                "status": "ok" if ok else "unavailable",
                "db": state["db"],
                "error": state.get("error"),
                "sessions": len(state["sessions"]),
            },
            200 if ok else HTTPStatus.SERVICE_UNAVAILABLE,
        )

    def _stream(self) -> None:
        hub = self.app.hub
        version, _ = hub.refresh()
        self.send_response(200)
        for key, value in {
            **SECURITY_HEADERS,
            "Content-Type": "text/event-stream; charset=utf-8",
            "X-Accel-Buffering": "no",
        }.items():
            self.send_header(key, value)
        self.end_headers()
        self.app.metrics.requests.labels(route="/api/stream", code="200").inc()
        self.app.metrics.sse_clients.inc()
        try:
            self._write_event(hub.payload, version, retry=True)
            while not hub.stopping.is_set():
                newer, payload = hub.wait_newer(version, KEEPALIVE_SECONDS)
                if newer > version:
                    version = newer
                    self._write_event(payload, version)
                else:
                    self.wfile.write(b": keepalive\n\n")
                    self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        finally:
            self.app.metrics.sse_clients.dec()
            self.close_connection = True

    def _write_event(self, payload: str, version: int, retry: bool = False) -> None:
        head = "retry: 2000\n" if retry else ""
        self.wfile.write(f"{head}id: {version}\nevent: state\ndata: {payload}\n\n".encode())
        self.wfile.flush()


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app: DashboardApp, host: str, port: int) -> None:
        handler = type("BoundHandler", (Handler,), {"app": app})
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), handler)
        self.app = app
        self.bound_host = str(self.server_address[0])
        names = {"localhost", *app.allowed_hosts}
        if _ip(host) is None:
            names.add(host)  # --host localhost or a hostname: its own name
        bound = _ip(self.bound_host)
        if bound is not None and bound.is_unspecified:
            names.add(socket.gethostname())  # a wildcard bind is meant to be reached from elsewhere
        self.host_names = frozenset(n.strip().lower().rstrip(".") for n in names if n.strip())
        self._hub_thread = threading.Thread(target=app.hub.run, name="dashboard-hub", daemon=True)

    def answers_host(self, header: str) -> bool:
        return host_allowed(header, self.bound_host, self.host_names)

    @property
    def url(self) -> str:
        address, port = self.server_address[:2]
        host = address.decode() if isinstance(address, bytes) else str(address)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def serve(self) -> None:
        self.app.hub.refresh()
        self._hub_thread.start()
        self.serve_forever(poll_interval=0.2)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser that went away mid-response is normal; anything else is logged once."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        log.exception("dashboard request from %s failed", client_address[0])

    def stop(self) -> None:
        self.app.hub.stop()
        self.shutdown()
        self.server_close()
