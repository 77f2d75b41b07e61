"""What the kernel knows about a pane's processes: which one owns the terminal, and whether it is
blocked reading it.

This is how a question is told from a stall exactly, without reading words on the screen: a
command that waits for an answer (`read -p`, a `y/N` prompt, Python's `input()`) is a process in
the terminal's foreground process group sleeping in a `read` of that terminal. A process that
sleeps or computes is not. Linux only; elsewhere every answer is "unknown" (None / False).
"""

from __future__ import annotations

import fcntl
import os
import platform
import struct
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")

# Kernel functions a task sleeps in while reading a tty (n_tty_read waits with wait_woken).
TTY_READ_WCHAN = {"wait_woken", "n_tty_read"}
# read-family syscall numbers, for /proc/PID/syscall where the kernel lets us read it.
READ_SYSCALLS = {"x86_64": {0, 17, 19}, "aarch64": {63, 65, 67}}.get(platform.machine(), set())


def read_proc(pid: int, name: str, proc: Path = PROC) -> str:
    """`/proc/PID/NAME` as text, in two syscalls and no Path objects: a probe round reads it for
    every pane (raises OSError as `open` does)."""
    fd = os.open(f"{proc}/{pid}/{name}", os.O_RDONLY)
    try:
        return os.read(fd, 65536).decode("utf-8", "replace")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    pgrp: int
    tty_nr: int
    tpgid: int
    ppid: int = 0


def stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    try:
        raw = read_proc(pid, "stat", proc)
    except OSError:
        return None
    # comm is in parentheses and may itself contain spaces or parentheses
    left, right = raw.index("("), raw.rindex(")")
    fields = raw[right + 2 :].split()
    try:
        return ProcStat(
            pid, raw[left + 1 : right], fields[0], int(fields[2]), int(fields[4]), int(fields[5]), int(fields[1])
        )
    except (IndexError, ValueError):
        return None


def executable_name(pid: int, proc: Path = PROC) -> str | None:
    """The basename of the process's program (bash, zsh, python3…), or None when it is gone."""
    try:
        return os.path.basename(os.readlink(f"{proc}/{pid}/exe"))
    except OSError:
        found = stat(pid, proc)
        return found.comm if found else None


def foreground_group(shell_pid: int, proc: Path = PROC) -> int | None:
    """The terminal's foreground process group, as the pane's first process sees it."""
    found = stat(shell_pid, proc)
    return found.tpgid if found and found.tpgid > 0 else None


TABLE_MAX_AGE_SECONDS = 0.5
TABLE_UNCHANGED_MAX_AGE_SECONDS = 10.0
_tables: dict[Path, tuple[float, str | None, list[ProcStat]]] = {}
_tables_lock = threading.Lock()


def last_pid(proc: Path = PROC) -> str | None:
    """The pid the kernel handed out last (`/proc/loadavg`'s last field): unchanged, no process
    was created anywhere since; None when it cannot be read."""
    try:
        return (proc / "loadavg").read_text().split()[-1]
    except (OSError, IndexError):
        return None


def process_table(proc: Path = PROC, max_age: float = TABLE_MAX_AGE_SECONDS) -> list[ProcStat]:
    """Every process's stat line, from one scan of /proc shared by every caller for `max_age`
    seconds. Who belongs to which process group barely changes in half a second, and a
    liveness round asks it for each running command: a hundred commands would otherwise scan
    /proc a hundred times a round. While the kernel's last handed-out pid stays the same (no
    process was created anywhere) the table is kept up to TABLE_UNCHANGED_MAX_AGE_SECONDS: a
    quiet host is not rescanned at all. Callers read anything that must be fresh (a state, a
    wchan) from the process itself."""
    now = time.monotonic()
    with _tables_lock:
        cached = _tables.get(proc)
    if cached is not None and now - cached[0] < max_age:
        return cached[2]
    newest = last_pid(proc)
    with _tables_lock:
        cached = _tables.get(proc)
        if cached is not None:
            taken, taken_newest, kept = cached
            if now - taken < max_age:
                return kept
            # no process created since: memberships stand (a member that ended is re-read as gone)
            unchanged = max_age > 0 and newest is not None and newest == taken_newest
            if unchanged and now - taken < TABLE_UNCHANGED_MAX_AGE_SECONDS:
                return kept
    table: list[ProcStat] = []
    try:
        entries = list(os.scandir(proc))
    except OSError:
        return table
    for entry in entries:
        if entry.name.isdigit():
            found = stat(int(entry.name), proc)
            if found is not None:
                table.append(found)
    with _tables_lock:
        _tables[proc] = (now, newest, table)
    return table


_indexes: dict[Path, tuple[list[ProcStat], dict[tuple[int, int], list[ProcStat]]]] = {}


