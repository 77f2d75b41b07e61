"""One watcher for a directory: "the file NAME is complete" becomes a command id on a queue.

Why: the shell driver used to learn a command's end from one thread and one blocking
`tmux wait-for` child per running command (103 threads and 101 processes for 100 running
commands), and the pane's shell forked `mv` and `tmux wait-for -S` after every command. Now the
pane's shell only writes its exit record with builtins (`printf … > rc-TOKEN`), and the kernel
says when that file was closed: inotify on the runtime directory (IN_CLOSE_WRITE for the shell's
redirection, IN_MOVED_TO for a file renamed into place), read by ONE daemon thread however many
commands run. Where inotify is unavailable (not Linux, no libc, the per-user instance limit
reached) the same thread stats the watched files every 20 ms instead; idle, it sleeps.

A watch is by default one-shot and exact: its id is put on the queue once, when its `ready`
check passes (a file that is there but still half-written is not ready; the next close is looked
at again), and is then forgotten. A file already complete when it is watched (a restart adopting
a command whose record was written meanwhile) is emitted at once. Events can be lost only with
the directory itself (deleted, moved, the kernel's queue overflowing): then the watch is added
again when the directory is back, and every watched file is looked at again.

A watch may instead repeat (`watch(..., repeat=True)`): the agent driver's events file, which its
hook command appends one line to per agent event (open O_APPEND, one write, close). Its id is put
on the queue each time the file was closed after a change, and stays watched until forgotten; a
look that finds the file as it was when last emitted (its inode, size and mtime) emits nothing, so
the poll fallback and a look at every file after a lost event do not wake anyone for nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import select
import struct
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

WatchMode = Literal["inotify", "poll"]

POLL_SECONDS = 0.02
READ_BYTES = 64 * 1024
# Linux values (<sys/inotify.h>); the two init flags are O_NONBLOCK and O_CLOEXEC.
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
WATCH_MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
LOST = IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF
EVENT = struct.Struct("iIII")  # wd, mask, cookie, len — then `len` bytes of NUL-padded name
EVENT_MAX_BYTES = EVENT.size + 256  # NAME_MAX (255) and its NUL


class Inotify:
    """The kernel side: one non-blocking inotify descriptor (ctypes over libc)."""

    def __init__(self, libc: ctypes.CDLL, fd: int) -> None:
        self._libc = libc
        self.fd = fd

    @classmethod
    def open(cls) -> Inotify | None:
        """None where there is no inotify: not Linux, no libc, or no instance left to have."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.inotify_init1.argtypes = [ctypes.c_int]
            libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):
            return None
        fd = int(libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
        return cls(libc, fd) if fd >= 0 else None

    def add(self, directory: Path) -> int | None:
        """The watch descriptor, or None (the directory is not there now, or no watch is left)."""
        wd = int(self._libc.inotify_add_watch(self.fd, os.fsencode(directory), WATCH_MASK))
        return wd if wd >= 0 else None

    def remove(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[tuple[int, int, str]]:
        """Every queued event as (wd, mask, name); empty when none is waiting. A read that left
        room for another event took all there were: no second read to be told so."""
        events: list[tuple[int, int, str]] = []
        while True:
            try:
                data = os.read(self.fd, READ_BYTES)
            except BlockingIOError:
                return events
            offset = 0
            while offset + EVENT.size <= len(data):
                wd, mask, _cookie, length = EVENT.unpack_from(data, offset)
                start = offset + EVENT.size
                name = os.fsdecode(data[start : start + length].split(b"\0", 1)[0])
                events.append((wd, mask, name))
                offset = start + length
            if len(data) <= READ_BYTES - EVENT_MAX_BYTES:
                return events

    def close(self) -> None:
        os.close(self.fd)


Stamp = tuple[int, int, int]  # inode, size, mtime (ns): "changed since the last emit?"


@dataclass(frozen=True)
class Watch:
    name: str
    path: Path
    ready: Callable[[], bool]
    repeat: bool = False


def stamp(path: Path) -> Stamp:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


class FileWatch:
    """Watches files of one directory for many commands, on one thread, with no child process."""

    def __init__(
        self,
        directory: Path,
        events: queue.Queue[int] | None = None,
        *,
        poll: bool = False,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        """`poll=True` skips inotify (the fallback, on purpose: tests, exotic file systems)."""
        self.directory = directory
        self.events: queue.Queue[int] = events if events is not None else queue.Queue()
        self._poll_seconds = poll_seconds
        self._watches: dict[int, Watch] = {}
        self._by_name: dict[str, set[int]] = {}
        self._emitted: dict[int, Stamp] = {}  # a repeating watch's file as it was when last emitted
        self._lock = threading.Lock()
        self._closed = False
        directory.mkdir(parents=True, exist_ok=True)
        self._inotify = None if poll else Inotify.open()
        self._wd: int | None = None  # the directory's watch; None while it is lost (or polling)
        self._attach()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"file-watch-{directory.name}")
        self._thread.start()

    @property
    def mode(self) -> WatchMode:
        return "poll" if self._inotify is None else "inotify"

    # the callers' side -----------------------------------------------------------------------
    def watch(
        self, command_id: int, path: Path, ready: Callable[[], bool] | None = None, *, repeat: bool = False
    ) -> None:
        """Put `command_id` on `events` once `path` is there and `ready()` (default: the file
        exists) holds. Idempotent while the id is watched; checked at once, so a file that is
        already complete is emitted now. `repeat=True`: put it again after every later change of
        the file (each close of a write to it), until `forget`."""
        if path.parent != self.directory:
            raise ValueError(f"{path} is not in the watched directory {self.directory}")
        with self._lock:
            if self._closed or command_id in self._watches:
                return
            entry = Watch(path.name, path, ready or path.exists, repeat)
            self._watches[command_id] = entry
            self._by_name.setdefault(entry.name, set()).add(command_id)
            polling = self._wd is None
        if polling:
            self._wake()  # the thread may be asleep with nothing to poll
        self._check(command_id, entry)

    def forget(self, command_id: int) -> None:
        with self._lock:
            self._drop(command_id)

    def watching(self, command_id: int) -> bool:
        with self._lock:
            return command_id in self._watches

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._watches.clear()
            self._by_name.clear()
            self._emitted.clear()
        self._wake()
        self._thread.join(timeout=2)
        if self._inotify is not None:
            self._inotify.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    # shared ----------------------------------------------------------------------------------
    def _drop(self, command_id: int) -> Watch | None:
        """Under the lock."""
        entry = self._watches.pop(command_id, None)
        self._emitted.pop(command_id, None)
        if entry is not None:
            ids = self._by_name.get(entry.name, set())
            ids.discard(command_id)
            if not ids:
                self._by_name.pop(entry.name, None)
        return entry

    def _check(self, command_id: int, entry: Watch) -> None:
        """Emit when ready — exactly once, whichever of the caller and the thread gets here first
        (a repeating watch: once per change; its stamp is taken before `ready()`, so a change
        after the stamp is the next look's, never lost in this one)."""
        try:  # only a repeating watch compares stamps; a one-shot one is on a result's way: no stat
            seen = stamp(entry.path) if entry.repeat else None
            ready = entry.ready()
        except (OSError, ValueError):
            ready = False
        if not ready:
            return
        with self._lock:
            if self._watches.get(command_id) is not entry:
                return
            if seen is None:
                self._drop(command_id)
            elif self._emitted.get(command_id) == seen:
                return
            else:
                self._emitted[command_id] = seen
        self.events.put(command_id)

    def _check_all(self, names: set[str] | None = None) -> None:
        """Look at the watches of these file names (None: every watch)."""
        with self._lock:
            if names is None:
                chosen = list(self._watches.items())
            else:
                chosen = [(i, self._watches[i]) for name in names for i in self._by_name.get(name, ())]
        for command_id, entry in chosen:
            self._check(command_id, entry)

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake (the pipe is full) or closed

    def _attach(self) -> bool:
        """Watch the directory (again); True when it is watched now."""
        if self._inotify is not None and self._wd is None:
            self._wd = self._inotify.add(self.directory)
        return self._wd is not None

    # the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                anything = bool(self._watches)
            polling = self._wd is None
            fds = [self._wake_read] if self._inotify is None else [self._wake_read, self._inotify.fd]
            try:
                readable, _, _ = select.select(fds, [], [], self._poll_seconds if polling and anything else None)
                if self._wake_read in readable:
                    self._drain_wake()
            except (OSError, ValueError):
                return  # closed under us
            if self._inotify is not None and self._inotify.fd in readable:
                self._on_events(self._inotify.read())
            elif polling:
                self._poll()

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass

    def _on_events(self, events: list[tuple[int, int, str]]) -> None:
        names: set[str] = set()
        everything = False
        for wd, mask, name in events:
            if mask & IN_Q_OVERFLOW:
                everything = True  # the kernel dropped events: look at every watched file
            if wd != self._wd:
                continue  # the last word of a watch already given up
            if mask & LOST:
                if mask & IN_MOVE_SELF and self._inotify is not None:
                    self._inotify.remove(wd)  # it would follow the directory to its new name
                self._wd = None
            elif name:
                names.add(name)
        if self._wd is None:
            everything = self._attach()
        self._check_all(None if everything else names)

    def _poll(self) -> None:
        """No directory watch (the fallback, or the directory is gone): stat every watched file,
        and take the directory's watch back as soon as it can be had (then the next events come
        from the kernel; this look covers whatever was written while it was lost)."""
        self._attach()
        self._check_all()
