"""pytest plugin `tmuxagent`: real tmux servers, agent panes, a fake codex, a WeCom
mock, a metrics scraper and a running orchestrator, as fixtures.

Factories follow libtmux's plugin: a fixture returns a callable so one test can
make as many panes or services as it needs; everything is torn down after it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .collector import ReportCollector
from .evidence import Evidence, allure
from .fake_codex import FakeCodex
from .live import LiveCodex, LiveContext, LiveTmuxServer, WeComRecordingProxy
from .metrics_scraper import MetricsScraper
from .service import OrchestratorService, make_service
from .tmux_server import AgentPane, TmuxTestServer
from .wecom_mock import WeComMock

# Prometheus server, dashboard process and Chromium fixtures live in their own module.
pytest_plugins = ["pytest_tmuxagent.observability"]

EPIC = "Orchestrator real-world validation playbook"
SCENARIOS = {
    "a": "command execution feedback (命令执行反馈)",
    "b": "stall detection and self-healing (卡顿检测与自愈)",
    "c": "decision assist (决策辅助)",
    "d": "requirements decomposition (需求文档分解)",
    "e": "failure-streak alerts (连续失败告警)",
    "f": "metrics and audit (指标与审计)",
    "g": "notification degradation (通知降级验证)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tmuxagent", "tmuxagent playbook scenarios")
    group.addoption(
        "--tmuxagent-live",
        action="store_true",
        default=False,
        help="run scenarios against the real panes, codex and WeCom of your config",
    )
    group.addoption(
        "--tmuxagent-config",
        default="agent-config.yaml",
        help="live mode: your agent-config.yaml (its orchestrator.toml and env file are used too)",
    )
    group.addoption("--tmuxagent-report", default=None, help="where to write the real-world test report (Markdown)")
    group.addoption(
        "--tmuxagent-gate",
        action="store_true",
        default=False,
        help="fail the run when any playbook acceptance criterion is not met",
    )
    group.addoption(
        "--tmuxagent-progress", action="store_true", default=False, help="print a line per finished scenario test"
    )
    parser.addini("tmuxagent_report", "path of the real-world test report", default="")


def pytest_configure(config: pytest.Config) -> None:
    for letter, title in SCENARIOS.items():
        config.addinivalue_line("markers", f"scenario_{letter}: playbook scenario {letter.upper()} — {title}")
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist) writes the report
        config.pluginmanager.register(ReportCollector(config), "tmuxagent-report")


@pytest.fixture
def tmuxagent_evidence(request: pytest.FixtureRequest) -> Evidence:
    """Record evidence (metric values, notification texts, audit excerpts) for the report and Allure."""
    return Evidence(request.node)


@pytest.fixture(autouse=True)
def _tmuxagent_allure_labels(request: pytest.FixtureRequest) -> None:
    """Allure: epic = the playbook, feature = the scenario, story = the parametrized case."""
    letters = [m.name.removeprefix("scenario_") for m in request.node.iter_markers() if m.name.startswith("scenario_")]
    if allure is None or not letters:
        return
    allure.dynamic.epic(EPIC)
    for letter in letters:
        allure.dynamic.feature(f"Scenario {letter.upper()} — {SCENARIOS[letter]}")
    callspec = getattr(request.node, "callspec", None)
    story = callspec.id if callspec else request.node.originalname
    allure.dynamic.story(story)
    # suites drive Allure 3's default tree: one top-level row per scenario
    allure.dynamic.suite(f"Scenario {letters[0].upper()} — {SCENARIOS[letters[0]]}")
    allure.dynamic.sub_suite(story)


@pytest.fixture(scope="session")
def tmuxagent_live(pytestconfig: pytest.Config) -> LiveContext | None:
    """The user's config and env in live mode; None on the embedded default."""
    if not pytestconfig.getoption("--tmuxagent-live"):
        return None
    return LiveContext.load(pytestconfig.getoption("--tmuxagent-config"))


def announce(request: pytest.FixtureRequest, text: str) -> None:
    """Say, before it happens, what a live scenario will send where (terminal and report)."""
    Evidence(request.node).add("note", "live plan", text)  # the controller prints it as the report arrives


