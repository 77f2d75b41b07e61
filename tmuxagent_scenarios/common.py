"""Helpers the scenarios share."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_tmuxagent.fake_codex import FakeCodex
from pytest_tmuxagent.service import cli_path
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


def replay_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`tmux-agent-orchestrator-replay ARGS`, run as a person runs it."""
    return subprocess.run(
        [cli_path("tmux-agent-orchestrator-replay"), *args], capture_output=True, text=True, timeout=60
    )


def replay_matching(log: Path, service) -> tuple[dict[str, Any], str]:  # type: ignore[no-untyped-def]
    """Replay `log` against the service's state DB (`--verify-db FILE` or `--dsn DSN`, `--json`);
    return the summary and replay's stderr once it exits 0 and says the DB matches the log (bad
    lines may be reported in `problems`)."""
    replayed = replay_cli("--log", str(log), *service.verify_args, "--json")
    if replayed.returncode == 1:  # say how the DB differs, not the whole summary
        differences = json.loads(replayed.stdout)["verify"]["differences"]
        raise AssertionError(f"replay --verify-db: the state DB differs from the audit log: {differences}")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    summary = json.loads(replayed.stdout)
    assert summary["verify"] == {"db": service.state_where, "ok": True, "differences": []}
    return dict(summary), replayed.stderr


def replay_verified(service) -> dict:  # type: ignore[no-untyped-def]
    """Stop the service, replay its audit log against its state DB (`--verify-db --json`), and
    return the summary once replay says the DB matches the log and no line is bad."""
    assert service.stop() == 0
    summary, _ = replay_matching(service.audit_log, service)
    assert summary["problems"] == []
    return summary


def fake_only(fake_codex) -> None:
    """Skip in live mode: the test needs the scripted answers of the bundled fake codex."""
    if not isinstance(fake_codex, FakeCodex):
        pytest.skip("live: needs the scripted answers of the bundled fake codex")
