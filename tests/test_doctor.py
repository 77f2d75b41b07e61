"""`tmux-agent doctor` and scripts/diagnose_orchestrator.sh: one line per check,
exit 0 only when all pass, secrets masked; the tmux server, the panes and what runs in them,
and the ports as our own orchestrator and dashboard hold them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchestrator.state.store import StateStore
from pytest_tmuxagent.fake_codex import FakeCodex
from pytest_tmuxagent.live import LiveCodex
from pytest_tmuxagent.model_server import ModelServer
from pytest_tmuxagent.proxy_servers import HttpProxy, Socks5Proxy, refusing_port
from pytest_tmuxagent.service import OrchestratorServiceFactory, cli_path
from pytest_tmuxagent.tmux_server import AgentPane, AgentPaneFactory, TmuxTestServer
from pytest_tmuxagent.waiting import wait_until
from pytest_tmuxagent.wecom_mock import WeComMock

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:  # a port that is free right now
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(root: Path, socket_name: str, targets: dict[str, str]) -> None:
    sessions = "".join(f"  - name: {name}\n    target: '{target}'\n" for name, target in targets.items())
    (root / "agent-config.yaml").write_text(
        f"tmux:\n  socket_name: {socket_name}\nstate_db: st/state.db\nlog_dir: logs\nsessions:\n{sessions}"
    )


@pytest.fixture
def pane(agent_pane: AgentPaneFactory) -> AgentPane:
    return agent_pane("weather/bot")


@pytest.fixture
def project(
    tmp_path: Path, fake_codex: object, wecom_mock: WeComMock, tmux_server: TmuxTestServer, pane: AgentPane
) -> Path:
    write_config(tmp_path, tmux_server.socket_name, {"weather/bot": pane.target})
    port = free_port()
    (tmp_path / ".tmuxagent").mkdir()
    (tmp_path / ".tmuxagent" / "orchestrator.toml").write_text(
        f'metrics_port = {port}\nenv_file = "{tmp_path / "dot.env"}"\n[codex]\ntimeout_seconds = 10\n'
    )
    env = {"OPENAI_API_KEY": "sk-doctor-secret-123456", **wecom_mock.env("webhook")}
    (tmp_path / "dot.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return tmp_path


def without_proxies(env: Mapping[str, str]) -> dict[str, str]:
    """Proxies come from each test's env file only, never from the machine running the tests."""
    return {k: v for k, v in env.items() if not k.lower().endswith("_proxy")}


