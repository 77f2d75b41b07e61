"""The audit log under faults: concurrent writer processes, a torn end, a full disk (a real tmpfs).

Every case runs real files and, where the fault is between processes, real subprocesses; each is
bounded in time (waits have deadlines, never bare sleeps).
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.state.audit import AuditLog, AuditWriteError
from orchestrator.state.audit_read import read_events

REPO = Path(__file__).resolve().parents[1]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class Tmpfs:
    """A small tmpfs mounted under the test's tmp_path, and a filler file that takes its space."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> None:
        """Take every free byte: the next write that needs a page fails with ENOSPC."""
        chunk = b"x" * 4096
        with self.filler.open("ab", buffering=0) as fh:
            while True:
                try:
                    fh.write(chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
        for size in (512, 64, 1):  # the last partial page too
            with self.filler.open("ab", buffering=0) as fh:
                while True:
                    try:
                        fh.write(b"x" * size)
                    except OSError:
                        break

    def leave(self, room: int) -> None:
        """Give back `room` bytes of the filler."""
        with self.filler.open("r+b") as fh:
            fh.truncate(max(0, self.filler.stat().st_size - room))

    def free(self) -> None:
        self.filler.unlink()


def _mount(target: Path, size: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], capture_output=True, text=True
    )
    if done.returncode != 0:
        # never skip silently: the fault suite exists to run these cases
        pytest.fail(
            f"cannot mount a tmpfs at {target} ({done.stderr.strip()}); run the suite as root, or inside "
            "`unshare --user --map-root-user --mount`"
        )


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Tmpfs]]:
    """Mount tmpfs filesystems of a given size under tmp_path; each is unmounted at teardown."""
    mounted: list[Path] = []

    def make(size: str) -> Tmpfs:
        target = tmp_path / f"tmpfs{len(mounted)}"
        _mount(target, size)
        mounted.append(target)
        return Tmpfs(target)

    try:
        yield make
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def full_tmpfs(tmpfs: Callable[[str], Tmpfs]) -> Tmpfs:
    """A 64 KiB tmpfs (root can mount on this machine); the test fills it with `fill()`."""
    return tmpfs("64k")


# ---------------------------------------------------------------------------------------------------
# two writer processes hammering one file

WRITER = r"""
import random, sys, time
from pathlib import Path
from orchestrator.state.audit import AuditLog

path, name, count, repeat, mode = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rng = random.Random(name)
log = AuditLog(path) if mode == "cli" else AuditLog.for_service(path)
for i in range(count):
    # varying length, up to a few KB, with multi-byte characters so a cut could land inside one
    detail = f"{name}:{i}:" + "é✓x" * rng.randint(0, repeat)
    log.record("metadata_set", "weather/bot", detail=detail)
deadline = time.monotonic() + 60
while log.pending and time.monotonic() < deadline:  # a full disk: wait until the test frees it
    log.flush()
    time.sleep(0.005)
log.close()
sys.exit(0 if log.pending == 0 else 3)
"""


