"""Pane output copied into log files from the control-mode stream (`%output`), not a `cat` per pane.

Why: `tmux pipe-pane -t PANE 'exec cat >> LOG'` costs one `cat` process per supervised pane, a
process count that grows with the panes. tmux already sends every byte a pane's program writes
to each control client attached to that pane's session (`%output %PANE DATA`, octal-escaped;
`protocol.decode_output` gives the bytes back exactly), so one client per tmux session that holds
a supervised pane — attached `-f ignore-size` with output on (not `no-output`; not `read-only`,
which refuses the `pipe-pane` the switch below runs on it) — and its one reader thread copy the
output of all of that session's panes. The bytes are appended to the pane's log in stream order
with `os.write` on a descriptor opened once per pane with `O_APPEND` (no user-space buffer: a
reader sees each chunk as soon as it is written; the driver's `truncate` between commands keeps
working, as with `cat >>`). Panes not asked for are read and dropped.

Switching without a gap or a duplicate. A reply on a client's stream is an exact cut in its
output: every `%output` tmux queued before running the command comes before the reply, every
later byte after it (`ControlConnection.commands(on_reply=…)`, run on the reader thread at that
point). So:

- pipe-pane → stream: tmux drops whatever it has not yet written to a pipe it closes (the
  bytes it read from the pane in the same loop round as the close), so the pipe is not closed at
  the cut: the copy starts at the reply of a read on the session's own output client, and
  `pipe-pane -t PANE` (the close) follows one round trip later, by which time tmux has written
  the earlier bytes to the pipe. Whatever the pane wrote between the two points is in the log
  twice (nothing when the pane is quiet, as it is at its prompt, where the shell driver sets a
  copy up); nothing is lost. The old `cat` may still be writing, so the stream's bytes are held
  in memory until no child of the tmux server has the log open for writing (at most 2 s), then
  written: in order.
- stream → pipe-pane (the fallback): `pipe-pane -t PANE 'exec cat >> LOG'` runs on that client
  and the copy stops at its reply.
- one session's client → another's (the pane was moved with `move-window` / `join-pane`): the
  new client's copy starts at the reply of a command on the new stream, then the old client's
  copy stops at the reply of one on the old stream. The old stream has no byte of the pane after
  the move, so nothing is doubled — unless the pane's window is linked into both sessions
  (`link-window`), where the few milliseconds between the two cuts are written twice.

A copy is `copying` while its client is attached and the pane is still in that client's session:
tmux tells each client about window and layout changes (`%window-close`, `%layout-change`,
`%unlinked-window-add/-close`, `%session*-changed`; not renames) and after one the session's
panes are asked for again (one `list-panes`, only then). A client that ended (session killed,
server gone) makes all of its copies not copying, so the caller sets them up again; output
written while nobody copied is not in the log.
A client whose reader falls behind slows the pane (tmux's back-pressure on control clients),
so the reader thread only ever writes to files.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.adapters.tmux_control.connection import (
    BACKOFF_FIRST,
    DEFAULT_TIMEOUT,
    ControlConnection,
)
from orchestrator.adapters.tmux_control.protocol import ControlEvent, NotificationEvent, OutputEvent
from orchestrator.config import TmuxConfig
from orchestrator.errors import TmuxUnavailable

log = logging.getLogger(__name__)

OLD_PIPE_WAIT = 2.0  # at most this long for a closed pipe-pane's `cat` to write what it holds
# Notifications after which a session's panes may be others (not renames: automatic-rename fires
# one for nearly every command a pane runs).
MEMBERSHIP = frozenset(
    {
        "window-add",
        "window-close",
        "unlinked-window-add",
        "unlinked-window-close",
        "layout-change",
        "session-changed",
        "sessions-changed",
    }
)
ATTACH_BACKOFF_MAX = 30.0  # between failed attaches of an output client (the pane is piped meanwhile)


@dataclass(eq=False)
class _Copy:
    """One pane's log: the descriptor (opened once), and bytes held while an old `cat` finishes.
    Written by the reader threads of up to two clients at a switch, so under a lock."""

    pane: str
    path: Path
    fd: int
    held: list[bytes] | None = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False

    def write(self, data: bytes) -> None:
        with self.lock:
            if self.closed:
                return
            if self.held is not None:
                self.held.append(data)
            else:
                self._append(data)

    def release(self) -> None:
        """Write what was held, and every later chunk straight away."""
        with self.lock:
            held, self.held = self.held or [], None
            if not self.closed:
                self._append(b"".join(held))

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                os.close(self.fd)

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:  # disk full, …: the log misses this chunk, the stream goes on
            log.warning("pane %s output not written to %s: %s", self.pane, self.path, exc)


class _Feed:
    """One output client attached to one tmux session, and the copies its reader writes."""

    def __init__(self, config: TmuxConfig, session: str, tmux_bin: str) -> None:
        self.session = session
        self.conn = ControlConnection(config, session=session, tmux_bin=tmux_bin)
        self.routes: dict[str, _Copy] = {}  # read by the reader thread, changed under _lock
        self.members: frozenset[str] | None = None  # the session's panes; None: to be asked
        self.changes = 0  # window / session notifications seen
        self._lock = threading.Lock()
        self.conn.subscribe(self._noticed)

    def _noticed(self, event: ControlEvent) -> None:
        if isinstance(event, OutputEvent):
            copy = self.routes.get(event.pane)
            if copy is not None:
                copy.write(event.data)
        elif isinstance(event, NotificationEvent) and event.name in MEMBERSHIP:
            self.changes += 1
            self.members = None  # a pane may have come or gone: ask when it matters

    def route(self, copy: _Copy) -> None:
        with self._lock:
            self.routes = {**self.routes, copy.pane: copy}

    def unroute(self, pane: str, copy: _Copy | None = None) -> None:
        with self._lock:
            if pane in self.routes and (copy is None or self.routes[pane] is copy):
                self.routes = {k: v for k, v in self.routes.items() if k != pane}

    def holds(self, pane: str, timeout: float) -> bool:
        """The pane is (still) in this client's session, so its output reaches this stream."""
        members = self.members
        if members is None:
            seen = self.changes
            try:
                listed = self.conn.command("list-panes", "-s", "-t", self.session, "-F", "#{pane_id}", timeout=timeout)
            except TmuxUnavailable:
                return False
            members = frozenset(line.strip() for line in listed)
            if self.changes == seen:  # no change noticed while asking: the answer stands
                self.members = members
        return pane in members


