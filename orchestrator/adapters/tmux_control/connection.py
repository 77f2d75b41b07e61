"""One persistent `tmux -C` client per tmux server: commands in, replies and events out.

Why: every `tmux` subprocess is a fork/exec plus a socket handshake (about 3 ms of CPU on the
2-core CI box); a control-mode client takes a command as one line on its stdin and answers on its
stdout, and the same stream carries the server's notifications (pane output, windows closing,
sessions changing, the server going away), so nothing has to be polled or forked per command.

The client attaches to a small hidden session of its own (`HIDDEN_SESSION`, running `cat`, set
`destroy-unattached` so it vanishes with the client) unless told to attach to an existing one
(`session=`, what the service does: a hidden session would keep the user's server alive after
their last session, and show in `tmux ls`); `output=False` adds the `no-output` client flag.
tmux sends `%output` only for panes whose window is linked to the attached session; see
docs/architecture.md ("One control connection per server") for what reaches a connection and how
panes of other sessions are watched (`watch_format`).

It never starts a server (`tmux -N`): a connection to a socket with no server fails with
`TmuxUnavailable`, so a server gone stays gone until someone (the user, a test) starts one.
One reader thread parses the stream; callers block on their own reply with a deadline, and
every waiting caller is released with `ControlClosed` the moment the stream ends.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

from orchestrator.adapters.tmux_control.protocol import (
    ConnectedEvent,
    ControlEvent,
    ExitEvent,
    NotificationEvent,
    block_edge,
    command_line,
    parse_notification,
)
from orchestrator.config import TmuxConfig
from orchestrator.errors import TmuxUnavailable

log = logging.getLogger(__name__)

HIDDEN_SESSION = "__tmuxagent_ctl"
DEFAULT_TIMEOUT = 5.0
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 2.0
# Every pane of every session, in one format tmux evaluates itself: a subscription on it is the
# liveness source for panes the connection's own session does not hold.
ALL_PANES_FORMAT = "#{S:#{W:#{P:#{pane_id}=#{pane_dead}/#{window_activity} }}}"

PANE_ROW_FIELDS = (
    "pane_id",
    "session_name",
    "window_id",
    "pane_pid",
    "pane_dead",
    "pane_dead_status",
    "pane_current_command",
    "pane_in_mode",
    "pane_mode",
)


class ControlClosed(TmuxUnavailable):
    """The control client is gone (server killed or restarted, client detached)."""


class ControlTimeout(TmuxUnavailable):
    """No reply within the caller's deadline (the connection stays usable)."""


class ControlNotConnected(ControlClosed):
    """The call found no live client, so nothing of it was written: trying it another way
    (a tmux subprocess) cannot make it happen twice."""


class CommandFailed(TmuxUnavailable):
    """tmux answered `%error`: the command ran and failed (an unknown pane, a bad flag).
    `detail` is tmux's own message, as a `tmux` subprocess prints it on stderr."""

    def __init__(self, command: str, detail: str) -> None:
        super().__init__(f"tmux {command}: {detail or 'failed'}")
        self.command = command
        self.detail = detail


@dataclass(frozen=True)
class PaneRow:
    """One pane of the server as `list_panes` reads them all in one call."""

    pane_id: str
    session: str
    window_id: str
    pid: int
    dead: bool
    dead_status: int | None
    current_command: str
    in_mode: bool
    mode: str


def parse_pane_row(line: str) -> PaneRow | None:
    parts = line.split("\t")
    if len(parts) != len(PANE_ROW_FIELDS) or not parts[0].startswith("%"):
        return None
    pane, session, window, pid, dead, status, command, in_mode, mode = parts
    return PaneRow(
        pane,
        session,
        window,
        int(pid) if pid.isdigit() else 0,
        dead == "1",
        int(status) if status.lstrip("-").isdigit() else None,
        command,
        in_mode == "1",
        mode,
    )


@dataclass
class _Request:
    done: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)
    failed: bool = False
    closed: str | None = None
    on_reply: Callable[[], None] | None = None  # run on the reader thread at the reply's end


