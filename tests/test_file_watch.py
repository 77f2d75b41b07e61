"""Completion without a thread or a process per command, and no fork in the pane for it.

Against real parts: the kernel's inotify (and the stat fallback) on a real directory, real
files written by real shells, and one real tmux pane on an isolated server driven by the real
`ShellDriver`. Before: one thread and one `tmux wait-for` child per running command, and the
pane's shell forked `mv` and `tmux wait-for -S` after every command.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.adapters.tmux import TmuxAdapter
from orchestrator.config import TmuxConfig
from orchestrator.drivers.file_watch import IN_CLOSE_WRITE, READ_BYTES, FileWatch, Inotify, WatchMode
from orchestrator.drivers.shell import ShellDriver, channel_token
from orchestrator.drivers.shell_files import CommandFiles
from orchestrator.model import CommandRow, ExitRecord
from pytest_tmuxagent import AgentPaneFactory, TmuxTestServer, wait_until

MODES: tuple[WatchMode, ...] = ("inotify", "poll")
STARTED: list[list[str]] = []  # every subprocess this process starts (an audit hook, see below)
_hooked: list[bool] = []


def record_processes() -> list[list[str]]:
    """The standard library's own audit event for each `subprocess.Popen` (libtmux's included),
    so a process that started and ended between two looks at /proc is still seen."""
    if not _hooked:

        def hook(event: str, args: tuple[object, ...]) -> None:
            if event == "subprocess.Popen":
                argv = args[1]
                STARTED.append([str(a) for a in argv] if isinstance(argv, (list, tuple)) else [str(argv)])

        sys.addaudithook(hook)
        _hooked.append(True)
    STARTED.clear()
    return STARTED


@pytest.fixture(params=MODES)
def watcher(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FileWatch]:
    """A watcher of a directory that does not exist yet (it makes it), in each mode."""
    made = FileWatch(tmp_path / "not" / "yet" / "run", poll=request.param == "poll")
    if made.mode != request.param:
        made.close()
        pytest.skip("inotify is not available here")
    yield made
    made.close()


def write(path: Path, text: str = "x") -> None:
    """One open, write, close — as a shell's `printf … > path` does."""
    with path.open("w", encoding="utf-8") as fh:
        fh.write(text)


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads started since `before` and still alive (one that another test left ending meanwhile
    does not count)."""
    return [t for t in threading.enumerate() if t not in before]


def child_pids() -> list[int]:
    """This process's children, from every thread's `children` list (no psutil here)."""
    found: list[int] = []
    for task in os.listdir("/proc/self/task"):
        try:
            found += [int(pid) for pid in Path(f"/proc/self/task/{task}/children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


# the watcher ---------------------------------------------------------------------------------
def test_the_directory_is_made_and_a_watched_name_is_emitted_on_close_not_another(watcher: FileWatch) -> None:
    assert watcher.directory.is_dir()
    watcher.watch(1, watcher.directory / "rc-a")
    assert watcher.watching(1)
    write(watcher.directory / "rc-b")  # closed first: were it emitted, it would come first
    write(watcher.directory / "rc-a")
    assert watcher.events.get(timeout=5) == 1
    assert watcher.events.empty()
    assert not watcher.watching(1)  # one-shot: emitted once, then forgotten


def test_a_file_already_complete_is_emitted_by_watch_itself(watcher: FileWatch) -> None:
    write(watcher.directory / "rc-done")
    watcher.watch(7, watcher.directory / "rc-done")
    assert watcher.events.get_nowait() == 7  # no waiting on the thread: adopted after a restart
    watcher.watch(7, watcher.directory / "rc-done")
    assert watcher.events.get_nowait() == 7  # watched again, still complete: said again
    assert watcher.events.empty()


def test_watch_is_idempotent_and_emits_once(watcher: FileWatch) -> None:
    for _ in range(3):
        watcher.watch(2, watcher.directory / "rc-2")
    write(watcher.directory / "rc-2")
    write(watcher.directory / "rc-2")
    assert watcher.events.get(timeout=5) == 2
    watcher.watch(3, watcher.directory / "rc-3")
    write(watcher.directory / "rc-3")
    assert watcher.events.get(timeout=5) == 3  # 2 was not put twice before it
    assert watcher.events.empty()


def test_a_forgotten_command_is_never_emitted(watcher: FileWatch) -> None:
    watcher.watch(3, watcher.directory / "rc-3")
    watcher.forget(3)
    assert not watcher.watching(3)
    write(watcher.directory / "rc-3")
    watcher.watch(4, watcher.directory / "rc-4")
    write(watcher.directory / "rc-4")
    assert watcher.events.get(timeout=5) == 4
    assert watcher.events.empty()


def test_a_file_that_is_not_ready_yet_is_looked_at_again_on_its_next_close(watcher: FileWatch) -> None:
    path = watcher.directory / "rc-half"
    watcher.watch(5, path, lambda: path.read_text().endswith("end\n"))
    write(path, "0 1.0")  # the shell is mid-write
    write(watcher.directory / "rc-other")
    watcher.watch(6, watcher.directory / "rc-other")
    assert watcher.events.get(timeout=5) == 6  # rc-half's close came first and was not taken
    assert watcher.watching(5)
    write(path, "0 1.0 2.0 end\n")
    assert watcher.events.get(timeout=5) == 5


def test_a_file_moved_into_place_is_emitted(watcher: FileWatch) -> None:
    watcher.watch(8, watcher.directory / "rc-8")
    write(watcher.directory / "rc-8.tmp")
    os.replace(watcher.directory / "rc-8.tmp", watcher.directory / "rc-8")
    assert watcher.events.get(timeout=5) == 8


def append(path: Path, text: str) -> None:
    """One open O_APPEND, one write, close — as the agent hook does."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def test_a_repeating_watch_is_emitted_after_every_change_until_forgotten(watcher: FileWatch) -> None:
    events = watcher.directory / "agent-x.events.jsonl"
    watcher.watch(11, events, repeat=True)
    assert watcher.events.empty()  # not there yet: nothing to say
    for n in range(1, 4):
        append(events, f"line {n}\n")
        assert watcher.events.get(timeout=5) == 11, f"append {n}"
        assert watcher.watching(11)  # stays watched
    watcher.watch(11, events, repeat=True)  # idempotent: no second watch, no re-emit of an unchanged file
    watcher.watch(12, watcher.directory / "rc-12")  # a one-shot beside it: the round that emits it
    write(watcher.directory / "rc-12")  # ... would have emitted an unchanged 11 before it
    assert watcher.events.get(timeout=5) == 12
    assert watcher.events.empty()  # no wake for a file that did not change (the poll mode's stat)
    watcher.forget(11)
    append(events, "line 4\n")
    watcher.watch(13, watcher.directory / "rc-13")
    write(watcher.directory / "rc-13")
    assert watcher.events.get(timeout=5) == 13
    assert watcher.events.empty()  # forgotten: the fourth line wakes no one