def doctor(
    project: Path, *args: str, script: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [str(ROOT / "scripts" / "diagnose_orchestrator.sh")] if script else [cli_path("tmux-agent"), "doctor"]
    if "--dashboard-port" not in args:  # 8702 may be anyone's on this machine
        args = (*args, "--dashboard-port", str(free_port()))
    return subprocess.run(
        [*argv, "--config", str(project / "agent-config.yaml"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**without_proxies(os.environ), **(env or {})},
        cwd=project,
    )


def test_all_checks_pass_and_the_key_is_masked(project: Path, wecom_mock: WeComMock) -> None:
    result = doctor(project)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    names = ("tmux", "config", "tmux socket", "pane weather/bot", "codex", "OPENAI_API_KEY", "WeCom", "reach WeCom")
    for name in (*names, "metrics port", "dashboard port", "state DB", "log dir"):
        assert any(line.startswith("ok") and f" {name} " in f"{line} " for line in lines), (name, result.stdout)
    assert "answered a tiny prompt" in result.stdout
    assert "sk-doctor-secret-123456" not in result.stdout and "test-webhook-key-0001" not in result.stdout
    assert wecom_mock.messages() == []  # no message without --send-test, only the reach probe:
    assert [(r.method, r.path, r.query) for r in wecom_mock.requests] == [("GET", "/cgi-bin/gettoken", {})]


def test_send_test_delivers_a_message(project: Path, wecom_mock: WeComMock) -> None:
    result = doctor(project, "--send-test", script=True)
    assert result.returncode == 0, result.stdout
    [message] = wecom_mock.wait_for_messages(1)
    assert "tmux-agent doctor" in message


def test_a_busy_metrics_port_fails_with_a_fix(project: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = doctor(project, "--metrics-port", str(busy.getsockname()[1]))
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if "metrics port" in line)
    assert line.startswith("FAIL") and "fix:" in line


def test_a_hanging_codex_fails_within_the_timeout(project: Path, fake_codex: FakeCodex | LiveCodex) -> None:
    fake_codex.script([{"kind": "hang"}])
    toml = project / ".tmuxagent" / "orchestrator.toml"
    toml.write_text(toml.read_text().replace("timeout_seconds = 10", "timeout_seconds = 1"))
    result = doctor(project)
    assert result.returncode == 1
    assert any(
        line.startswith("FAIL") and "codex" in line and "no answer in 1s" in line for line in result.stdout.splitlines()
    ), result.stdout


def line_of(result: subprocess.CompletedProcess[str], name: str) -> str:
    return next(line for line in result.stdout.splitlines() if f" {name} " in f"{line} ")


def test_a_tmux_server_that_is_not_running_fails_naming_the_socket(project: Path, tmux_server: TmuxTestServer) -> None:
    write_config(project, "doctor-nobody-runs-this", {"weather/bot": "weather:bot"})
    result = doctor(project)
    assert result.returncode == 1
    line = line_of(result, "tmux socket")
    assert line.startswith("FAIL") and "doctor-nobody-runs-this" in line
    assert "fix: start one: tmux -L doctor-nobody-runs-this new -d" in line
    assert not any(" pane " in f"{line} " for line in result.stdout.splitlines())  # panes not asked of no server


def test_a_missing_pane_fails_and_a_pane_at_a_program_warns(
    project: Path, tmux_server: TmuxTestServer, pane: AgentPane
) -> None:
    write_config(project, tmux_server.socket_name, {"weather/bot": pane.target, "ghost/pane": "ghost:pane"})
    pane.type(f"exec {sys.executable} -q")  # the pane's foreground program is python now, not bash

    def foreground() -> str | None:
        out = tmux_server.server.cmd("display-message", "-p", "-t", pane.pane_id, "#{pane_current_command}").stdout
        program = out[0].strip() if out else ""
        return program if program and program != "bash" else None

    program = wait_until(foreground, timeout=10, message="python never became the pane's foreground program")
    result = doctor(project)
    assert result.returncode == 1  # the missing pane fails; the warning alone would not
    warn = line_of(result, "pane weather/bot")
    assert warn.startswith("WARN") and f"pane runs {program}; commands are only typed into bash or zsh" in warn
    ghost = line_of(result, "pane ghost/pane")
    assert ghost.startswith("FAIL") and "ghost:pane" in ghost and "fix:" in ghost
    assert "failing: pane ghost/pane" in result.stdout and "warnings: pane weather/bot" in result.stdout


def test_a_warning_alone_keeps_exit_0(project: Path, tmux_server: TmuxTestServer, pane: AgentPane) -> None:
    pane.type("exec cat")
    wait_until(
        lambda: (
            tmux_server.server.cmd("display-message", "-p", "-t", pane.pane_id, "#{pane_current_command}").stdout
            == ["cat"]
        ),
        timeout=10,
    )
    result = doctor(project)
    assert result.returncode == 0, result.stdout
    assert line_of(result, "pane weather/bot").startswith("WARN")


def test_our_running_orchestrator_on_the_metrics_port_is_ok(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory, fake_codex: object
) -> None:
    service = orchestrator_service([agent_pane("weather/bot")])
    runtime = json.loads((service.log_dir / "orchestrator-runtime.json").read_text())
    port = int(runtime["metrics_url"].rsplit(":", 1)[1].split("/")[0])
    result = doctor(service.root, "--metrics-port", str(port))
    line = line_of(result, "metrics port")
    assert line.startswith("ok") and f"our orchestrator (pid {runtime['pid']}) is serving /metrics on {port}" in line
    assert f"supervised by orchestrator pid {runtime['pid']}" in line_of(result, "state DB")


def test_a_stranger_on_the_metrics_port_is_not_taken_for_ours(project: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # what a dead orchestrator left behind: its pid is gone, so the port is someone else's
        dead = subprocess.Popen(["true"])
        dead.wait()
        (project / "logs").mkdir(exist_ok=True)
        (project / "logs" / "orchestrator-runtime.json").write_text(
            json.dumps({"pid": dead.pid, "metrics_url": f"http://127.0.0.1:{port}/metrics"})
        )
        result = doctor(project, "--metrics-port", str(port))
    line = line_of(result, "metrics port")
    assert line.startswith("FAIL") and "in use by another process" in line and "fix:" in line


def test_the_dashboard_port_is_ok_when_our_dashboard_holds_it(project: Path) -> None:
    StateStore(project / "st" / "state.db").close()  # the DB the dashboard shows
    port = free_port()
    dashboard = subprocess.Popen(
        [cli_path("tmux-agent"), "dashboard", "--config", str(project / "agent-config.yaml"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=project,
    )
    try:
        wait_until(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200,
            timeout=20,
            message="dashboard never answered",
        )
        line = line_of(doctor(project, "--dashboard-port", str(port)), "dashboard port")
        assert line.startswith("ok") and "our dashboard" in line and str(port) in line
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=10)


def test_a_stranger_on_the_dashboard_port_fails(project: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = doctor(project, "--dashboard-port", str(busy.getsockname()[1]))
    line = line_of(result, "dashboard port")
    assert result.returncode == 1 and line.startswith("FAIL") and "--dashboard-port N" in line


# agent sessions ----------------------------------------------------------------------------------
def stand_in(folder: Path, name: str, body: str) -> Path:
    """A small executable script standing in for an agent's binary."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def write_agent_config(project: Path, socket_name: str, sessions: list[dict[str, object]]) -> None:
    (project / "agent-config.yaml").write_text(
        json.dumps(
            {"tmux": {"socket_name": socket_name}, "state_db": "st/state.db", "log_dir": "logs", "sessions": sessions}
        )
    )


def test_agent_binaries_found_by_launch_path_or_on_path_with_their_version(
    project: Path, tmux_server: TmuxTestServer, pane: AgentPane, agent_pane: AgentPaneFactory
) -> None:
    claude = stand_in(project / "agents", "claude", 'echo "2.1.197 (Claude Code)"')
    stand_in(project / "bin", "codex", 'echo "codex-cli 0.171.0"')
    stand_in(project / "old", "claude", 'echo "2.0.1 (Claude Code)"')
    second = agent_pane("weather/codex")
    write_agent_config(
        project,
        tmux_server.socket_name,
        [
            {"name": "weather/bot", "target": pane.target},
            {
                "name": "weather/agent",
                "target": pane.target,
                "kind": "agent",
                "provider": "claude",
                "launch": f"{claude} --model x",
            },
            # no launch: the provider's name on the session's PATH
            {
                "name": "weather/codex",
                "target": second.target,
                "kind": "agent",
                "provider": "codex",
                "env": {"PATH": f"{project / 'bin'}:/usr/bin:/bin"},
            },
            # a bare name on PATH, another version than the verified one: a warning
            {
                "name": "weather/old",
                "target": pane.target,
                "kind": "agent",
                "launch": "claude",
                "env": {"PATH": str(project / "old")},
            },
        ],
    )
    result = doctor(project)
    assert result.returncode == 0, result.stdout
    found = line_of(result, "agent weather/agent")
    assert found.startswith("ok") and f"claude {claude}: 2.1.197 (Claude Code)" in found
    on_path = line_of(result, "agent weather/codex")
    assert on_path.startswith("ok") and f"{project / 'bin' / 'codex'}: codex-cli 0.171.0" in on_path
    old = line_of(result, "agent weather/old")
    assert old.startswith("WARN") and "2.0.1 (Claude Code) (tmuxagent is verified with 2.1.197)" in old
    assert "fix: install @anthropic-ai/claude-code@2.1.197, or set launch to its path" in old
    assert not any(" agent weather/bot " in f"{line} " for line in result.stdout.splitlines())  # a shell session
    # an agent session's pane: at bash with launch the agent is started there; without launch, nothing starts it
    assert "the orchestrator launches claude there" in line_of(result, "pane weather/agent")
    codex_pane = line_of(result, "pane weather/codex")
    assert codex_pane.startswith("WARN") and "no launch" in codex_pane and "fix: start codex in the pane" in codex_pane


def test_a_missing_or_hanging_agent_binary_fails_with_the_fix(
    project: Path, tmux_server: TmuxTestServer, pane: AgentPane
) -> None:
    empty = project / "empty-bin"
    empty.mkdir()
    hanging = stand_in(project / "agents", "codex", "exec sleep 30")
    broken = stand_in(project / "agents", "claude", "echo 'cannot load' >&2; exit 3")
    write_agent_config(
        project,
        tmux_server.socket_name,
        [
            {
                "name": "no/claude",
                "target": pane.target,
                "kind": "agent",
                "provider": "claude",
                "launch": "/nonexistent/claude --settings x",
                "env": {"PATH": str(empty)},
            },
            {
                "name": "no/codex",
                "target": pane.target,
                "kind": "agent",
                "provider": "codex",
                "launch": "codex-not-here",
                "env": {"PATH": str(empty)},
            },
            {"name": "hung/codex", "target": pane.target, "kind": "agent", "provider": "codex", "launch": str(hanging)},
            {"name": "broken/claude", "target": pane.target, "kind": "agent", "launch": str(broken)},
        ],
    )
    toml = project / ".tmuxagent" / "orchestrator.toml"
    toml.write_text(toml.read_text().replace("timeout_seconds = 10", "timeout_seconds = 1"))
    result = doctor(project)
    assert result.returncode == 1
    claude = line_of(result, "agent no/claude")
    assert claude.startswith("FAIL") and "claude: not found (/nonexistent/claude, claude on PATH)" in claude
    assert claude.endswith("fix: install @anthropic-ai/claude-code@2.1.197, or set launch to its path")
    codex = line_of(result, "agent no/codex")
    assert codex.startswith("FAIL") and "not found (codex-not-here on PATH, codex on PATH)" in codex
    assert codex.endswith("fix: install @openai/codex@0.171.0, or set launch to its path")
    hung = line_of(result, "agent hung/codex")
    assert hung.startswith("FAIL") and f"`{hanging} --version` hung for 1s" in hung and "@openai/codex@0.171.0" in hung
    bad = line_of(result, "agent broken/claude")
    assert bad.startswith("FAIL") and f"`{broken} --version` exited 3" in bad
    assert "failing: " in result.stdout and "agent no/claude" in result.stdout.splitlines()[-1]


# the network: a real request through the proxy each client takes -----------------------------------
def use_openai(project: Path, model_server: ModelServer, env_lines: str) -> None:
    """`[ai] backend = "openai"` against the model server, and `env_lines` added to the env file."""
    toml = project / ".tmuxagent" / "orchestrator.toml"
    toml.write_text(
        toml.read_text() + f'[ai]\nbackend = "openai"\nopenai_base_url = "{model_server.openai_base_url}"\n'
    )
    with (project / "dot.env").open("a") as env_file:
        env_file.write(env_lines)


def test_each_endpoint_is_reached_through_the_proxy_of_the_env_file(
    project: Path, wecom_mock: WeComMock, model_server: ModelServer, tmuxagent_http_proxy: HttpProxy
) -> None:
    proxy = tmuxagent_http_proxy.url
    # HTTPS_PROXY written without a scheme, as curl allows: an http:// proxy (unused: both are http)
    env_lines = f"HTTP_PROXY={proxy}\nHTTPS_PROXY=127.0.0.1:7890\nNO_PROXY=.lan\n"
    use_openai(project, model_server, env_lines)
    result = doctor(project)
    assert result.returncode == 0, result.stdout
    summary = line_of(result, "proxies")
    assert (
        summary.startswith("ok") and f"HTTP_PROXY {proxy}, HTTPS_PROXY http://127.0.0.1:7890; NO_PROXY .lan" in summary
    )
    wecom = line_of(result, "reach WeCom")
    assert wecom.startswith("ok") and f"{wecom_mock.url}/cgi-bin/gettoken via {proxy} (HTTP_PROXY): HTTP 200" in wecom
    openai = line_of(result, "reach OpenAI")
    assert (
        openai.startswith("ok")
        and f"{model_server.openai_base_url}/models via {proxy} (HTTP_PROXY): HTTP 200" in openai
    )
    assert sorted(c.target for c in tmuxagent_http_proxy.connections) == sorted(
        [f"127.0.0.1:{wecom_mock.port}", f"127.0.0.1:{model_server.port}"]
    )
    assert "sk-doctor-secret-123456" not in result.stdout


def test_a_dead_proxy_fails_each_endpoint_with_the_fix_and_no_password(
    project: Path, wecom_mock: WeComMock, model_server: ModelServer
) -> None:
    with refusing_port() as port:
        use_openai(project, model_server, f"ALL_PROXY=socks5h://me:proxy-pw-0001@127.0.0.1:{port}\n")
        result = doctor(project)
    assert result.returncode == 1
    for name in ("reach WeCom", "reach OpenAI"):
        line = line_of(result, name)
        assert line.startswith("FAIL") and f"via socks5h://127.0.0.1:{port} (ALL_PROXY)" in line, line
        assert "Connection refused" in line and f"fix: start the proxy at socks5h://127.0.0.1:{port}" in line, line
    assert "proxy-pw-0001" not in result.stdout + result.stderr
    assert wecom_mock.requests == [] and model_server.requests() == []


def test_no_proxy_sends_an_endpoint_direct_past_a_dead_proxy(project: Path, wecom_mock: WeComMock) -> None:
    with refusing_port() as port:
        with (project / "dot.env").open("a") as env_file:
            env_file.write(f"HTTP_PROXY=http://127.0.0.1:{port}\nNO_PROXY=localhost,127.0.0.1\n")
        result = doctor(project)
    assert result.returncode == 0, result.stdout
    assert f"{wecom_mock.url}/cgi-bin/gettoken via direct: HTTP 200" in line_of(result, "reach WeCom")


def test_a_socks_proxy_with_a_password_logs_in_and_never_shows_it(project: Path, wecom_mock: WeComMock) -> None:
    with Socks5Proxy(username="me", password="pw#0001") as proxy:
        with (project / "dot.env").open("a") as env_file:
            env_file.write(f"ALL_PROXY={proxy.url}\n")
        result = doctor(project)
        assert [c.username for c in proxy.connections] == ["me"]
    assert result.returncode == 0, result.stdout
    assert f"via socks5://127.0.0.1:{proxy.port} (ALL_PROXY): HTTP 200" in line_of(result, "reach WeCom")
    assert "pw%230001" not in result.stdout and "pw#0001" not in result.stdout


def test_missing_socks_support_is_one_line_naming_the_package(
    project: Path, wecom_mock: WeComMock, model_server: ModelServer, tmuxagent_socks_proxy: Socks5Proxy, tmp_path: Path
) -> None:
    """An install without the socks extras: doctor says which package, no traceback."""
    blocked = tmp_path / "no-socks"
    blocked.mkdir()
    for module in ("socks", "socksio"):  # found before site-packages, and refusing to import
        (blocked / f"{module}.py").write_text("raise ImportError('not installed (test)')\n")
    use_openai(project, model_server, f"ALL_PROXY={tmuxagent_socks_proxy.url}\n")
    result = doctor(project, env={"PYTHONPATH": str(blocked)})
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr
    wecom = line_of(result, "reach WeCom")
    assert wecom.startswith("FAIL") and "SOCKS support for the requests client is not installed" in wecom
    assert wecom.endswith("fix: pip install 'requests[socks]'")
    assert line_of(result, "reach OpenAI").endswith("fix: pip install 'httpx2[socks]'")
    assert tmuxagent_socks_proxy.connections == []


class LoginPage(BaseHTTPRequestHandler):
    """What a captive portal or a proxy's login page answers to anything: 200 and HTML."""

    def do_GET(self) -> None:
        body = b"<html><body>Please log in</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_openai_base_url_answering_html_is_not_the_api(project: Path, wecom_mock: WeComMock) -> None:
    page = ThreadingHTTPServer(("127.0.0.1", 0), LoginPage)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    try:
        toml = project / ".tmuxagent" / "orchestrator.toml"
        base = f"http://127.0.0.1:{page.server_address[1]}/v1"
        toml.write_text(toml.read_text() + f'[ai]\nbackend = "openai"\nopenai_base_url = "{base}"\n')
        result = doctor(project)
    finally:
        page.shutdown()
        page.server_close()
    assert result.returncode == 1
    line = line_of(result, "reach OpenAI")
    assert line.startswith("FAIL") and f"{base}/models via direct: HTTP 200 text/html" in line
    assert "not the OpenAI API — fix: a proxy's login page or a wrong URL" in line
