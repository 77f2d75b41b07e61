"""Fixtures for driving real AI coding agents (Claude Code, codex) in tests: a scripted model
server they talk to instead of the real APIs. Loaded by the tmuxagent plugin (plugin.py's
``pytest_plugins``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from .agents import (
    PROVIDERS,
    AgentHome,
    AgentHomeFactory,
    AgentProvider,
    AgentSessionFactory,
    AgentSessionOverride,
    ModelEndpoints,
    agent_version,
    find_agent,
    install_hint,
)
from .evidence import Evidence
from .live import LIVE_CAPABLE_MARKER, LiveContext
from .model_server import ModelServer
from .tmux_server import AgentPane

if TYPE_CHECKING:
    from _pytest.nodes import Node  # what `request.node` is; pytest exports no public name for it

__all__ = ["agent_session", "model_server", "tmuxagent_agent_home"]


@pytest.fixture
def model_server(request: pytest.FixtureRequest) -> Iterator[ModelServer]:
    """A real HTTP server on 127.0.0.1 speaking the Anthropic Messages and OpenAI Responses
    APIs from a per-test script (`model_server.script(text("…"), tool_call("Bash", {...}))`),
    recording every request. Stopped after the test (hung replies are dropped); its request
    log goes to the evidence."""
    server = ModelServer().start()
    try:
        yield server
    finally:
        server.stop()
        lines = server.summary()
        if lines:
            Evidence(request.node).lines("log", f"model server: {len(lines)} request(s)", lines)


# ---------------------------------------------------------------------------------------------
# the real agents (Claude Code, codex): binaries, private first-run state, session entries
#
# A missing agent skips its test with one reason (install_hint), except under CI (`CI=true`),
# where it fails. The controller counts agent tests per provider into
# reports/agents-executed.json and, under CI, fails the session when an agent test was skipped:
# CI cannot go green without the agents having really run.

AGENT_FIXTURES = frozenset({"tmuxagent_agent_home", "agent_session"})
AGENT_TEST_PROPERTY = "tmuxagent_agent_test"  # user property: the test uses an agent fixture
AGENT_PROVIDER_PROPERTY = "tmuxagent_agent"  # user property: the provider a test asked for
LIVE_SKIP_PROPERTY = "tmuxagent_live_skip"  # user property: a live-mode skip the user chose (not a CI failure)
AGENTS_EXECUTED = Path("reports") / "agents-executed.json"  # under the rootdir
_VERSIONS: dict[tuple[str, Path], str | None] = {}


def under_ci() -> bool:
    """True when the environment says CI (`CI=true`, as GitHub Actions and most CI systems set)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_agent(provider: AgentProvider) -> Path:
    """The agent's binary, answering `--version`; otherwise skip the test (fail it under CI)."""
    binary = find_agent(provider)
    reason = install_hint(provider)
    if binary is not None:
        key = (provider, binary)
        if key not in _VERSIONS:
            _VERSIONS[key] = agent_version(provider, binary)
        if _VERSIONS[key] is not None:
            return binary
        reason += f" ({binary} --version fails)"
    if under_ci():
        pytest.fail(f"{reason} [CI=true: a missing agent fails]", pytrace=False)
    pytest.skip(reason)


def live_skip(node: pytest.Item | Node, reason: str) -> NoReturn:
    """Skip a live agent test for a reason the user's own choice decides (no opt-in to spend
    tokens, a test that needs scripted replies): recorded so that CI=true does not fail it."""
    properties: list[tuple[str, object]] = getattr(node, "user_properties", [])
    properties.append((LIVE_SKIP_PROPERTY, reason))
    pytest.skip(reason)