def test_a_repeating_watch_of_a_file_already_there_is_emitted_at_once_then_on_change(watcher: FileWatch) -> None:
    events = watcher.directory / "agent-y.events.jsonl"
    append(events, "written while nobody watched\n")
    watcher.watch(14, events, repeat=True)
    assert watcher.events.get_nowait() == 14  # a restart adopting a turn: look at it now
    events.write_bytes(b"")  # the driver's reset at a launch: a change too
    assert watcher.events.get(timeout=5) == 14
    append(events, "next\n")
    assert watcher.events.get(timeout=5) == 14


def test_a_repeating_watch_survives_its_directory_being_made_again(watcher: FileWatch) -> None:
    events = watcher.directory / "agent-z.events.jsonl"
    watcher.watch(15, events, repeat=True)
    shutil.rmtree(watcher.directory)
    watcher.directory.mkdir()
    append(events, "after\n")
    assert watcher.events.get(timeout=5) == 15
    append(events, "and again\n")
    assert watcher.events.get(timeout=5) == 15


def test_the_directory_deleted_and_made_again_is_watched_again(watcher: FileWatch) -> None:
    watcher.watch(9, watcher.directory / "rc-9")
    shutil.rmtree(watcher.directory)
    watcher.directory.mkdir()
    write(watcher.directory / "rc-9")
    assert watcher.events.get(timeout=5) == 9
    watcher.watch(10, watcher.directory / "rc-10")
    write(watcher.directory / "rc-10")  # and the next one comes through the new watch
    assert watcher.events.get(timeout=5) == 10


def test_one_read_of_the_kernels_queue_takes_every_event_however_many_buffers_they_fill(tmp_path: Path) -> None:
    """A read stops early only when it left room for another event; a burst bigger than one
    buffer (thousands of files closed while the thread was busy) is read whole."""
    inotify = Inotify.open()
    if inotify is None:
        pytest.skip("inotify is not available here")
    try:
        assert inotify.add(tmp_path) is not None
        names = [f"rc-{i:05d}-{'x' * 40}" for i in range(3000)]  # ~3000 × 64 bytes: three buffers
        for name in names:
            write(tmp_path / name)
        events = inotify.read()
        assert len(events) * 64 > 2 * READ_BYTES
        assert [name for _wd, mask, name in events if mask & IN_CLOSE_WRITE] == names
        assert inotify.read() == []
    finally:
        inotify.close()