def _server_pid(feed: _Feed) -> int | None:
    head = (feed.conn.server or "").split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def _writers(server_pid: int, path: Path) -> list[int]:
    """Children of the tmux server (pipe-pane commands) whose stdout is `path`."""
    found = []
    target = str(path.resolve())  # how /proc names an open file: absolute, links resolved
    for task in Path(f"/proc/{server_pid}/task").glob("*/children"):
        try:
            pids = task.read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                if os.readlink(f"/proc/{pid}/fd/1") == target:
                    found.append(int(pid))
            except OSError:
                continue
    return found


def _wait_writers_gone(server_pid: int | None, path: Path, timeout: float) -> None:
    if server_pid is None:
        return
    deadline = time.monotonic() + timeout
    pids = _writers(server_pid, path)
    while pids and time.monotonic() < deadline:
        time.sleep(0.002)
        pids = [pid for pid in pids if _writes_to(pid, path)]


def _writes_to(pid: int, path: Path) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/fd/1") == str(path.resolve())
    except OSError:  # gone, or a zombie (no descriptors any more)
        return False


class OutputCopier:
    """Pane output into log files from one output client per tmux session (see the module doc).
    Thread-safe; `copy` and `hand_over` block at most about `timeout` (plus `OLD_PIPE_WAIT`)."""

    def __init__(self, config: TmuxConfig, tmux_bin: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.config = config
        self.tmux_bin = tmux_bin
        self.timeout = timeout
        self._feeds: dict[str, _Feed] = {}  # session id → its client
        self._copies: dict[str, tuple[_Copy, _Feed]] = {}  # pane → its log and the client writing it
        self._lock = threading.RLock()
        self._pause = BACKOFF_FIRST
        self._retry_at = 0.0
        self._closed = False

    # what the port asks ------------------------------------------------------------------------
    def may_attach(self) -> bool:
        """Not closed and not pausing after a failed attach: a piped pane may be moved here."""
        return not self._closed and time.monotonic() >= self._retry_at

    def routed(self, pane: str) -> bool:
        return pane in self._copies

    def copying(self, pane: str) -> bool:
        """The pane's output reaches its log through a client now (False: set it up again)."""
        with self._lock:
            entry = self._copies.get(pane)
        if entry is None:
            return False
        copy, feed = entry
        return feed.conn.connected and not copy.closed and feed.holds(pane, self.timeout)

    def clients(self) -> dict[str, bool]:
        """Session id → whether its output client is attached (for tests and logs)."""
        with self._lock:
            return {session: feed.conn.connected for session, feed in self._feeds.items()}

    # set up, switch, stop ----------------------------------------------------------------------
    def copy(self, pane: str, session: str, path: Path) -> None:
        """From now on everything `pane` writes is appended to `path`, through the output client of
        `session` (the pane's session id, `$N`), attached now if need be; an existing pipe-pane of
        the pane is closed a round trip after the copy started (the module doc says why). Raises
        TmuxUnavailable (nothing changed then, except that copies whose client or pane is gone
        are dropped)."""
        with self._lock:
            self._prune(keep=pane)
            old = self._copies.get(pane)
            feed = self._feed(session)
            if old is not None and old[1] is feed and old[0].path == path and feed.conn.connected:
                feed.members = None  # asked to copy again: check the pane is still here
                if feed.holds(pane, self.timeout):
                    return
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            copy = _Copy(pane, path, fd)
            try:
                piped = feed.conn.commands(
                    ("display-message", "-p", "-t", pane, "#{pane_pipe}"),
                    timeout=self.timeout,
                    on_reply=lambda: feed.route(copy),
                )[0][:1] == ["1"]
                if piped:  # closed only now, a round trip after the copy started: see the module doc
                    feed.conn.command("pipe-pane", "-t", pane, timeout=self.timeout)
            except TmuxUnavailable:
                feed.unroute(pane, copy)
                copy.close()
                raise
            self._copies[pane] = (copy, feed)
            feed.members = None
            try:  # what the new copy holds goes in after the old copy's and the old pipe's last bytes
                if old is not None:
                    self._stop(pane, old, ())
                if piped:
                    _wait_writers_gone(_server_pid(feed), path, OLD_PIPE_WAIT)
            finally:
                copy.release()
            if old is not None and old[1] is not feed:
                self._drop_idle(old[1])
            log.debug("pane %s output copied to %s from session %s's control client", pane, path, session)

    def hand_over(self, pane: str, pipe_command: str) -> bool:
        """Stop copying `pane` here, `pipe-pane -t PANE pipe_command` taking over at the same point
        of the stream; False when there is no live client for it (the caller pipes it itself)."""
        with self._lock:
            entry = self._copies.pop(pane, None)
            if entry is None:
                return False
            done = self._stop(pane, entry, ("pipe-pane", "-t", pane, pipe_command))
            self._drop_idle(entry[1])
            return done

    def close(self) -> None:
        """Detach every output client and close every log."""
        with self._lock:
            self._closed = True
            feeds, self._feeds = list(self._feeds.values()), {}
            copies, self._copies = list(self._copies.values()), {}
        for feed in feeds:
            feed.conn.close()
        for copy, _ in copies:
            copy.close()

    # inside --------------------------------------------------------------------------------------
    def _stop(self, pane: str, entry: tuple[_Copy, _Feed], command: tuple[str, ...]) -> bool:
        """End one copy at a cut of its own client's stream (after `command`, or a no-op read)."""
        copy, feed = entry
        cut = command or ("display-message", "-p", "-t", pane, "#{pane_id}")

        def stop() -> None:  # on the reader thread: every byte before the cut is written
            feed.unroute(pane, copy)
            copy.close()

        if not feed.conn.connected:
            stop()
            return False
        try:
            feed.conn.commands(cut, timeout=self.timeout, on_reply=stop)
            return True
        except TmuxUnavailable:
            stop()
            return False

    def _feed(self, session: str) -> _Feed:
        feed = self._feeds.get(session)
        if feed is not None and feed.conn.connected:
            return feed
        if self._closed:
            raise TmuxUnavailable("the output copier is closed")
        if feed is None:
            feed = _Feed(self.config, session, self.tmux_bin)
        try:
            feed.conn.connect(timeout=self.timeout)
        except TmuxUnavailable:
            self._retry_at = time.monotonic() + self._pause
            self._pause = min(ATTACH_BACKOFF_MAX, self._pause * 2)
            raise
        self._pause, self._retry_at = BACKOFF_FIRST, 0.0
        self._feeds[session] = feed
        log.info("tmux output client attached to session %s", session)
        return feed

    def _prune(self, keep: str) -> None:
        """Forget clients that ended (their session or server is gone) and their copies, and stop
        the copies of panes no longer in their client's session (killed, moved; not `keep`)."""
        for session, feed in list(self._feeds.items()):
            if feed.conn.connected:
                continue
            del self._feeds[session]
            for pane, (copy, owner) in list(self._copies.items()):
                if owner is feed:
                    del self._copies[pane]
                    copy.close()
            feed.conn.close()
        for pane, entry in list(self._copies.items()):
            if pane != keep and not entry[1].holds(pane, self.timeout):
                del self._copies[pane]
                self._stop(pane, entry, ())
                self._drop_idle(entry[1])

    def _drop_idle(self, feed: _Feed) -> None:
        """A client left with nothing to copy detaches (the session no longer shows it attached)."""
        if any(owner is feed for _, owner in self._copies.values()):
            return
        if self._feeds.get(feed.session) is feed:
            del self._feeds[feed.session]
        feed.conn.close()