def _by_group(proc: Path) -> dict[tuple[int, int], list[ProcStat]]:
    """The shared process table by (process group, terminal), built once per table: a liveness
    round asks it for every running command, and a walk of the whole table each time made the
    round's cost commands × processes."""
    table = process_table(proc)
    with _tables_lock:
        cached = _indexes.get(proc)
        if cached is not None and cached[0] is table:
            return cached[1]
    index: dict[tuple[int, int], list[ProcStat]] = {}
    for listed in table:
        index.setdefault((listed.pgrp, listed.tty_nr), []).append(listed)
    with _tables_lock:
        _indexes[proc] = (table, index)
    return index


def group_members(pgrp: int, tty_nr: int, proc: Path = PROC) -> list[ProcStat]:
    """The processes of a group on a terminal, each stat read again now (the table may be old)."""
    members = []
    for listed in _by_group(proc).get((pgrp, tty_nr), ()):
        found = stat(listed.pid, proc)
        if found is not None and found.pgrp == pgrp:
            members.append(found)
    return members


def _reads_tty(pid: int, tty: str, proc: Path = PROC) -> bool:
    try:
        wchan = read_proc(pid, "wchan", proc).strip()
    except OSError:
        return False
    if wchan not in TTY_READ_WCHAN:
        return False
    try:
        parts = read_proc(pid, "syscall", proc).split()
    except OSError:
        parts = []  # not ours to inspect (ptrace rules): fall back to the wchan and stdin
    if len(parts) >= 2 and parts[0].isdigit() and READ_SYSCALLS:
        if int(parts[0]) not in READ_SYSCALLS:
            return False
        fd = str(int(parts[1], 16))
    else:
        fd = "0"
    try:
        return os.readlink(f"{proc}/{pid}/fd/{fd}") == tty
    except OSError:
        return False


# Where a line editor (readline, zle) sleeps while it waits for the next key.
KEY_WAIT_WCHAN = {"poll_schedule_timeout", "poll_schedule_timeout.constprop.0", "do_select", "do_sys_poll"}


# Syscalls a line editor waits for a key in (read, poll, select and their relatives). A shell
# blocked in `write` (its terminal's output stopped by XOFF, say) sleeps in the same kernel
# function as one blocked reading — the syscall tells them apart.
KEY_WAIT_SYSCALLS = {
    "x86_64": {0, 7, 17, 19, 23, 232, 270, 271, 281, 441},
    "aarch64": {22, 63, 65, 67, 72, 73, 441},
}.get(platform.machine(), set())


def waiting_for_key(pid: int, proc: Path = PROC) -> bool:
    """The shell sits in its line editor waiting for a key: its prompt is fully drawn."""
    found = stat(pid, proc)
    if found is None or found.state != "S":
        return False
    try:
        wchan = read_proc(pid, "wchan", proc).strip()
    except OSError:
        return True  # cannot tell: do not hold dispatch on it
    if not (wchan in KEY_WAIT_WCHAN or wchan in TTY_READ_WCHAN or wchan.startswith("poll_schedule_timeout")):
        return False
    try:
        parts = read_proc(pid, "syscall", proc).split()
    except OSError:
        return True  # not ours to inspect: the wchan has to do
    if parts and parts[0].isdigit() and KEY_WAIT_SYSCALLS:
        return int(parts[0]) in KEY_WAIT_SYSCALLS
    return True


def terminal_input_pending(tty: str) -> int | None:
    """Bytes typed into the terminal that no process has read yet (a typed line waiting in a busy
    or stopped shell's input); None when the terminal cannot be asked."""
    if not tty:
        return None
    try:
        fd = os.open(tty, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
        return int(struct.unpack("i", raw)[0])
    except OSError:
        return None
    finally:
        os.close(fd)


def waiting_for_terminal_input(shell_pid: int, tty: str, proc: Path = PROC) -> int | None:
    """The pid of a foreground process blocked reading the pane's terminal, or None."""
    shell = stat(shell_pid, proc)
    if shell is None or shell.tpgid <= 0:
        return None
    for member in group_members(shell.tpgid, shell.tty_nr, proc):
        if member.state == "S" and _reads_tty(member.pid, tty, proc):
            return member.pid
    return None


def descendants(pid: int, proc: Path = PROC) -> list[int]:
    """Every process below `pid` (children, their children, …), one scan of /proc."""
    children: dict[int, list[int]] = {}
    for found in process_table(proc, max_age=0):
        children.setdefault(found.ppid, []).append(found.pid)
    out: list[int] = []
    todo = list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(children.get(child, ()))
    return out


def written_bytes(pid: int, proc: Path = PROC) -> int:
    """Bytes the process has written (`wchar` of /proc/PID/io: terminals and pipes included);
    0 when it is gone or unreadable."""
    try:
        for line in read_proc(pid, "io", proc).splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0