NOT_LIVE_CAPABLE = (
    "live: this agent test scripts the model server's replies, which your real model account cannot "
    f"give, so it runs only embedded (a test that needs no scripted reply is marked {LIVE_CAPABLE_MARKER})"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if AGENT_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.user_properties.append((AGENT_TEST_PROPERTY, True))


class AgentRunLedger:
    """Controller side: which agent tests passed, per provider (the reports ride over xdist)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.tests: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = [(p[0], p[1]) for p in report.user_properties]
        if not any(name in (AGENT_TEST_PROPERTY, AGENT_PROVIDER_PROPERTY) for name, _ in props):
            return
        entry = self.tests.setdefault(report.nodeid, {"providers": set(), "passed": False, "bad": None})
        entry["providers"].update(v for name, v in props if name == AGENT_PROVIDER_PROPERTY)
        if report.skipped and any(name == LIVE_SKIP_PROPERTY for name, _ in props):
            entry["live_skip"] = True  # the user's choice in live mode: neither run nor a CI failure
        elif report.skipped:
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            entry["bad"] = entry["bad"] or f"skipped: {reason}"
        elif report.failed:
            entry["bad"] = entry["bad"] or f"failed in {report.when}"
        elif report.when == "call":
            entry["passed"] = True

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(PROVIDERS, 0)
        for entry in self.tests.values():
            if entry["passed"] and not entry["bad"]:
                for provider in entry["providers"]:
                    counts[provider] = counts.get(provider, 0) + 1
        return counts

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.tests:
            return
        path = self.config.rootpath / AGENTS_EXECUTED
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.counts(), indent=2, sort_keys=True) + "\n")
        if not under_ci():
            return
        self.problems = [
            f"{nodeid}: {entry['bad']}"
            for nodeid, entry in self.tests.items()
            if entry["bad"] and "skipped" in entry["bad"]
        ]
        if self.problems and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.problems:
            terminalreporter.section("tmuxagent: agent tests skipped under CI", sep="=", red=True)
            for line in self.problems:
                terminalreporter.write_line(line)
            terminalreporter.write_line("CI=true: every agent test must run; the session fails.")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{LIVE_CAPABLE_MARKER}: an agent test that needs no scripted model reply, so --tmuxagent-live runs "
        "it against your own agent and account (when you allowed that provider to spend tokens)",
    )
    if not hasattr(config, "workerinput"):  # the controller, or a run without xdist
        config.pluginmanager.register(AgentRunLedger(config), "tmuxagent-agent-ledger")


def _live_home(
    live: LiveContext, provider: AgentProvider, folder: Path, root: Path, model: str | None, node: pytest.Item | Node
) -> AgentHome:
    """Live mode: the user's own agent, when they allowed it to spend tokens (else skip)."""
    if provider not in live.spend_tokens:
        live_skip(node, live.opt_in_reason(provider))
    binary = live.agent_binary(provider)
    if binary is None:
        reason = live.missing_agent_reason(provider)
        if under_ci():
            pytest.fail(f"{reason} [CI=true: a missing agent fails]", pytrace=False)
        pytest.skip(reason)
    home = live.agent_home(provider, folder, root, binary, model=model)
    Evidence(node).add(
        "note",
        "live plan",
        f"{provider}: your own {binary} with your HOME {home.home} and model account, no scripted model "
        "server — this test spends tokens",
    )
    return home


@pytest.fixture
def tmuxagent_agent_home(
    tmp_path: Path, request: pytest.FixtureRequest, tmuxagent_live: LiveContext | None
) -> Iterator[AgentHomeFactory]:
    """Factory: `tmuxagent_agent_home(provider, workdir, model_server) -> AgentHome` — the agent's
    binary (skip when missing; fail under CI) and a private first-run state for `workdir` (a Path
    or an AgentPane) pointed at `model_server`; `.env` is what the agent runs with. After the
    test every process under each home (the agent, codex's app-server daemons) is ended, by pid.

    Live mode: a test not marked `tmuxagent_live_capable` skips; one that is gets the user's own
    agent, HOME and provider variables (no scripted model server) for each provider the user
    allowed to spend tokens (`TMUXAGENT_LIVE_SPEND_TOKENS`), and skips for the others."""
    if tmuxagent_live is not None and request.node.get_closest_marker(LIVE_CAPABLE_MARKER) is None:
        live_skip(request.node, NOT_LIVE_CAPABLE)
    homes: list[AgentHome] = []

    def factory(
        provider: AgentProvider,
        workdir: Path | AgentPane,
        model_server: ModelEndpoints,
        *,
        model: str | None = None,
    ) -> AgentHome:
        request.node.user_properties.append((AGENT_PROVIDER_PROPERTY, provider))
        folder = workdir.workdir if isinstance(workdir, AgentPane) else Path(workdir)
        root = tmp_path / f"agent-{provider}-{len(homes)}"
        if tmuxagent_live is not None:
            home = _live_home(tmuxagent_live, provider, folder, root, model, request.node)
        else:
            binary = require_agent(provider)
            home = AgentHome.prepare(provider, folder, model_server, root, binary=binary, model=model)
        homes.append(home)
        return home

    yield factory
    errors: list[str] = []
    reaped: list[str] = []
    for home in homes:
        try:
            reaped += [f"{home.provider}: pid {pid}" for pid in home.reap()]
        except RuntimeError as error:
            errors.append(str(error))
    if reaped:
        Evidence(request.node).lines("note", f"{len(reaped)} agent process(es) ended at teardown", reaped)
    assert not errors, errors


@pytest.fixture
def agent_session(tmuxagent_agent_home: AgentHomeFactory) -> AgentSessionFactory:
    """Factory: `agent_session(provider, workdir, model_server) ->` the keys that make a session
    an agent session — `{"kind": "agent", "provider": …, "launch": "<absolute binary path>",
    "env": {…}}` — for `orchestrator_service(panes, session_overrides={name: …})`. Its home is
    a `tmuxagent_agent_home`, reaped after the test."""

    def factory(
        provider: AgentProvider,
        workdir: Path | AgentPane,
        model_server: ModelEndpoints,
        *,
        model: str | None = None,
    ) -> AgentSessionOverride:
        return tmuxagent_agent_home(provider, workdir, model_server, model=model).session_override()

    return factory
