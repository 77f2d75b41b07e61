"""The queue's wake-up on PostgreSQL: `enqueue` rings `NOTIFY tmuxagent_queue, '<session>'` in
the transaction that queues the command; `PgListener` hears it on a connection of its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql as pgsql

from .pg_errors import display_dsn

log = logging.getLogger("orchestrator.state.db")

CHANNEL = "tmuxagent_queue"
"""The NOTIFY channel `enqueue` rings; the payload is the session's name."""


class PgListener:
    """`LISTEN tmuxagent_queue` on a connection of its own, on a thread of its own: each
    notification becomes `callback(session)`. After its connection is lost and made again it
    calls `callback(None)` ("anything may have been queued meanwhile: look at every session")."""

    def __init__(self, dsn: str, callback: Callable[[str | None], None], poll_s: float = 0.2) -> None:
        self.dsn = dsn
        self.callback = callback
        self.poll_s = poll_s
        self.listening = threading.Event()  # set while LISTEN is in force
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        reconnected = False
        while not self._closing.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(CHANNEL)))
                    self.listening.set()
                    if reconnected:
                        self._call(None)
                    while not self._closing.is_set():
                        for note in conn.notifies(timeout=self.poll_s):
                            self._call(note.payload)
            except psycopg.Error as exc:
                if self.listening.is_set() or not reconnected:  # once per episode, not per attempt
                    log.warning("queue listener lost %s (%s); listening again", display_dsn(self.dsn), exc)
                self.listening.clear()
                reconnected = True
                self._closing.wait(self.poll_s)

    def _call(self, session: str | None) -> None:
        try:
            self.callback(session)
        except Exception:  # a bug in the callback must not stop the wake-ups
            log.exception("queue listener callback failed")

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5 * self.poll_s + 1)
