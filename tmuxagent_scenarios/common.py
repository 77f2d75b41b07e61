"""Helpers the scenarios share."""

from __future__ import annotations

import pytest

from pytest_tmuxagent.fake_codex import FakeCodex
from pytest_tmuxagent.waiting import wait_until


def loop_ran(service, rounds: int = 3) -> None:
    """Wait until the supervisor loop has run a few more rounds (its heartbeat moves)."""
    seen: set[float] = set()

    def moved() -> bool:
        seen.add(service.metrics.value("orchestrator_heartbeat_timestamp_seconds") or 0.0)
        return len(seen - {0.0}) >= rounds

    wait_until(moved, timeout=10, interval=0.05, message="supervisor loop rounds")


def supervised_for(service, seconds: float, message: str = "the supervisor to run on") -> None:
    """Wait until the supervisor loop has run on for `seconds` more of its own clock (its
    heartbeat moves past now + seconds): e.g. three stall timeouts, to show nothing fired."""
    wait_until(lambda: service.metrics.value("orchestrator_heartbeat_timestamp_seconds"), timeout=5)
    first = service.metrics.value("orchestrator_heartbeat_timestamp_seconds") or 0.0
    wait_until(
        lambda: (service.metrics.value("orchestrator_heartbeat_timestamp_seconds") or 0.0) > first + seconds,
        timeout=seconds + 12,
        message=message,
    )


def fake_only(fake_codex) -> None:
    """Skip in live mode: the test needs the scripted answers of the bundled fake codex."""
    if not isinstance(fake_codex, FakeCodex):
        pytest.skip("live: needs the scripted answers of the bundled fake codex")
