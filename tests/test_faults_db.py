"""The state DB under faults, against the real orchestrator and CLIs: a full disk, a lock held
past the busy timeout, a corrupt file, and many concurrent senders. Each case is bounded in time.

Nothing accepted may be lost or done twice: a queued command stays queued through the fault and
runs once after it; a result whose write was refused is written once when the fault clears.
"""

from __future__ import annotations

import collections
import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.state.store import StateStore
from pytest_tmuxagent.service import OrchestratorService, cli_path
from pytest_tmuxagent.waiting import wait_until

SESSION = "weather/bot"
PATIENT = {"stall_timeout_seconds": 120}  # the gated command below is quiet on purpose: no stall
FAULT_LINE = "state DB fault:"
RECOVERED_LINE = "state DB writable again"


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs under tmp_path (this suite runs as root), unmounted after the test."""
    mount_point = tmp_path / "tinyfs"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if done.returncode != 0:
        pytest.fail(
            f"cannot mount a tmpfs at {mount_point}: {done.stderr.strip() or done.returncode} — the full-disk "
            "case needs root (or CAP_SYS_ADMIN) to mount a small filesystem"
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=10)


def fill(folder: Path) -> Path:
    """Write a file until the filesystem has no byte left."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1 << 8, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    assert os.statvfs(folder).f_bavail == 0
    return filler


def metric(service: OrchestratorService, kind: str) -> float:
    assert service.metrics is not None
    return service.metrics.value("orchestrator_state_db_errors_total", kind=kind) or 0.0


def db_service(orchestrator_service, panes, state_db: Path, runtime: Path) -> OrchestratorService:
    service: OrchestratorService = orchestrator_service(
        panes, start=False, settings={**PATIENT, "runtime_dir": str(runtime)}
    )
    service.state_db = state_db
    service.write_config()
    return service


# the first command ends when the test says so (touching `go` in the pane's folder)
GATED = "until [ -e go ]; do sleep 0.1; done; echo first >> ran.log"


def one_result_each(service: OrchestratorService, ids: list[int]) -> None:
    results = collections.Counter(e["command_id"] for e in service.audit_events(event="command_result"))
    assert {i: results[i] for i in ids} == {i: 1 for i in ids}


# (a) a full disk under the state DB -----------------------------------------------------------


