"""The /metrics exposition passes `promtool check metrics`."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import generate_latest

from orchestrator.adapters.metrics import OrchestratorMetrics


def promtool_check(text: bytes) -> subprocess.CompletedProcess[bytes]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: install Debian's `prometheus` package (.ci/run does)")
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)


def test_metrics_registry_is_per_instance() -> None:
    first, second = OrchestratorMetrics(), OrchestratorMetrics()
    first.register_session("weather/bot")
    first.commands.labels(session="weather/bot", result="succeeded").inc()
    assert (
        first.registry.get_sample_value(
            "orchestrator_commands_total", {"session": "weather/bot", "result": "succeeded"}
        )
        == 1.0
    )
    assert (
        second.registry.get_sample_value(
            "orchestrator_commands_total", {"session": "weather/bot", "result": "succeeded"}
        )
        is None
    )


def test_exposition_is_clean_under_promtool() -> None:
    metrics = OrchestratorMetrics()
    metrics.register_session("weather/bot")
    metrics.commands.labels(session="weather/bot", result="failed").inc()
    metrics.duration.labels(session="weather/bot").observe(0.2)
    metrics.heartbeat.set(1.7e9)
    result = promtool_check(generate_latest(metrics.registry))
    assert result.returncode == 0, result.stdout + result.stderr