def _writers(
    path: Path, count: int, mode: str, repeat: int = 700, names: tuple[str, ...] = ("a", "b")
) -> list[subprocess.Popen[bytes]]:
    """Writer processes, each recording `count` events; mode "cli" fsyncs every line, "service" defers."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name, str(count), str(repeat), mode],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in names
    ]


def _check_every_line(path: Path, count: int, names: tuple[str, ...] = ("a", "b")) -> None:
    result = read_events(path, validate=True)
    assert result.problems == []
    seen: dict[str, list[int]] = {name: [] for name in names}
    for event in result.events:
        name, index, _ = event["detail"].split(":", 2)
        seen[name].append(int(index))
    for name in names:
        assert seen[name] == list(range(count)), f"writer {name}: lines lost, duplicated or out of order"


def test_two_writer_processes_never_tear_a_line(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "orchestrator-actions.jsonl"
    procs = _writers(path, 2000, "service")  # the CLI's fsync per line would make this minutes, not seconds
    for proc in procs:
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err.decode()
    _check_every_line(path, 2000)


def test_two_writers_on_a_disk_that_fills_and_frees_keep_every_line_whole(tmpfs: Callable[[str], Tmpfs]) -> None:
    """The disk fills mid-hammer (short writes inside lines), then space returns: every line whole, once."""
    disk = tmpfs("8m")
    disk.fill()
    disk.leave(24 * 1024)  # both writers start; the disk fills inside their lines
    path = disk.root / "orchestrator-actions.jsonl"
    procs = _writers(path, 300, "cli", repeat=300)
    wait_for(
        lambda: all(b"No space left on device" in _peek_stderr(p) for p in procs),
        30,
        "both writers to say the disk is full",
    )
    disk.free()
    for proc in procs:
        proc.wait(timeout=60)
        err = _peek_stderr(proc).decode()
        assert proc.returncode == 0, err
        assert err.count("No space left on device") == err.count("writable again") >= 1, err
    _check_every_line(path, 300)


_STDERR: dict[int, bytes] = {}


def _peek_stderr(proc: subprocess.Popen[bytes]) -> bytes:
    """Non-blocking read of what a writer said on stderr so far."""
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    try:
        chunk = os.read(proc.stderr.fileno(), 65536)
    except BlockingIOError:
        chunk = b""
    _STDERR[proc.pid] = _STDERR.get(proc.pid, b"") + chunk
    return _STDERR[proc.pid]


# ---------------------------------------------------------------------------------------------------
# a torn end


def test_after_a_torn_last_line_the_next_start_writes_an_intact_line(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator-actions.jsonl"
    AuditLog(path).record("orchestrator_started", None, detail="1 sessions")
    with path.open("ab") as fh:  # a crash inside the next line's write
        fh.write(b'{"ts": "2026-01-01T00:00:00.000000Z", "event": "command_res')
    AuditLog(path).record("orchestrator_started", None, detail="1 sessions")  # the next start
    result = read_events(path, validate=True)
    assert [e["event"] for e in result.events] == ["orchestrator_started", "orchestrator_started"]
    assert len(result.problems) == 1
    assert result.problems[0].startswith(f"{path}:2: cut short")


def test_the_reader_recovers_an_event_glued_onto_a_torn_line(tmp_path: Path) -> None:
    """A log written before the guard: the torn fragment is named, the event glued onto it is kept."""
    path = tmp_path / "a.jsonl"
    whole = '{"ts": "2026-01-01T00:00:01.0Z", "event": "orchestrator_started", "session": null}'
    path.write_text('{"ts": "2026-01-01T00:00:00.0Z", "event": "comm' + whole + "\n")
    result = read_events(path, validate=True)
    assert [e["event"] for e in result.events] == ["orchestrator_started"]
    assert result.problems == [
        f"{path}:1: cut short at column 48 and another event glued onto it (a write that did not finish); "
        "the fragment is skipped, the glued event is kept"
    ]


def test_the_reader_names_each_bad_line_and_why(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    good = '{"ts": "2026-01-01T00:00:00.0Z", "event": "orchestrator_started", "session": null}'
    path.write_bytes(
        (good + "\n").encode()
        + b"garbage\n"
        + b'["a list"]\n'
        + b'{"ts": "\xff\xfe", "event": "x"}\n'
        + b'{"ts": "2026-01-01T00:00:00.0Z", "event": "made_up", "session": null}\n'
        + (good + "\n").encode()
    )
    problems = read_events(path, validate=True).problems
    assert problems == [
        f"{path}:2: not JSON (Expecting value at column 1); skipped",
        f"{path}:3: not a JSON object (a list); skipped",
        f"{path}:4: not UTF-8 (byte 0xff at column 9); skipped",
        f"{path}:5: not a valid audit event (event: 'made_up' is not an allowed value); skipped",
    ]


# ---------------------------------------------------------------------------------------------------
# a full disk


def test_disk_full_is_said_once_kept_in_memory_and_written_when_space_returns(
    full_tmpfs: Tmpfs, capsys: pytest.CaptureFixture[str]
) -> None:
    path = full_tmpfs.root / "orchestrator-actions.jsonl"
    log = AuditLog(path)
    log.record("orchestrator_started", None)  # the file exists and ends whole
    full_tmpfs.fill()
    for i in range(5):
        # longer than a page: it cannot fit in the slack of the file's last page
        log.record("metadata_set", "weather/bot", detail=f"key{i} " + "v" * 5000)
    assert log.pending == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "No space left on device" in err and str(path) in err and "kept in memory" in err
    with pytest.raises(AuditWriteError) as raised:
        log.flush(strict=True)
    assert raised.value.exit_code == 1 and "5 audit event(s)" in str(raised.value)
    assert capsys.readouterr().err == ""  # still the same episode: not said again

    full_tmpfs.free()
    log.record("orchestrator_stopped", None)
    assert log.pending == 0
    log.flush(strict=True)  # written and synced: no error
    events = read_events(path, validate=True)
    assert events.problems == []
    assert [e["event"] for e in events.events] == ["orchestrator_started"] + ["metadata_set"] * 5 + [
        "orchestrator_stopped"
    ]
    assert [e.get("detail", "")[:4] for e in events.events[1:6]] == ["key0", "key1", "key2", "key3", "key4"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "writable again" in err and "6 event(s) written" in err


def test_the_service_log_retries_on_its_own_and_logs_each_episode_once(
    full_tmpfs: Tmpfs, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator.state.audit")
    path = full_tmpfs.root / "orchestrator-actions.jsonl"
    refused: list[OSError] = []
    log = AuditLog.for_service(path, on_write_error=refused.append, sync_interval_s=0.05)
    try:
        full_tmpfs.fill()
        for i in range(3):
            log.record("metadata_set", "weather/bot", detail=f"k{i} " + "v" * 5000)
        assert log.pending == 3 and len(refused) == 3  # one count per refused line, not per retry
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "No space left on device" in warnings[0].getMessage()
        full_tmpfs.free()
        wait_for(lambda: log.pending == 0, 10, "the background retry to write the kept lines")  # no new record
        assert [e["detail"][:2] for e in read_events(path, validate=True).events] == ["k0", "k1", "k2"]
        assert any("writable again" in r.getMessage() for r in caplog.records)
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    finally:
        log.close()
    assert capsys.readouterr().err == ""  # the service logs; it does not print


def test_a_bounded_queue_counts_the_lines_it_dropped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = AuditLog(Path("/dev/full"), max_pending=3)
    for i in range(5):
        log.record("metadata_set", "weather/bot", detail=f"k{i}")
    assert log.pending == 3 and log.dropped == 2
    log.path = tmp_path / "a.jsonl"  # space returns
    log.flush()
    events = read_events(log.path, validate=True).events
    assert [e["detail"] for e in events[:3]] == ["k0", "k1", "k2"]
    assert events[3]["event"] == "audit_write_failed" and events[3]["detail"].startswith("2 event(s) dropped")
    assert len(events) == 4
    err = capsys.readouterr().err
    assert "2 event(s) dropped" in err


def test_a_short_write_leaves_no_fragment(full_tmpfs: Tmpfs) -> None:
    """The disk fills inside a line: the part written is taken back, the line is kept whole for later."""
    path = full_tmpfs.root / "orchestrator-actions.jsonl"
    log = AuditLog(path)
    log.record("orchestrator_started", None)
    full_tmpfs.fill()
    # tmpfs counts pages: the line fills the slack of the file's last page, then the disk is full
    log.record("metadata_set", "weather/bot", detail="v" * 5000)
    assert log.pending == 1
    assert path.read_bytes().endswith(b"\n") and path.read_bytes().count(b"\n") == 1
    full_tmpfs.free()
    log.flush()
    assert read_events(path, validate=True).problems == []


# ---------------------------------------------------------------------------------------------------
# fsync cadence


def test_a_cli_log_syncs_every_write_and_the_service_log_at_most_every_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    cli = AuditLog(tmp_path / "cli.jsonl")
    for _ in range(5):
        cli.record("metadata_set", "weather/bot", detail="k")
    assert len(synced) >= 5  # every line (plus the folder, once, when the file is created)

    synced.clear()
    service = AuditLog.for_service(tmp_path / "svc.jsonl", sync_interval_s=0.2)
    try:
        started = time.monotonic()
        for _ in range(200):
            service.record("metadata_set", "weather/bot", detail="k")
        took = time.monotonic() - started
        assert len(synced) <= 1 + took / 0.2 + 1
        wait_for(lambda: len(synced) >= 1, 5, "the deferred sync")
    finally:
        service.close()
    after_close = len(synced)
    service.record("orchestrator_stopped", None)  # after close: written and synced at once
    assert len(synced) > after_close


def test_audit_write_error_is_a_one_line_cli_error(tmp_path: Path) -> None:
    log = AuditLog(Path("/dev/full"))
    log.record("command_queued", "weather/bot", command_id=7, command="make test", queue_depth=1)
    with pytest.raises(AuditWriteError) as raised:
        log.flush(strict=True)
    text = str(raised.value)
    assert "\n" not in text and "command_queued" in text and "/dev/full" in text
    log.path = tmp_path / "a.jsonl"  # space returns before this process ends
    log.flush(strict=True)


ONE_SHOT = r"""
import sys
from pathlib import Path
from orchestrator.state.audit import AuditLog, AuditWriteError

log = AuditLog(Path(sys.argv[1]))
log.record("metadata_set", "weather/bot", detail="k " + "v" * 5000)
if sys.argv[2] == "strict":
    try:
        log.flush(strict=True)
    except AuditWriteError as exc:
        print(f"tmux-agent: error: {exc.render()}", file=sys.stderr)
        sys.exit(exc.exit_code)
"""


@pytest.mark.parametrize("how", ["strict", "silent"])
def test_a_cli_that_exits_with_a_line_unwritten_says_so(full_tmpfs: Tmpfs, how: str) -> None:
    path = full_tmpfs.root / "orchestrator-actions.jsonl"
    AuditLog(path).record("orchestrator_started", None)
    full_tmpfs.fill()
    done = subprocess.run(
        [sys.executable, "-c", ONE_SHOT, str(path), how],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr  # the episode's warning, then the one error
    assert "No space left on device" in lines[0] and "kept in memory" in lines[0]
    assert "1 audit event(s) not written (metadata_set)" in lines[1]
    assert done.returncode == (1 if how == "strict" else 0)
    assert "this process is exiting: lost" in lines[1] or how == "strict"