def test_a_path_outside_the_directory_is_refused(watcher: FileWatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not in the watched directory"):
        watcher.watch(1, tmp_path / "rc-1")


@pytest.mark.parametrize("mode", MODES)
def test_two_hundred_commands_take_one_thread_and_no_process(mode: WatchMode, tmp_path: Path) -> None:
    before_threads, before_children = set(threading.enumerate()), set(child_pids())
    events: queue.Queue[int] = queue.Queue()
    watcher = FileWatch(tmp_path / "run", events, poll=mode == "poll")
    try:
        for command_id in range(200):
            watcher.watch(command_id, watcher.directory / f"rc-{command_id}")
        assert [t.name for t in new_threads(before_threads)] == ["file-watch-run"]
        assert set(child_pids()) - before_children == set()
        for command_id in range(200):
            write(watcher.directory / f"rc-{command_id}")
        got = {events.get(timeout=5) for _ in range(200)}
        assert got == set(range(200)) and events.empty()
    finally:
        watcher.close()
    assert new_threads(before_threads) == []  # close() ends the one thread
    watcher.watch(1, watcher.directory / "rc-1")  # after close: nothing, not an error
    assert not watcher.watching(1)


def test_the_fallback_is_polling_when_asked(tmp_path: Path) -> None:
    watcher = FileWatch(tmp_path / "run", poll=True)
    try:
        assert watcher.mode == "poll"
        fds = {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if _readable_link(fd)}
        assert "anon_inode:inotify" not in fds
    finally:
        watcher.close()


def _readable_link(fd: str) -> bool:
    try:
        os.readlink(f"/proc/self/fd/{fd}")
        return True
    except OSError:
        return False


# the exit record -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "0 1.5",
        "0 1.5 2.",
        "0 1.5 2.5",
        "0 1.5 2.5 en",
        "0 1.5 2.5 end extra",
        "x 1.5 2.5 end",
        "0 1.5 2.5 end" + " " * 300,  # no record of ours is that long
        "0 1.5 2.5 \xff",
    ],
)
def test_a_half_written_or_broken_exit_record_is_no_exit(tmp_path: Path, text: str) -> None:
    files = CommandFiles(tmp_path, "abc-1-1")
    write(files.start_file, "1.5\n")
    write(files.exit_file, text)
    assert files.read_exit() is None


def test_a_whole_exit_record_is_read_only_after_its_start_record(tmp_path: Path) -> None:
    files = CommandFiles(tmp_path, "abc-1-1")
    write(files.exit_file, "3 1.5 2.5 end\n")
    assert files.read_exit() is None  # no start record: the typed line did not start it
    write(files.start_file, "1.5\n")
    assert files.read_exit() == ExitRecord(3, 1.5, 2.5)


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_the_epilogue_writes_a_whole_record_with_builtins_only(tmp_path: Path, shell: str) -> None:
    """Sourced by a real shell (not in a pane): the record it leaves is whole and read back, and
    the epilogue's text names no program to fork (`mv`, `tmux`, `date` beside EPOCHREALTIME)."""
    program = shutil.which(shell)
    if program is None:
        pytest.skip(f"{shell} is not installed")
    files = CommandFiles(tmp_path / "run", "abc-4-1")
    line = files.write_scripts(4, "(exit 4)", 0, zsh=shell == "zsh")
    epilogue = files.epilogue.read_text()
    assert "mv " not in epilogue and "tmux" not in epilogue and "wait-for" not in epilogue
    assert "$(date" not in epilogue.replace("${EPOCHREALTIME:-$(date +%s.%N)}", "")
    subprocess.run([program, "-c", line], check=False, capture_output=True, timeout=10)
    record = files.read_exit()
    assert record is not None and record.exit_code == 4 and record.finished >= record.started
    assert files.exit_file.read_text().split()[-1] == "end"
    assert set(files.all()) >= {p for p in files.run_dir.iterdir()}  # every file it left is listed


# end to end: a real pane -----------------------------------------------------------------------
def row(command_id: int, session: str, command: str) -> CommandRow:
    return CommandRow(command_id, session, command, "running", "test", "", None, None, None, None, None, 1, None)


