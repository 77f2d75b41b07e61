"""Dead notifications as people see them: how many, and the last one's errcodes with their fixes.

A message ends `dead` when every channel refused it with a final errcode. The log line and the
audit event say so once; `tmux-agent status` and the dashboard keep saying it, because a dead
alert is an alert nobody got. The notifier writes each refusal into the outbox's `last_error`
as `verdict` formats it, and `dead_summary` reads the errcodes back, so the one format lives in
one module. The meaning and fix shown are looked up again in `wecom_errcodes` (the one place
their text lives), so what a user reads is the current advice, not a copy frozen at the time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.adapters.wecom_errcodes import Refusal, refusal
from orchestrator.clock import iso_utc

#: How many messages are dead and the newest of them (one row, none when nothing is dead);
#: read by status (StateStore.query) and the dashboard (StateSnapshot.rows) alike.
DEAD_SQL = (
    "SELECT COUNT(*) OVER () AS count, id, session, title, created_at, last_error "
    "FROM outbox WHERE status='dead' ORDER BY id DESC LIMIT 1"
)
_VERDICT = re.compile(r"(?:^|; )(\w+) errcode (-?\d+) \(")


def verdict(channel: str, errcode: int | None, found: Refusal) -> str:
    """One channel's final refusal as `last_error`, the log line and the audit event say it."""
    return f"{channel} errcode {errcode} ({found.meaning}), fix: {found.fix}"


def refusals(last_error: str | None) -> list[dict[str, Any]]:
    """`[{channel, errcode, meaning, fix}]` of a dead message's `last_error`, in channel order."""
    out: list[dict[str, Any]] = []
    for channel, code in _VERDICT.findall(last_error or ""):
        found = refusal(int(code))
        out.append(
            {
                "channel": channel,
                "errcode": int(code),
                "meaning": found.meaning if found else None,
                "fix": found.fix if found else None,
            }
        )
    return out


def dead_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """`{count, last: {id, session, title, created_at, refusals} | None}` from DEAD_SQL's rows."""
    if not rows:
        return {"count": 0, "last": None}
    row = rows[0]
    return {
        "count": int(row["count"]),
        "last": {
            "id": row["id"],
            "session": row["session"],
            "title": row["title"],
            "created_at": iso_utc(float(row["created_at"])),
            "refusals": refusals(row["last_error"]),
        },
    }


def dead_line(summary: Mapping[str, Any]) -> str | None:
    """The status line for dead notifications, or None when there are none."""
    last = summary.get("last")
    if not summary.get("count") or not isinstance(last, Mapping):
        return None
    why = "; ".join(
        f"{r['channel']} errcode {r['errcode']} ({r['meaning'] or 'not in the table'}) — fix: {r['fix'] or '?'}"
        for r in last["refusals"]
    )
    return (
        f"notifications: {summary['count']} dead (not delivered, not retried); "
        f"last #{last['id']} {last['title']!r}: {why or 'no errcode recorded'}"
    )
