"""The notification outbox: every notification is written to the state DB before
any send is tried, so a message that fails, or has no channel to go to, waits
there and is delivered when a channel works again. Nothing is dropped.

A message's `status` is `pending` (waiting or backing off), `sent`, or `dead`: every channel
refused it with an errcode that will never succeed (a wrong key, content WeCom will not take).
A dead message stays in the table with its `last_error` (the errcodes and the fix) but is no
longer due or pending, so it neither blocks the others nor counts as a backlog. `dead_scope`
says why: "message" (WeCom will never take this content) or "channel" (the configuration was
wrong: a key, a secret, an IP); the notifier queues the latter again when the configuration
changes (`revive`), so fixing the key does not lose the alerts sent while it was wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from orchestrator.clock import iso_utc
from orchestrator.state.port import Store

OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    session TEXT,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    channel TEXT,
    sent_at REAL,
    dead_scope TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(status, next_attempt_at, id);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)
"""


LEASE_SECONDS = 60.0
"""How long a message taken by one host's notifier is hidden from the others (see `Outbox.due`)."""


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    dedupe_key: str
    kind: str
    session: str | None
    title: str
    body: str
    created_at: float
    status: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    channel: str | None
    sent_at: float | None
    dead_scope: str | None = None


class Outbox:
    def __init__(self, store: Store) -> None:
        self.store = store
        if store.dialect != "sqlite":  # the PostgreSQL store's migrations made these tables
            return
        with store.transaction() as db:
            for statement in OUTBOX_SCHEMA.strip().split(";"):
                if statement.strip():
                    db.execute(statement)
            columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)").fetchall()}
            if "dead_scope" not in columns:  # a state DB from before `dead` existed
                db.execute("ALTER TABLE outbox ADD COLUMN dead_scope TEXT")

    def add(
        self, *, dedupe_key: str, kind: str, session: str | None, title: str, body: str, dedupe_seconds: float
    ) -> int | None:
        """Queue a message; None when the same key was queued within its dedupe window."""
        now = self.store.clock.now()
        with self.store.transaction() as db:
            dup = db.execute(
                "SELECT id FROM outbox WHERE dedupe_key=? AND created_at > ? LIMIT 1",
                (dedupe_key, now - dedupe_seconds),
            ).fetchone()
            if dup:
                return None
            row = db.execute(
                "INSERT INTO outbox(dedupe_key, kind, session, title, body, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (dedupe_key, kind, session, title, body, now),
            ).fetchone()
            return int(row["id"])

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[OutboxMessage]:
        return [OutboxMessage(**r) for r in self.store.query(sql, params)]

    def due(self, limit: int = 20, lease_seconds: float = LEASE_SECONDS) -> list[OutboxMessage]:
        """The messages to try now. On a shared database (PostgreSQL: every host's notifier
        reads the one outbox) they are also leased: their next try is put `lease_seconds` ahead
        in the same statement, so no other notifier takes them while this one sends; `mark_sent`
        or `mark_failed` then writes the real outcome, and a notifier that died mid-send only
        delays its messages by the lease. On SQLite one orchestrator holds the file's lock."""
        now = self.store.clock.now()
        if self.store.dialect == "sqlite":
            return self._rows(
                "SELECT * FROM outbox WHERE status='pending' AND next_attempt_at <= ? ORDER BY id LIMIT ?", (now, limit)
            )
        with self.store.transaction() as db:
            rows = db.execute(
                "UPDATE outbox SET next_attempt_at=? WHERE id IN (SELECT id FROM outbox "
                "WHERE status='pending' AND next_attempt_at <= ? ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED) "
                "RETURNING *",
                (now + lease_seconds, now, limit),
            ).fetchall()
        return sorted((OutboxMessage(**r) for r in rows), key=lambda m: m.id)

    def pending(self) -> list[OutboxMessage]:
        return self._rows("SELECT * FROM outbox WHERE status='pending' ORDER BY id")

    def all(self) -> list[OutboxMessage]:
        return self._rows("SELECT * FROM outbox ORDER BY id")

    def mark_sent(self, message_id: int, channel: str) -> None:
        with self.store.transaction() as db:
            db.execute(
                "UPDATE outbox SET status='sent', channel=?, sent_at=?, attempts=attempts+1, last_error=NULL "
                "WHERE id=? AND status='pending'",
                (channel, self.store.clock.now(), message_id),
            )

    def mark_dead(self, message_id: int, error: str, scope: str) -> None:
        """End a pending message no channel will accept as configured; it is kept, not retried."""
        with self.store.transaction() as db:
            db.execute(
                "UPDATE outbox SET status='dead', attempts=attempts+1, last_error=?, dead_scope=? "
                "WHERE id=? AND status='pending'",
                (error, scope, message_id),
            )

    def revive(self, since: float) -> int:
        """Queue again the messages created after `since` that died of a channel's configuration."""
        with self.store.transaction() as db:
            cur = db.execute(
                "UPDATE outbox SET status='pending', next_attempt_at=0, dead_scope=NULL "
                "WHERE status='dead' AND dead_scope='channel' AND created_at > ?",
                (since,),
            )
            return cur.rowcount

    def dead(self) -> list[OutboxMessage]:
        return self._rows("SELECT * FROM outbox WHERE status='dead' ORDER BY id")

    def mark_failed(self, message_id: int, error: str, retry_at: float, counts_as_attempt: bool = True) -> None:
        with self.store.transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts=attempts+?, last_error=?, next_attempt_at=? WHERE id=?",
                (1 if counts_as_attempt else 0, error, retry_at, message_id),
            )

    def _put(self, key: str, value: dict[str, Any]) -> None:
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, json.dumps(value, ensure_ascii=False)),
            )

    def _get(self, key: str) -> dict[str, Any]:
        rows = self.store.query("SELECT value FROM kv WHERE key=?", (key,))
        value = json.loads(rows[0]["value"]) if rows else {}
        return value if isinstance(value, dict) else {}

    def set_health(self, health: dict[str, Any]) -> None:
        self._put("notifications", health)

    def health(self) -> dict[str, Any]:
        return self._get("notifications")

    def set_attempts(self, attempts: dict[str, list[float]]) -> None:
        """The wall-clock times of the last minute's requests per robot (WeCom's rate window),
        kept so that a restarted orchestrator goes on counting where the old one stopped."""
        self._put("wecom_attempts", attempts)

    def attempts(self) -> dict[str, list[float]]:
        return {
            key: [float(t) for t in times if isinstance(t, (int, float))]
            for key, times in self._get("wecom_attempts").items()
            if isinstance(times, list)
        }


def health_record(state: str, reason: str, channels: str, pending: int, since: float) -> dict[str, Any]:
    return {"state": state, "reason": reason, "channels": channels, "pending": pending, "since": iso_utc(since)}
