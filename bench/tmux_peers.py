"""The peers the benchmarks measure the product against, on the same tmux server: a forked `tmux`
per call (pollers, naive loops), the shell-stamped commands they type, a control-mode stream
and a pipe-pane reader."""

from __future__ import annotations

import os
import queue
import re
import selectors
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.adapters.tmux_control import ControlConnection, ControlEvent, OutputEvent, decode_output
from orchestrator.config import TmuxConfig
from pytest_tmuxagent.tmux_server import TmuxTestServer


# the peers: what other tools do, measured on the same server ------------------------------
def tmux_fork(tmux: TmuxTestServer, *args: str) -> None:
    """One `tmux` process per call: what pollers and naive loops do for every command."""
    subprocess.run([shutil.which("tmux") or "tmux", "-L", tmux.socket_name, *args], capture_output=True, check=True)


def type_forked(tmux: TmuxTestServer, pane: str, line: str) -> None:
    """Type `line` and Enter in one forked `tmux` (two commands joined by `;`)."""
    tmux_fork(tmux, "send-keys", "-t", pane, "-l", "--", line, ";", "send-keys", "-t", pane, "Enter")


def stamped(tag: str, body: str) -> str:
    """`body` between two stamps of the shell's own clock (bash's `$EPOCHREALTIME`, a builtin, so
    no fork moves them): `TAG:S <start>` before it and `TAG:D <end>` right after it exits."""
    return f'echo "{tag}:S $EPOCHREALTIME"; {body}; echo "{tag}:D $EPOCHREALTIME"'


def stamp(text: str, tag: str, which: str) -> float | None:
    """The `TAG:S` / `TAG:D` stamp printed in `text` (a screen or raw pane output), else None.
    The typed command line echoes `"TAG:D $EPOCHREALTIME"` after a quote, so only the printed
    form, at the start of a line, matches."""
    m = re.search(rf"(?:^|[\r\n]){re.escape(tag)}:{which} (\d+\.\d+)(?=[\r\n])", text)
    return float(m.group(1)) if m else None


@dataclass(frozen=True)
class Chunk:
    """Pane text as a peer sees it: a stream's next bytes, or (`whole`) a fresh capture of the screen."""

    pane: str
    text: str
    at: float  # time.time() when the peer had it
    whole: bool = False


class ControlStream:
    """A control-mode client (`tmux -C`, the product's own ControlConnection) attached to one
    session: its panes' `%output` arrives as chunks, keys go in as lines on the same stream."""

    def __init__(self, tmux: TmuxTestServer, session: str) -> None:
        self.conn = ControlConnection(TmuxConfig(socket_name=tmux.socket_name), session=session)
        self.chunks: queue.Queue[Chunk] = queue.Queue()
        self.conn.subscribe(self._event)
        self.conn.connect()

    def _event(self, event: ControlEvent) -> None:
        if isinstance(event, OutputEvent):
            self.chunks.put(Chunk(event.pane, decode_output(event.data).decode("utf-8", "replace"), time.time()))

    def type(self, pane: str, line: str) -> None:
        self.conn.send_literal(pane, line, enter=True)

    def close(self) -> None:
        self.conn.close()


class PipePaneReader:
    """`tmux pipe-pane` of each pane into its own FIFO, all read by one thread with a selector:
    the panes' output arrives as chunks, with no process of ours per read."""

    def __init__(self, tmux: TmuxTestServer, panes: list[str], folder: Path) -> None:
        self.tmux, self.panes = tmux, panes
        self.chunks: queue.Queue[Chunk] = queue.Queue()
        self._selector = selectors.DefaultSelector()
        self._fds: list[int] = []
        self._closing = threading.Event()
        for i, pane in enumerate(panes):
            fifo = folder / f"pane-{i}.fifo"
            os.mkfifo(fifo)
            read = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            self._fds += [read, os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)]  # a writer of ours: never EOF
            self._selector.register(read, selectors.EVENT_READ, pane)
            tmux_fork(tmux, "pipe-pane", "-t", pane, f"cat >> {shlex.quote(str(fifo))}")
        self._thread = threading.Thread(target=self._read, daemon=True, name="pipe-pane-reader")
        self._thread.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                data = os.read(key.fd, 65536)
                self.chunks.put(Chunk(key.data, data.decode("utf-8", "replace"), time.time()))

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=2)
        for pane in self.panes:
            subprocess.run([shutil.which("tmux") or "tmux", "-L", self.tmux.socket_name, "pipe-pane", "-t", pane])
        self._selector.close()
        for fd in self._fds:
            os.close(fd)


def drain(chunks: queue.Queue[Chunk], timeout: float) -> list[Chunk]:
    """The chunks that arrived, waiting up to `timeout` for the first."""
    try:
        got = [chunks.get(timeout=max(0.0, timeout))]
    except queue.Empty:
        return []
    while True:
        try:
            got.append(chunks.get_nowait())
        except queue.Empty:
            return got
