"""pytest_tmuxagent: real tmux servers, agent panes, a fake codex, a WeCom mock, a metrics
scraper and a running orchestrator for tests — and the A–G playbook's report and gate.

The fixtures load with the `tmuxagent` pytest plugin (entry point `pytest11`, or
`-p tmuxagent`); this module is the typed surface to build on: the classes the fixtures
return, the factory protocols to annotate them with, the waiting helper, the evidence
recorder and the scenario registry. docs/pytest-plugin.md is the reference.
"""

from __future__ import annotations

from .dashboard import DashboardProcess, DashboardServerFactory
from .evidence import Evidence, EvidenceItem
from .fake_codex import FakeCodex
from .live import LiveCodex, LiveContext
from .metrics_scraper import MetricsScraper, MetricsSnapshot
from .model_server import (
    HangReply,
    ModelRequest,
    ModelServer,
    ToolResult,
    garbage,
    hang,
    http_error,
    overloaded,
    rate_limited,
    server_error,
    text,
    tool_call,
)
from .prometheus import PrometheusServer, PrometheusServerFactory
from .registry import BUILTIN_SCENARIOS, EPIC, Scenario, builtin, scenarios
from .report import Criterion, ScenarioSummary, scenarios_pass
from .service import COMPRESSED_SETTINGS, OrchestratorService, OrchestratorServiceFactory, make_service
from .shells import SHELL_NAMES, SUPPORTED_SHELL_NAMES, PaneShell, ShellName, prepare_shell
from .tmux_server import PANE_SHELL, AgentPane, AgentPaneFactory, TmuxTestServer
from .waiting import WaitTimeout, wait_until
from .wecom_mock import WeComMock

__all__ = [
    "BUILTIN_SCENARIOS",
    "COMPRESSED_SETTINGS",
    "EPIC",
    "PANE_SHELL",
    "SHELL_NAMES",
    "SUPPORTED_SHELL_NAMES",
    "AgentPane",
    "AgentPaneFactory",
    "Criterion",
    "DashboardProcess",
    "DashboardServerFactory",
    "Evidence",
    "EvidenceItem",
    "FakeCodex",
    "HangReply",
    "LiveCodex",
    "LiveContext",
    "MetricsScraper",
    "MetricsSnapshot",
    "ModelRequest",
    "ModelServer",
    "OrchestratorService",
    "OrchestratorServiceFactory",
    "PaneShell",
    "PrometheusServer",
    "PrometheusServerFactory",
    "Scenario",
    "ScenarioSummary",
    "ShellName",
    "TmuxTestServer",
    "ToolResult",
    "WaitTimeout",
    "WeComMock",
    "builtin",
    "garbage",
    "hang",
    "http_error",
    "make_service",
    "overloaded",
    "prepare_shell",
    "rate_limited",
    "scenarios",
    "scenarios_pass",
    "server_error",
    "text",
    "tool_call",
    "wait_until",
]
