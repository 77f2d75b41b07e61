"""A unix-socket forwarder that a test can cut and heal: a network partition between one client
and a server, with both processes still running.

The fleet tests put one host's PostgreSQL connections through a gate (its DSN names the gate's
folder as `host`, libpq's socket file `.s.PGSQL.PORT` lives there). `cut()` resets every open
connection and refuses new ones, as a dead link does; `heal()` lets them through again. Nothing
is mocked: the client's driver sees real connection failures, the server real disconnects.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import threading
from pathlib import Path

__all__ = ["SocketGate"]


class SocketGate:
    """Forward `listen_path` → `target_path` (two unix sockets) until `cut()`.

    >>> import os
    >>> folder = Path(tempfile.mkdtemp())
    >>> server = socket.socket(socket.AF_UNIX); server.bind(str(folder / "real")); server.listen()
    >>> gate = SocketGate(folder / "gate", folder / "real").start()
    >>> client = socket.socket(socket.AF_UNIX); client.connect(str(folder / "gate"))
    >>> peer, _ = server.accept(); client.sendall(b"ping"); peer.recv(4)
    b'ping'
    >>> gate.close(); client.close(); peer.close(); server.close()
    """

    def __init__(self, listen_path: Path, target_path: Path) -> None:
        self.listen_path = listen_path
        self.target_path = target_path
        self.open = threading.Event()
        self.open.set()
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._closed = False

    def start(self) -> SocketGate:
        self._listener.bind(str(self.listen_path))
        self._listener.listen(64)
        threading.Thread(target=self._accept, name="socket-gate", daemon=True).start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            if not self.open.is_set():
                client.close()  # a partition: the connection is refused at once
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(str(self.target_path))
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                self._live |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            self._drop(source, sink)

    def _drop(self, *sockets: socket.socket) -> None:
        with self._lock:
            for sock in sockets:
                self._live.discard(sock)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        self.open.clear()
        with self._lock:
            live = list(self._live)
        self._drop(*live)

    def heal(self) -> None:
        self.open.set()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.cut()
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.listen_path.unlink()


def gate_folder() -> Path:
    """A short folder for a gate's socket (a unix socket path must stay under 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix="tmuxagent-gate-", dir="/tmp"))
