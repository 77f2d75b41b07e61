"""pytest plugin `tmuxagent`: real tmux servers, agent panes, a fake codex, a WeCom
mock, a metrics scraper and a running orchestrator, as fixtures.

Factories follow libtmux's plugin: a fixture returns a callable so one test can
make as many panes or services as it needs; everything is torn down after it.
Projects tune it by overriding `tmuxagent_settings` and `tmuxagent_pane_shell`, with
ini keys (see options.py) and with the hooks in hookspecs.py. docs/pytest-plugin.md
is the reference.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from . import hookspecs, options
from .collector import TOTALS_PROPERTY, ReportCollector
from .evidence import Evidence, allure
from .fake_codex import FakeCodex
from .live import LiveCodex, LiveContext, LiveTmuxServer, WeComRecordingProxy
from .metrics_scraper import MetricsScraper
from .proxy_servers import HttpProxy, Socks5Proxy
from .registry import EPIC, Scenario, scenarios
from .service import COMPRESSED_SETTINGS, OrchestratorService, OrchestratorServiceFactory, make_service, merge_settings
from .tmux_server import PANE_SHELL, AgentPane, AgentPaneFactory, TmuxTestServer
from .wecom_mock import WeComMock

# Prometheus server, dashboard process and Chromium fixtures live in their own module.
pytest_plugins = [
    "pytest_tmuxagent.observability",
    "pytest_tmuxagent.agents_plugin",
    "pytest_tmuxagent.wecom_check",
    "pytest_tmuxagent.capability_plugin",
    "pytest_tmuxagent.postgres_plugin",
]

_REGISTRY = pytest.StashKey[dict[str, Scenario]]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    registry = config.stash[_REGISTRY] = scenarios(config)
    for scenario in registry.values():
        config.addinivalue_line("markers", scenario.marker_line)
    config.addinivalue_line(
        "markers", "tmuxagent_soak: the soak-and-export test; its timeout is the soak duration plus 3 minutes"
    )
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist) writes the report
        config.pluginmanager.register(ReportCollector(config), "tmuxagent-report")


def _registry(config: pytest.Config) -> dict[str, Scenario]:
    return config.stash.get(_REGISTRY, None) or scenarios(config)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A soak test may run longer than the ini timeout: give it the soak duration plus 3 minutes."""
    from .soak import parse_duration

    soaks = [item for item in items if item.get_closest_marker("tmuxagent_soak")]
    if not soaks:
        return
    try:
        seconds = parse_duration(options.soak(config))
    except ValueError as exc:
        raise pytest.UsageError(f"--tmuxagent-soak: {exc}") from None
    for item in soaks:
        item.add_marker(pytest.mark.timeout(seconds + 180))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Tell the controller how many tests each scenario has (rides on every test's report, so
    it works under xdist): it prints a scenario's line once that many have finished."""
    markers = {s.marker: s.letter for s in _registry(session.config).values()}
    totals: dict[str, int] = {}
    for item in session.items:
        for letter in {markers[m.name] for m in item.iter_markers() if m.name in markers}:
            totals[letter] = totals.get(letter, 0) + 1
    if not totals:
        return
    value = json.dumps(totals, sort_keys=True)
    for item in session.items:
        item.user_properties.append((TOTALS_PROPERTY, value))


# `pytest.fail("promtool is missing: install Debian's `prometheus` package …")`, as tests wrote it
# before they skipped: an absent optional tool is not a product failure.
_MISSING = re.compile(r"^(?P<tool>[\w./-]+) is missing: install (?P<fix>Debian's `[\w.-]+` package|[^\n]*npm[^\n]*)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A test that fails only because an optional tool is missing (its message says
    `X is missing: install Debian's `P` package`) is reported skipped, `missing tool: X — …`."""
    report = yield
    if report.failed and call.excinfo is not None and call.excinfo.errisinstance(pytest.fail.Exception):
        found = _MISSING.match(str(call.excinfo.value))
        if found:
            report.outcome = "skipped"
            reason = f"missing tool: {Path(found['tool']).name} — {found['fix']}"
            report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {reason}")
    return report


# ---------------------------------------------------------------------------------------------
# override fixtures: what a project tunes in its conftest.py


@pytest.fixture
def tmuxagent_settings() -> dict[str, Any]:
    """orchestrator.toml keys merged under every `orchestrator_service(settings=...)`.

    Default: COMPRESSED_SETTINGS (2 s stall timeout, 50 ms polling, metrics on a free port,
    AI and decision assist off). Override it in a conftest.py to change them for a folder."""
    return merge_settings(COMPRESSED_SETTINGS)


@pytest.fixture
def tmuxagent_pane_shell() -> str:
    """What every agent pane runs unless `agent_pane(name, shell=...)` says: a shell name
    (`bash`, `bash-rc`, `bash-errexit`, `zsh`, `dash`; see pytest_tmuxagent.shells) or a command
    line. Default PANE_SHELL, a bash without rc files."""
    return PANE_SHELL


# ---------------------------------------------------------------------------------------------
# evidence and Allure


@pytest.fixture
def tmuxagent_evidence(request: pytest.FixtureRequest) -> Evidence:
    """Record evidence (metric values, notification texts, audit excerpts) for the report and Allure."""
    return Evidence(request.node)


@pytest.fixture(autouse=True)
def _tmuxagent_allure_labels(request: pytest.FixtureRequest) -> None:
    """Allure: epic = the playbook, feature = the scenario, story = the parametrized case."""
    if allure is None:
        return
    markers = {m.name for m in request.node.iter_markers()}
    found = [s for s in _registry(request.config).values() if s.marker in markers]
    if not found:
        return
    allure.dynamic.epic(EPIC)
    for scenario in found:
        allure.dynamic.feature(scenario.feature)
    callspec = getattr(request.node, "callspec", None)
    story = callspec.id if callspec else getattr(request.node, "originalname", request.node.name)
    allure.dynamic.story(story)
    # suites drive Allure 3's default tree: one top-level row per scenario
    allure.dynamic.suite(found[0].feature)
    allure.dynamic.sub_suite(story)


# ---------------------------------------------------------------------------------------------
# live mode


@pytest.fixture(scope="session")
def tmuxagent_live(pytestconfig: pytest.Config) -> LiveContext | None:
    """The user's config and env in live mode (`--tmuxagent-live` or ini `tmuxagent_live`); None otherwise."""
    if not options.live(pytestconfig):
        return None
    return LiveContext.load(str(options.config_file(pytestconfig)))