def test_results_arrive_from_real_panes_with_no_child_process_and_one_thread(
    tmux_server: TmuxTestServer, agent_pane: AgentPaneFactory, tmp_path: Path
) -> None:
    """20 commands run `sleep 1` at once in 20 real bash panes; while they run, this process (the
    orchestrator's side) has no child at all — no `tmux wait-for` — and one watcher thread; every
    exact exit code arrives through the completion queue."""
    panes = [agent_pane(f"e2e/p{n}") for n in range(20)]
    config = TmuxConfig(socket_name=tmux_server.socket_name)
    started = record_processes()
    before_threads, before_children = set(threading.enumerate()), set(child_pids())
    driver = ShellDriver(TmuxAdapter(config), tmp_path / "run", tmp_path / "state.db")
    try:
        for n, pane in enumerate(panes, start=1):
            wait_until(lambda p=pane: driver.probe(p.pane_id).ready, timeout=15, message=f"{pane.pane_id} ready")
            driver.deliver(row(n, pane.name, f"sleep 1; (exit {n})"), pane.pane_id)
        assert [t.name for t in new_threads(before_threads)] == ["file-watch-run"]
        running = CommandFiles(tmp_path / "run", channel_token(tmp_path / "state.db", 1, 1))
        assert "mv " not in running.epilogue.read_text() and "tmux" not in running.epilogue.read_text()
        done: dict[int, ExitRecord] = {}
        forked: list[str] = []
        deadline = time.monotonic() + 30
        while len(done) < len(panes) and time.monotonic() < deadline:
            forked += [cmdline(pid) for pid in set(child_pids()) - before_children]
            try:
                command_id = driver.completions.get(timeout=0.05)
            except queue.Empty:
                continue
            record = driver.end_record(command_id)
            assert record is not None, f"#{command_id} signalled without its whole record"
            done[command_id] = record
            driver.discard(command_id)
        assert forked == []
        assert started and not [argv for argv in started if "wait-for" in argv]  # tmux calls seen, none waits
        assert {command_id: record.exit_code for command_id, record in done.items()} == {n: n for n in range(1, 21)}
        assert all(record.finished - record.started >= 1.0 for record in done.values())
    finally:
        driver.close()


OPENED: list[str] = []  # opens of the files in OPEN_WATCHED (an audit hook, added once)
OPEN_WATCHED: set[str] = set()
_open_hooked: list[bool] = []


def test_a_running_commands_exit_record_is_not_opened_every_round(
    tmux_server: TmuxTestServer, agent_pane: AgentPaneFactory, tmp_path: Path
) -> None:
    """The engine asks `end_record` of every running command every round. While the watcher still
    waits for the record, the file is opened at most once a second (the watcher's wake is the
    signal); once the watcher has seen it whole, that record is the result, read no second time."""
    exit_file = CommandFiles(tmp_path / "run", channel_token(tmp_path / "db", 1, 1)).exit_file
    if not _open_hooked:

        def count_opens(event: str, args: tuple[object, ...]) -> None:
            if event == "open" and args and str(args[0]) in OPEN_WATCHED:
                OPENED.append(str(args[0]))

        sys.addaudithook(count_opens)
        _open_hooked.append(True)
    OPEN_WATCHED.clear()
    OPEN_WATCHED.add(str(exit_file))
    pane = agent_pane("e2e/rounds")
    driver = ShellDriver(
        TmuxAdapter(TmuxConfig(socket_name=tmux_server.socket_name)), tmp_path / "run", tmp_path / "db"
    )
    try:
        wait_until(lambda: driver.probe(pane.pane_id).ready, timeout=15, message=f"{pane.pane_id} ready")
        driver.deliver(row(1, pane.name, "sleep 1.5; (exit 7)"), pane.pane_id)
        OPENED.clear()
        rounds = 0
        while driver.completions.empty() and rounds < 300:  # 0.01 s rounds while it runs
            assert driver.end_record(1) is None or not driver.watcher.watching(1)
            rounds += 1
            time.sleep(0.01)
        opened_while_running = len(OPENED)
        assert driver.completions.get(timeout=10) == 1
        opened_by_the_watcher = len(OPENED)
        record = driver.end_record(1)
        assert record is not None and record.exit_code == 7
        assert rounds >= 100 and opened_while_running <= 3, (rounds, OPENED)
        # the record the watcher read whole is the one recorded: not opened again on its way
        assert len(OPENED) == opened_by_the_watcher and driver.end_record(1) == record
    finally:
        driver.close()


def test_an_attempts_scripts_and_history_file_are_readable_by_the_user_alone(tmp_path: Path) -> None:
    """The scripts hold the command as sent (it may carry a secret) and `h-TOKEN` bash's last
    history entry (with HISTCONTROL=ignorespace, a line the user typed): 0600, also when a file
    of that name was left world-readable, and still 0600 after bash wrote the entry into it."""
    files = CommandFiles(tmp_path / "run", "abc-5-1")
    files.run_dir.mkdir(parents=True)
    files.history_file.write_text("old")
    files.history_file.chmod(0o644)
    line = files.write_scripts(5, "echo s3cret-token", 0)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (files.body, files.epilogue, files.history_file)}
    assert modes == {files.body.name: 0o600, files.epilogue.name: 0o600, files.history_file.name: 0o600}
    done = subprocess.run(
        ["bash", "--norc", "-c", f"set -o history; HISTCONTROL=ignorespace; history -s 'typed by the user'; {line}"],
        check=False,
        capture_output=True,
        timeout=10,
    )
    assert b"s3cret-token" in done.stdout and files.read_exit() is not None
    assert files.history_file.read_text().strip() and files.history_file.stat().st_mode & 0o777 == 0o600