@pytest.fixture
def tmux_server(
    tmp_path: Path, request: pytest.FixtureRequest, tmuxagent_live: LiveContext | None
) -> Iterator[TmuxTestServer]:
    """An isolated real tmux server (unique socket, no user config), killed after the test.
    In live mode: the user's server, with a scratch session that is killed instead."""
    if tmuxagent_live is not None:
        server: TmuxTestServer = LiveTmuxServer(tmuxagent_live, tmp_path / "panes")
        announce(request, f"{tmuxagent_live.describe()}; scratch session {server.scratch!r}")
    else:
        server = TmuxTestServer.unique(tmp_path / "panes")
    yield server
    evidence = Evidence(request.node)
    for pane in server.panes:
        try:
            evidence.lines("pane", f"{pane.name} ({pane.target}) screen tail", pane.capture(15)[-12:])
        except Exception:  # a pane the test closed has nothing to show
            continue
    server.kill()


@pytest.fixture
def agent_pane(tmux_server: TmuxTestServer) -> Callable[..., AgentPane]:
    """Factory: `agent_pane("weather/bot")` makes that session's pane on the test's server."""
    return tmux_server.agent_pane


@pytest.fixture
def fake_codex(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmuxagent_live: LiveContext | None
) -> FakeCodex | LiveCodex:
    """A real `codex` executable, first on PATH, replying from a script and recording its calls.
    In live mode: the user's real codex (scripted failure kinds skip)."""
    if tmuxagent_live is not None:
        return LiveCodex(tmuxagent_live)
    codex = FakeCodex(tmp_path / "fake-bin")
    codex.install()
    monkeypatch.setenv("PATH", f"{codex.path.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return codex


@pytest.fixture
def wecom_mock(request: pytest.FixtureRequest, tmuxagent_live: LiveContext | None) -> Iterator[WeComMock]:
    """A real HTTP server on 127.0.0.1 standing in for WeCom, recording every request.
    In live mode: a recording proxy in front of the user's real WeCom."""
    if tmuxagent_live is not None:
        if not any(k.startswith("WECOM_") and k != "WECOM_API_BASE" for k in tmuxagent_live.env):
            pytest.skip(f"live: no WeCom configured in {tmuxagent_live.config.settings.env_file}")
        mock: WeComMock = WeComRecordingProxy(tmuxagent_live.env)
    else:
        mock = WeComMock()
    mock.start()
    yield mock
    messages = mock.messages()
    Evidence(request.node).add(
        "notifications",
        f"{len(messages)} message(s) delivered to the WeCom mock ({len(mock.requests)} request(s))",
        "\n---\n".join(messages) or "(none)",
    )
    mock.stop()


@pytest.fixture
def metrics_scraper() -> Callable[[str], MetricsScraper]:
    """Factory: `metrics_scraper(url)` scrapes /metrics and parses it with prometheus_client."""
    return MetricsScraper


@pytest.fixture
def orchestrator_service(
    tmp_path: Path, tmux_server: TmuxTestServer, request: pytest.FixtureRequest, tmuxagent_live: LiveContext | None
) -> Iterator[Callable[..., OrchestratorService]]:
    """Factory: `orchestrator_service(panes, settings={...}, env={...})` starts the real service."""
    started: list[OrchestratorService] = []

    def factory(
        panes: list[AgentPane], *, start: bool = True, start_args: tuple[str, ...] = (), **kwargs: Any
    ) -> OrchestratorService:
        if tmuxagent_live is not None:
            kwargs["settings"] = {"codex": tmuxagent_live.codex_settings(), **kwargs.get("settings", {})}
            kwargs["env"] = {**tmuxagent_live.service_env(), **kwargs.get("env", {})}
            kwargs["announce"] = lambda text: announce(request, text)
        service = make_service(tmp_path / f"service{len(started)}", tmux_server, panes, **kwargs)
        started.append(service)
        if start:
            service.start(*start_args)
        return service

    yield factory
    evidence = Evidence(request.node)
    leaks: list[str] = []
    for service in started:
        for kind, title, text in service.evidence():
            evidence.add(kind, title, text)
        service.stop()
        leaks += service.leaked_secrets()
    assert not leaks, f"secrets reached a log or the audit file: {leaks}"