@dataclass
class _Link:
    """One client process and the requests written to it, in order."""

    proc: subprocess.Popen[bytes]
    pending: deque[_Request] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    alive: bool = True
    attached: threading.Event = field(default_factory=threading.Event)  # `%session-changed` seen
    quiet: bool = False  # closed on purpose: its end is no event
    exit_reason: str = ""
    reader: threading.Thread | None = None

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def close_all(self, reason: str) -> None:
        with self.lock:
            self.alive = False
            pending, self.pending = list(self.pending), deque()
        for request in pending:
            request.closed = reason
            request.done.set()
        self.attached.set()


class ControlConnection:
    """A tmux control-mode client. Thread-safe: any thread may call `command` and the helpers;
    subscribers are called on the reader thread and must return quickly."""

    def __init__(
        self,
        config: TmuxConfig,
        *,
        session: str | None = None,
        auto_reconnect: bool = False,
        tmux_bin: str | None = None,
        output: bool = True,
    ) -> None:
        self.config = config
        self.session = session  # read at each attach: a caller may point a reconnect elsewhere
        self.output = output  # False: attach with `no-output` (commands and notifications, no %output)
        self.auto_reconnect = auto_reconnect
        self.tmux_bin = tmux_bin or shutil.which("tmux") or "tmux"
        self.server: str | None = None  # `pid start_time` of the server attached to
        self._link: _Link | None = None
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._subscribers: list[Callable[[ControlEvent], None]] = []
        self._formats: dict[str, tuple[str, str]] = {}
        self._closing = False
        self._reconnecting = False

    # life ----------------------------------------------------------------------------------
    def argv(self) -> list[str]:
        base = [self.tmux_bin, *self.config.cli_args(), "-N", "-C"]
        quiet = [] if self.output else ["no-output"]
        if self.session is not None:
            flags = ",".join(["ignore-size", *quiet])
            # a session id (`$3`) names the session whatever it is renamed to; a name, exactly
            target = self.session if self.session.startswith("$") else f"={self.session}"
            return [*base, "attach-session", "-f", flags, "-t", target]
        hidden = [*base, "new-session", "-A", "-s", HIDDEN_SESSION, "-x", "80", "-y", "24"]
        return [*hidden, *(["-f", ",".join(quiet)] if quiet else []), "cat"]

    def connect(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Start the client (dropping one already running) and wait, at most `timeout` in all,
        until it is attached and answers; returns the server's identity. Raises TmuxUnavailable
        when no server answers on the socket. After a server restart on the same socket this
        reaches the new server, told apart by `server`."""
        with self._state_lock:
            self._closing = False
        return self._attach(timeout, by_loop=False)

    def reconnect(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The same as `connect`: read as "attach again" at call sites after a server loss."""
        return self.connect(timeout)

    def _attach(self, timeout: float, *, by_loop: bool) -> str:
        deadline = time.monotonic() + timeout
        with self._state_lock:
            old, self._link = self._link, None
        if old is not None:
            self._drop(old)
        env = {k: v for k, v in os.environ.items() if k != "TMUX"}  # inside tmux, attach refuses to nest
        proc = subprocess.Popen(
            self.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        link = _Link(proc)
        link.reader = threading.Thread(target=self._read, args=(link,), daemon=True, name="tmux-control-reader")
        with self._state_lock:
            stale = by_loop and self._closing  # closed while the loop was retrying
            if not stale:
                self._link = link
        link.reader.start()
        if stale:
            self._drop(link)
            raise ControlClosed("the control connection was closed")

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        try:
            # The attach command runs on its own: until it has, a command needing "the current
            # client" (refresh-client) fails, so wait for tmux to say the client is attached.
            if not link.attached.wait(left()) or not link.alive:
                raise ControlClosed(f"tmux control client did not attach ({link.exit_reason or 'no answer'})")
            identity = self.command("display-message", "-p", "#{pid} #{start_time}", timeout=left())
            if self.session is None:
                self.command("set-option", "destroy-unattached", "on", timeout=left())  # its own session
            for name, (what, fmt) in self._formats.items():
                self.command("refresh-client", "-B", f"{name}:{what}:{fmt}", timeout=left())
        except TmuxUnavailable:
            self._drop(link)
            raise
        self.server = identity[0].strip() if identity else ""
        self._emit(ConnectedEvent(self.server))
        return self.server

    @property
    def connected(self) -> bool:
        link = self._link
        return link is not None and link.alive

    @property
    def reconnecting(self) -> bool:
        """The automatic reconnect loop is retrying (after a server loss, until close())."""
        return self._reconnecting

    def close(self) -> None:
        with self._state_lock:
            self._closing = True
            link, self._link = self._link, None
        if link is not None:
            self._drop(link)

    def __enter__(self) -> ControlConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drop(self, link: _Link) -> None:
        """End a client on purpose: stdin closed (tmux detaches it), killed if it lingers."""
        link.quiet = True
        try:
            link.stdin.close()
        except OSError:
            pass
        try:
            link.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            link.proc.kill()
            link.proc.wait()
        if link.reader is not None and link.reader is not threading.current_thread():
            link.reader.join(timeout=2)
        link.close_all("the control connection was closed")

    # events --------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[ControlEvent], None]) -> Callable[[], None]:
        """Call `callback` with every event from now on; returns the unsubscribe function."""
        with self._state_lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._state_lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def _emit(self, event: ControlEvent) -> None:
        with self._state_lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # one subscriber's bug must not stop the stream for the others
                log.exception("tmux control subscriber failed on %s", event.kind)

    def watch_format(self, name: str, fmt: str, what: str = "", timeout: float = DEFAULT_TIMEOUT) -> None:
        """Subscribe to a format (`refresh-client -B`): a `SubscriptionEvent` when its value
        changes, at most once a second. `what` empty: evaluated once for the attached session
        (`#{S:…}` loops reach every session); `%*` / `@*`: per pane / window of that session.
        Kept across reconnects."""
        self._formats[name] = (what, fmt)
        self.command("refresh-client", "-B", f"{name}:{what}:{fmt}", timeout=timeout)

    # the stream ----------------------------------------------------------------------------
    def _read(self, link: _Link) -> None:
        assert link.proc.stdout is not None
        block: list[str] | None = None
        number, flags = "", 0
        for raw in link.proc.stdout:
            line = raw[:-1] if raw.endswith(b"\n") else raw
            edge = block_edge(line)
            if block is None:
                if edge is not None and edge.word == "begin":
                    block, number, flags = [], edge.number, edge.flags
                elif line.startswith(b"%"):
                    event = parse_notification(line)
                    if isinstance(event, ExitEvent):
                        link.exit_reason = event.reason or "the tmux client exited"
                        continue
                    if isinstance(event, NotificationEvent) and event.name == "session-changed":
                        link.attached.set()
                    self._emit(event)
            elif edge is not None and edge.word != "begin" and edge.number == number:
                if flags & 1:  # a reply to a line this client wrote (0: its attach command)
                    self._complete(link, block, failed=edge.word == "error")
                block = None
            else:
                block.append(line.decode("utf-8", errors="replace"))
        link.proc.wait()
        self._ended(link)

    def _complete(self, link: _Link, lines: list[str], *, failed: bool) -> None:
        with link.lock:
            request = link.pending.popleft() if link.pending else None
        if request is None:
            log.warning("tmux control reply with no request waiting: %s", lines[:3])
            return
        request.lines, request.failed = lines, failed
        if request.on_reply is not None:
            try:
                request.on_reply()
            except Exception:  # a caller's bug must not stop the stream
                log.exception("tmux control on_reply callback failed")
        request.done.set()

    def _ended(self, link: _Link) -> None:
        stderr = b""
        if link.proc.stderr is not None:
            stderr = link.proc.stderr.read(4096)
        reason = link.exit_reason or stderr.decode("utf-8", errors="replace").strip() or "server gone (end of stream)"
        link.exit_reason = reason
        link.close_all(f"tmux control client ended: {reason}")
        if link.quiet:
            return
        with self._state_lock:
            again = self.auto_reconnect and not self._closing and not self._reconnecting and self._link is link
            self._reconnecting = self._reconnecting or again
        self._emit(ExitEvent(reason))
        if again:
            threading.Thread(target=self._reconnect_loop, daemon=True, name="tmux-control-reconnect").start()

    def _reconnect_loop(self) -> None:
        """Attach again with a growing pause until a server answers or the connection is closed."""
        pause = BACKOFF_FIRST
        try:
            while not self._closing:
                time.sleep(pause)
                try:
                    self._attach(DEFAULT_TIMEOUT, by_loop=True)
                    return
                except TmuxUnavailable:
                    pause = min(BACKOFF_MAX, pause * 2)
        finally:
            with self._state_lock:
                self._reconnecting = False

    # commands ------------------------------------------------------------------------------
    def commands(
        self,
        *cmds: Sequence[str],
        timeout: float = DEFAULT_TIMEOUT,
        on_reply: Callable[[], None] | None = None,
    ) -> list[list[str]]:
        """Run commands written back to back (nothing of another caller between them), each on
        its own line; their replies in order. Raises ControlClosed, ControlTimeout or
        CommandFailed (tmux's message in it) — never waits past `timeout`.

        `on_reply` runs on the reader thread the moment the last command's reply ends (failed
        or not), before any later line of the stream is read: every `%output` the server sent
        before running that command was handed to subscribers before it, everything sent after
        comes after it. That is an exact cut in a pane's output (the output copier's switches)."""
        data = b"".join(command_line(list(c)) for c in cmds)
        requests = [_Request() for _ in cmds]
        if requests:
            requests[-1].on_reply = on_reply
        with self._write_lock:
            link = self._link
            if link is None:
                raise ControlNotConnected("the tmux control connection is not connected")
            with link.lock:
                if not link.alive:
                    raise ControlNotConnected(f"the tmux control connection is down ({link.exit_reason or 'closed'})")
                link.pending.extend(requests)
            try:
                link.stdin.write(data)
                link.stdin.flush()
            except (OSError, ValueError) as exc:  # the client died under us: the reader fails the rest
                link.close_all(f"tmux control client ended: {exc}")
        deadline = time.monotonic() + timeout
        replies = []
        for args, request in zip(cmds, requests, strict=True):
            if not request.done.wait(max(0.0, deadline - time.monotonic())):
                raise ControlTimeout(f"tmux {args[0]}: no reply within {timeout:.1f}s")
            if request.closed is not None:
                raise ControlClosed(request.closed)
            if request.failed:
                raise CommandFailed(args[0], " ".join(request.lines))
            replies.append(request.lines)
        return replies

    def command(self, *args: str, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
        """One tmux command (`command("list-sessions", "-F", "#{session_name}")`), its reply lines."""
        return self.commands(args, timeout=timeout)[0]

    def send_keys(self, pane: str, *keys: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Named keys such as Enter, C-c or Escape."""
        self.command("send-keys", "-t", pane, *keys, timeout=timeout)

    def send_literal(self, pane: str, text: str, *, enter: bool = False, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Text typed as is (`send-keys -l`), then Enter if asked, with nothing in between."""
        cmds: list[Sequence[str]] = [("send-keys", "-t", pane, "-l", "--", text)]
        if enter:
            cmds.append(("send-keys", "-t", pane, "Enter"))
        self.commands(*cmds, timeout=timeout)

    def paste(self, pane: str, text: str, *, enter: bool = False, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Paste text whole through a private buffer (bracketed when the program asked for it),
        fork-free: the text travels quoted on the command line, not through a file or stdin."""
        buffer = f"tmuxagent-ctl-{threading.get_ident()}-{time.monotonic_ns()}"
        cmds: list[Sequence[str]] = [
            ("set-buffer", "-b", buffer, "--", text),
            ("paste-buffer", "-d", "-p", "-b", buffer, "-t", pane),
        ]
        if enter:
            cmds.append(("send-keys", "-t", pane, "Enter"))
        self.commands(*cmds, timeout=timeout)

    def capture(self, pane: str, lines: int = 50, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
        """The pane's last `lines` lines (wrapped lines joined), trailing blank lines dropped."""
        out = self.command("capture-pane", "-p", "-J", "-t", pane, "-S", f"-{lines}", timeout=timeout)
        while out and not out[-1].strip():
            out.pop()
        return out[-lines:]

    def list_panes(self, timeout: float = DEFAULT_TIMEOUT, *, include_hidden: bool = False) -> list[PaneRow]:
        """Every pane of the server in one call (the hidden session's own only if asked)."""
        fmt = "\t".join(f"#{{{name}}}" for name in PANE_ROW_FIELDS)
        rows = (parse_pane_row(line) for line in self.command("list-panes", "-a", "-F", fmt, timeout=timeout))
        return [row for row in rows if row is not None and (include_hidden or row.session != HIDDEN_SESSION)]
