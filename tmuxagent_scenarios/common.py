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


def fake_only(fake_codex) -> None:
    """Skip in live mode: the test needs the scripted answers of the bundled fake codex."""
    if not isinstance(fake_codex, FakeCodex):
        pytest.skip("live: needs the scripted answers of the bundled fake codex")