def test_state_db_on_a_full_disk_survives_and_resumes(agent_pane, orchestrator_service, tiny_fs, tmp_path) -> None:
    pane = agent_pane(SESSION)
    service = db_service(orchestrator_service, [pane], tiny_fs / "state.db", tmp_path / "run").start()
    first = service.send(SESSION, GATED)
    second = service.send(SESSION, "echo second >> ran.log")
    wait_until(lambda: service.command(first).status == "running", timeout=15, message="first never ran")

    filler = fill(tiny_fs)
    refused = service.cli("send", SESSION, "--", "echo never >> ran.log", check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "disk full under" in refused.stderr and str(tiny_fs / "state.db") in refused.stderr

    (pane.workdir / "go").touch()
    ran = pane.workdir / "ran.log"
    wait_until(lambda: ran.exists() and "first" in ran.read_text(), timeout=10, message="first never finished")
    # the result write is refused and retried: the loop keeps going, and says so once
    wait_until(lambda: metric(service, "disk_full") >= 3, timeout=15, message=service.log_text()[-1500:])
    assert service.process.poll() is None
    assert (service.command(first).status, service.command(second).status) == ("running", "queued")
    assert service.log_text().count(FAULT_LINE) == 1
    assert "disk full under" in service.log_text() and "Traceback" not in service.log_text()

    filler.unlink()
    rows = [service.wait_result(i, timeout=20) for i in (first, second)]
    assert [r.status for r in rows] == ["succeeded", "succeeded"]
    assert ran.read_text().split() == ["first", "second"]
    one_result_each(service, [first, second])
    assert service.log_text().count(FAULT_LINE) == 1 and service.log_text().count(RECOVERED_LINE) == 1
    assert service.wait_result(service.send(SESSION, "true")).status == "succeeded"


# (b) an external lock held longer than the busy timeout ----------------------------------------

HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def test_an_external_lock_held_13s_is_waited_out(agent_pane, orchestrator_service, tmp_path) -> None:
    pane = agent_pane(SESSION)
    service = orchestrator_service([pane], settings=PATIENT)
    first = service.send(SESSION, GATED)
    second = service.send(SESSION, "echo second >> ran.log")
    wait_until(lambda: service.command(first).status == "running", timeout=15, message="first never ran")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(service.state_db), "13"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        locked_at = time.monotonic()
        (pane.workdir / "go").touch()  # its result is written under the lock
        wait_until(lambda: metric(service, "locked") >= 1, timeout=15, message=service.log_text()[-1500:])
        assert service.process.poll() is None
        assert service.command(second).status == "queued"
        assert holder.wait(timeout=20) == 0
    finally:
        holder.kill()
    rows = [service.wait_result(i, timeout=20) for i in (first, second)]
    assert time.monotonic() - locked_at >= 12
    assert [r.status for r in rows] == ["succeeded", "succeeded"]
    assert (pane.workdir / "ran.log").read_text().split() == ["first", "second"]
    one_result_each(service, [first, second])
    text = service.log_text()
    assert text.count(FAULT_LINE) == 1 and "database is locked (held by another process: pid" in text
    assert service.process.poll() is None


# (c) a corrupt, garbage or truncated state.db ---------------------------------------------------


def _broken(kind: str, path: Path) -> None:
    if kind == "garbage":
        path.write_bytes(os.urandom(8192))
    elif kind == "text":
        path.write_text("this is not a database\n")
    else:
        store = StateStore(path)
        for i in range(300):
            store.enqueue(SESSION, f"echo {i} " + "x" * 200)
        store.close()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("kind", ["garbage", "text", "truncated"])
def test_a_broken_state_db_is_one_line_and_exit_2_everywhere(agent_pane, orchestrator_service, kind) -> None:
    service: OrchestratorService = orchestrator_service([agent_pane(SESSION)], start=False)
    service.state_db.parent.mkdir(parents=True, exist_ok=True)
    _broken(kind, service.state_db)
    runs = {
        "status": service.cli("status", check=False),
        "send": service.cli("send", "--no-check", SESSION, "--", "true", check=False),
        "orchestrator": subprocess.run(
            [cli_path("tmux-agent-orchestrator"), "--config", str(service.config_path)],
            capture_output=True,
            text=True,
            timeout=20,
            cwd=str(service.root),
        ),
    }
    for name, done in runs.items():
        lines = done.stderr.strip().splitlines()
        assert (done.returncode, len(lines)) == (2, 1), f"{name}: {done.stderr}"
        assert str(service.state_db) in lines[0] and "not a readable SQLite database" in lines[0], name
        assert "Traceback" not in done.stderr


# (d) many senders at once ----------------------------------------------------------------------

# One process per sender, each running `tmux-agent send`'s own code 50 times (its argv parsed
# once: building the parser is most of a send's CPU, and 500 process starts would not fit the
# time box on two cores).
SENDER = """
import sys
from orchestrator.cli.common import run_cli
from orchestrator.cli.main import build_parser, cmd_send
config, session, sender, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
args = build_parser().parse_args(["send", "--config", config, "--no-check", session, "--", "x"])
for i in range(count):
    args.command = ["--", f"echo {sender}-{i}"]
    code = run_cli("tmux-agent", lambda: cmd_send(args))
    if code != 0:
        sys.exit(code)
"""


def test_ten_concurrent_senders_lose_nothing_and_keep_their_order(agent_pane, orchestrator_service) -> None:
    service: OrchestratorService = orchestrator_service([agent_pane(SESSION)], start=False)
    senders, count = 10, 50
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SENDER, str(service.config_path), SESSION, f"s{k}", str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(service.root),
        )
        for k in range(senders)
    ]
    printed: dict[str, list[int]] = {}
    for k, proc in enumerate(procs):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        printed[f"s{k}"] = [int(line) for line in out.split()]
    assert time.monotonic() - started < 45  # about 15 s on two idle cores
    store = service.store()
    try:
        rows = store.queued(SESSION)
    finally:
        store.close()
    every_id = [i for ids in printed.values() for i in ids]
    assert len(every_id) == len(set(every_id)) == senders * count  # none lost, none twice
    assert sorted(r.id for r in rows) == sorted(every_id)
    by_id = {r.id: r.command for r in rows}
    for sender, ids in printed.items():
        assert ids == sorted(ids)  # each sender's commands are queued in the order it sent them
        assert [by_id[i] for i in ids] == [f"echo {sender}-{i}" for i in range(count)]
    queued = collections.Counter(e["command_id"] for e in service.audit_events(event="command_queued"))
    assert queued == {i: 1 for i in every_id}
