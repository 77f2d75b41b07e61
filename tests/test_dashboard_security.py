"""The dashboard against a hostile browser and a curious local user, over a real HTTP server:
a `Host` it does not answer to gets 421 and no data (DNS rebinding), and the token is read
from a file or the environment, never needed on the command line."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.dashboard.server import DashboardApp, DashboardServer, host_allowed
from orchestrator.state.store import StateStore
from pytest_tmuxagent.waiting import wait_until

BOT = "weather/bot"
SECRET_TEXT = "make deploy-weather"  # command text that must not reach a rebinding page
TOKEN = "s3cret-token-abc"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    store = StateStore(tmp_path / "state.db")
    store.ensure_session(BOT, "weather:bot")
    store.enqueue(BOT, SECRET_TEXT)
    yield store
    store.close()


Serve = Callable[..., DashboardServer]


@pytest.fixture
def serve(tmp_path: Path, store: StateStore) -> Iterator[Serve]:
    started: list[DashboardServer] = []

    def start(
        host: str = "127.0.0.1", token: str | None = None, allowed_hosts: tuple[str, ...] = ()
    ) -> DashboardServer:
        app = DashboardApp(
            db=store.path, audit_log=tmp_path / "a.jsonl", token=token, interval=0.05, allowed_hosts=allowed_hosts
        )
        server = DashboardServer(app, host, 0)
        threading.Thread(target=server.serve, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def get(server: DashboardServer, path: str, host: str | None, **headers: str) -> tuple[int, bytes]:
    """GET with exactly this `Host` header (None: none at all), on a raw connection."""
    port = server.server_address[1]
    connect = "::1" if server.address_family == socket.AF_INET6 else "127.0.0.1"
    conn = http.client.HTTPConnection(connect, port, timeout=10)
    conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    if host is not None:
        conn.putheader("Host", host)
    for key, value in headers.items():
        conn.putheader(key.replace("_", "-"), value)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read() if path != "/api/stream" or response.status != 200 else response.read1(65536)
    conn.close()
    return response.status, body


ROUTES = ["/", "/api/state", "/api/sessions", "/api/events", "/api/stream", "/metrics", "/healthz", "/static/app.js"]


@pytest.mark.parametrize("path", ROUTES)
def test_a_foreign_host_gets_421_and_no_data(serve: Serve, path: str) -> None:
    server = serve()
    port = server.server_address[1]
    for evil in ("evil.example", f"evil.example:{port}", "127.0.0.1.nip.io", "localhost.evil.example"):
        code, body = get(server, path, evil)
        assert code == 421, (evil, code, body[:200])
        assert SECRET_TEXT.encode() not in body and BOT.encode() not in body and b"state.db" not in body


def test_the_bound_address_and_localhost_are_answered(serve: Serve) -> None:
    server = serve()
    port = server.server_address[1]
    for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LOCALHOST", "localhost."):
        code, body = get(server, "/api/state", host)
        assert code == 200, (host, code, body[:200])
        assert SECRET_TEXT in body.decode()
    assert get(server, "/api/state", None)[0] == 200  # no Host (HTTP/1.0, a probe) is no browser: no rebinding
    assert get(server, "/api/state", f"127.0.0.2:{port}")[0] == 421  # another address than the bound one


def test_a_foreign_host_is_refused_before_the_token_is_looked_at(serve: Serve) -> None:
    server = serve(token=TOKEN)
    code, body = get(server, f"/?token={TOKEN}", "evil.example")
    assert code == 421 and b"Set-Cookie" not in body
    assert get(server, "/api/state", "evil.example", Authorization=f"Bearer {TOKEN}")[0] == 421
    assert get(server, "/api/state", "127.0.0.1", Authorization=f"Bearer {TOKEN}")[0] == 200


def test_configured_names_are_answered(serve: Serve) -> None:
    server = serve(allowed_hosts=("dash.example.org", "Tmux.LAN."))
    assert get(server, "/api/state", "dash.example.org:8443")[0] == 200
    assert get(server, "/api/state", "tmux.lan")[0] == 200
    assert get(server, "/api/state", "other.example.org")[0] == 421


def test_a_wildcard_bind_answers_ip_literals_and_this_host_but_not_names(serve: Serve) -> None:
    server = serve(host="0.0.0.0", token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert get(server, "/api/state", "192.0.2.7:8702", **auth)[0] == 200  # a literal address cannot be rebound
    assert get(server, "/api/state", socket.gethostname(), **auth)[0] == 200
    assert get(server, "/api/state", "evil.example", **auth)[0] == 421


def test_host_parsing() -> None:
    bound = ("127.0.0.1", ("localhost",))
    assert host_allowed("127.0.0.1:80", *bound) and host_allowed("localhost", *bound)
    assert not host_allowed("[::1]:80", *bound) and not host_allowed("evil", *bound)
    assert not host_allowed("127.0.0.1:80:90", *bound) and not host_allowed("", *bound)
    assert not host_allowed("127.0.0.1@evil.example", *bound)
    assert host_allowed("[::1]:8702", "::1", ("localhost",)) and not host_allowed("[::2]", "::1", ())
    assert host_allowed("[2001:db8::1]", "::", ())


# the token: a file or the environment, not argv --------------------------------------------------
def dashboard(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "TMUX_AGENT_DASHBOARD_TOKEN"}
    full_env.update(env or {})
    argv = [sys.executable, "-m", "orchestrator.dashboard", "--db", str(tmp_path / "state.db"), "--port", "0", *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)


def serving(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """(url, stderr so far) once the dashboard printed its URL line."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "serving http://" in line, line
    return line.split("serving ", 1)[1].split()[0], ""


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    return err