def announce(request: pytest.FixtureRequest, text: str) -> None:
    """Say, before it happens, what a live scenario will send where (terminal and report)."""
    Evidence(request.node).add("note", "live plan", text)  # the controller prints it as the report arrives


# ---------------------------------------------------------------------------------------------
# the headline fixtures


@pytest.fixture
def tmux_server(
    tmp_path: Path, request: pytest.FixtureRequest, tmuxagent_live: LiveContext | None, tmuxagent_pane_shell: str
) -> Iterator[TmuxTestServer]:
    """An isolated real tmux server (unique socket, no user config), killed after the test.
    In live mode: the user's server, with a scratch session that is killed instead."""
    server: TmuxTestServer
    if tmuxagent_live is not None:
        live_server = LiveTmuxServer(tmuxagent_live, tmp_path / "panes", pane_shell=tmuxagent_pane_shell)
        announce(request, f"{tmuxagent_live.describe()}; scratch session {live_server.scratch!r}")
        server = live_server
    else:
        server = TmuxTestServer.unique(tmp_path / "panes", pane_shell=tmuxagent_pane_shell)
    yield server
    evidence = Evidence(request.node)
    for pane in server.panes:
        try:
            evidence.lines("pane", f"{pane.name} ({pane.target}) screen tail", pane.capture(15)[-12:])
        except Exception:  # a pane the test closed has nothing to show
            continue
    server.kill()


@pytest.fixture
def agent_pane(tmux_server: TmuxTestServer) -> AgentPaneFactory:
    """Factory: `agent_pane("weather/bot", shell="zsh")` makes that session's pane on the test's
    server, running `shell` (default `tmuxagent_pane_shell`), once its prompt is drawn."""
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
    """A real HTTP server on 127.0.0.1 standing in for WeCom, recording every request, strict
    about WeCom's contract (violations fail the session: see wecom_check).
    In live mode: a recording proxy in front of the user's real WeCom."""
    mock: WeComMock
    if tmuxagent_live is not None:
        if not any(k.startswith("WECOM_") and k != "WECOM_API_BASE" for k in tmuxagent_live.env):
            pytest.skip(f"live: no WeCom configured in {tmuxagent_live.config.settings.env_file}")
        mock = WeComRecordingProxy(tmuxagent_live.env)
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
    if mock.violations:
        Evidence(request.node).lines("notifications", "WeCom contract violations", [v.line() for v in mock.violations])
    mock.stop()


@pytest.fixture
def metrics_scraper() -> type[MetricsScraper]:
    """Factory: `metrics_scraper(url, timeout=5.0)` scrapes /metrics and parses it with prometheus_client."""
    return MetricsScraper


@pytest.fixture
def tmuxagent_http_proxy() -> Iterator[HttpProxy]:
    """A real HTTP proxy on 127.0.0.1 (absolute-URI forwarding and CONNECT tunnels) recording
    where each request went; `.url` is the value for HTTP_PROXY / HTTPS_PROXY."""
    with HttpProxy() as proxy:
        yield proxy


@pytest.fixture
def tmuxagent_socks_proxy() -> Iterator[Socks5Proxy]:
    """A real SOCKS5 proxy on 127.0.0.1 without authentication, recording each tunnel's target;
    `.url` / `.url_for("socks5h")` for ALL_PROXY. With a password: `Socks5Proxy(username=, password=)`."""
    with Socks5Proxy() as proxy:
        yield proxy


@pytest.fixture
def orchestrator_service(
    tmp_path: Path,
    tmux_server: TmuxTestServer,
    request: pytest.FixtureRequest,
    tmuxagent_live: LiveContext | None,
    tmuxagent_settings: dict[str, Any],
    tmuxagent_state_dsn: str | None,
) -> Iterator[OrchestratorServiceFactory]:
    """Factory: `orchestrator_service(panes, settings={...}, env={...})` starts the real service
    (see OrchestratorServiceFactory for every keyword), its state in `tmuxagent_state_dsn`'s
    PostgreSQL database when that is set, else in its SQLite file."""
    started: list[OrchestratorService] = []

    def factory(
        panes: Iterable[AgentPane],
        *,
        settings: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        session_overrides: Mapping[str, Mapping[str, Any]] | None = None,
        start: bool = True,
        start_args: Sequence[str] = (),
    ) -> OrchestratorService:
        settings = dict(settings or {})
        env = dict(env or {})
        say = None
        if tmuxagent_live is not None:
            settings = {"codex": tmuxagent_live.codex_settings(), **settings}
            env = {**tmuxagent_live.service_env(), **env}

            def say(text: str) -> None:
                announce(request, text)

        service = make_service(
            tmp_path / f"service{len(started)}",
            tmux_server,
            panes,
            settings=settings,
            env=env,
            extra_args=extra_args,
            session_overrides=session_overrides,
            base_settings=tmuxagent_settings,
            announce=say,
            state_dsn=tmuxagent_state_dsn,
        )
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
