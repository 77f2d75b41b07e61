"""No orphans: a codex the orchestrator started dies with it — also when the orchestrator is
SIGKILLed mid-call and runs no code at all — and a restart kills what a killed run left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters.children import MARKER, reap_orphans, spawner_mark
from pytest_tmuxagent.fake_codex import FakeCodex
from pytest_tmuxagent.waiting import wait_until

SESSION = "weather/bot"
BLOCKER = "weather API calls fail with 401 Unauthorized: OPENAI_API_KEY is missing"


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie may wait for a reaper that never comes)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def hanging_codex_call(fake_codex: FakeCodex) -> int:
    [call] = fake_codex.wait_for_calls(1, timeout=20)
    pid = int(call["pid"])
    assert alive(pid)
    return pid


@pytest.fixture
def leftovers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)


def test_sigkill_of_the_orchestrator_takes_a_hanging_codex_with_it(
    agent_pane: Any, orchestrator_service: Any, fake_codex: Any
) -> None:
    if not isinstance(fake_codex, FakeCodex):
        pytest.skip("needs the fake codex's hang")
    fake_codex.script([{"kind": "hang"}])
    service = orchestrator_service(
        [agent_pane(SESSION)],
        settings={"ai": {"backend": "codex"}, "decision": {"enabled": True, "pane_scan_seconds": 0.2}},
        env={"CODEX_TIMEOUT_SECONDS": "120"},  # only the orchestrator's death can end this call
    )
    service.meta_set(SESSION, "blockers", [BLOCKER])
    codex = hanging_codex_call(fake_codex)
    service.kill()
    wait_until(lambda: not alive(codex), timeout=5, message=f"codex pid {codex} gone after SIGKILL of its orchestrator")


CHILD_SCRIPT = """
import sys, time
from orchestrator.adapters.ai_client import AIRequest, CodexBackend
from orchestrator.config import CodexConfig
import os
backend = CodexBackend(CodexConfig(bin=sys.argv[1], timeout_seconds=120), lambda: dict(os.environ))
backend.complete(AIRequest("decision", "hi", {"type": "object"}, "x"), 120)
"""


@pytest.mark.parametrize("bin_kind", ["plain", "shell string"])
def test_a_killed_caller_takes_the_whole_codex_group_with_it(
    fake_codex: FakeCodex, tmp_path: Path, bin_kind: str
) -> None:
    if not isinstance(fake_codex, FakeCodex):
        pytest.skip("needs the fake codex's hang")
    fake_codex.script([{"kind": "hang"}])
    # a shell string whose pipeline leaves a grandchild: codex behind `sleep`'s sibling
    bin_text = "codex" if bin_kind == "plain" else f"sleep 300 & {fake_codex.path}"
    caller = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD_SCRIPT), bin_text],
        env={**os.environ, "CODEX_TIMEOUT_SECONDS": "120"},
        cwd=str(tmp_path),
    )
    try:
        codex = hanging_codex_call(fake_codex)
        group = os.getpgid(codex)
        caller.send_signal(signal.SIGKILL)
        caller.wait(timeout=5)
        wait_until(lambda: not alive(codex), timeout=5, message=f"codex pid {codex} gone after SIGKILL of its caller")
        members = [p for p in Path("/proc").iterdir() if p.name.isdigit() and alive(int(p.name))]
        in_group = []
        for p in members:
            try:
                if os.getpgid(int(p.name)) == group:
                    in_group.append(int(p.name))
            except ProcessLookupError:
                continue
        wait_until(
            lambda: not [pid for pid in in_group if alive(pid)], timeout=5, message=f"group {group} gone: {in_group}"
        )
    finally:
        if caller.poll() is None:
            caller.kill()


def _marked_sleep(mark: str, leftovers: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sleep", "300"], env={**os.environ, MARKER: mark}, start_new_session=True)
    leftovers.append(proc)
    wait_until(lambda: MARKER.encode() in Path(f"/proc/{proc.pid}/environ").read_bytes(), timeout=5)
    return proc


def test_reaping_kills_only_marked_processes_whose_spawner_is_gone(leftovers: list[subprocess.Popen[bytes]]) -> None:
    dead_spawner = _marked_sleep("999999999:1", leftovers)
    reused_pid = _marked_sleep(f"{os.getpid()}:1", leftovers)  # our pid, another start time: not us
    ours = _marked_sleep(spawner_mark(), leftovers)  # a living spawner's child
    plain = subprocess.Popen(["sleep", "300"], start_new_session=True)
    leftovers.append(plain)
    killed = reap_orphans()
    assert dead_spawner.pid in killed and reused_pid.pid in killed
    assert dead_spawner.wait(timeout=5) == -signal.SIGKILL and reused_pid.wait(timeout=5) == -signal.SIGKILL
    assert ours.poll() is None and plain.poll() is None and ours.pid not in killed


def test_a_restart_reaps_what_a_killed_run_left_behind(
    agent_pane: Any, orchestrator_service: Any, leftovers: list[subprocess.Popen[bytes]]
) -> None:
    orphan = _marked_sleep("999999999:1", leftovers)  # a codex whose orchestrator was SIGKILLed
    service = orchestrator_service([agent_pane(SESSION)])
    assert orphan.wait(timeout=5) == -signal.SIGKILL
    assert "left behind by an orchestrator that died" in (service.log_dir / "orchestrator.log").read_text()