def status_with(url: str, token: str) -> int:
    host, port = url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/api/state", headers={"Authorization": f"Bearer {token}"})
    code = conn.getresponse().status
    conn.close()
    return code


def test_token_file_keeps_the_token_off_the_command_line(tmp_path: Path, store: StateStore) -> None:
    token_file = tmp_path / "dashboard.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    proc = dashboard(tmp_path, "--token-file", str(token_file))
    try:
        url, _ = serving(proc)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert TOKEN.encode() not in cmdline
        assert status_with(url, TOKEN) == 200 and status_with(url, "wrong-token-xyz") == 401
    finally:
        err = stop(proc)
    assert "warning" not in err.lower(), err


def test_token_from_the_environment(tmp_path: Path, store: StateStore) -> None:
    proc = dashboard(tmp_path, env={"TMUX_AGENT_DASHBOARD_TOKEN": TOKEN})
    try:
        url, _ = serving(proc)
        assert status_with(url, TOKEN) == 200 and status_with(url, "wrong-token-xyz") == 401
    finally:
        stop(proc)


def test_token_on_argv_still_works_but_warns(tmp_path: Path, store: StateStore) -> None:
    proc = dashboard(tmp_path, "--token", TOKEN)
    try:
        url, _ = serving(proc)
        assert status_with(url, TOKEN) == 200
    finally:
        err = stop(proc)
    assert "--token is visible" in err and "/proc" in err and "--token-file" in err and TOKEN not in err


def test_a_group_readable_token_file_warns(tmp_path: Path, store: StateStore) -> None:
    token_file = tmp_path / "dashboard.token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    proc = dashboard(tmp_path, "--token-file", str(token_file))
    try:
        serving(proc)
    finally:
        err = stop(proc)
    assert "readable by others" in err and "chmod 600" in err and TOKEN not in err


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read"), ("", "is empty"), ("bad token with spaces", "8+ characters")],
)
def test_a_bad_token_file_is_one_line_exit_2(tmp_path: Path, content: str | None, problem: str) -> None:
    token_file = tmp_path / "dashboard.token"
    if content is not None:
        token_file.write_text(content)
        token_file.chmod(0o600)
    proc = dashboard(tmp_path, "--token-file", str(token_file))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and problem in err and str(token_file) in err
    assert "Traceback" not in err and "bad token" not in err


def test_token_and_token_file_together_is_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "dashboard.token"
    token_file.write_text(TOKEN)
    proc = dashboard(tmp_path, "--token", TOKEN, "--token-file", str(token_file))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "--token-file" in err and TOKEN not in err


def test_allow_host_flag_reaches_the_server(tmp_path: Path, store: StateStore) -> None:
    proc = dashboard(tmp_path, "--allow-host", "dash.example.org")
    try:
        url, _ = serving(proc)
        port = int(url.rstrip("/").rsplit(":", 1)[1])

        def code_for(host: str) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.putrequest("GET", "/api/state", skip_host=True)
            conn.putheader("Host", host)
            conn.endheaders()
            code = conn.getresponse().status
            conn.close()
            return code

        assert wait_until(lambda: code_for("dash.example.org") == 200, timeout=5)
        assert code_for("evil.example") == 421
    finally:
        stop(proc)
