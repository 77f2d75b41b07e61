"""The events an agent reported about itself, as `orchestrator.cli.agent_hook` appended them.

One JSONL file per agent session. Read incrementally from a byte offset; a last line without its
newline (a hook still writing, or cut by a crash) is left for the next read, and an unreadable
line is skipped and counted, never fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class AgentEvent:
    event: str
    ts: float
    payload: dict[str, Any]


@dataclass
class EventLog:
    path: Path
    offset: int = 0
    bad_lines: int = 0
    seen: list[AgentEvent] = field(default_factory=list)

    def poll(self) -> list[AgentEvent]:
        """The events appended since the last poll (also kept in `seen`)."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        fresh = []
        for raw in data[:end].split(b"\n"):
            try:
                item = json.loads(raw)
                fresh.append(AgentEvent(str(item["event"]), float(item["ts"]), dict(item.get("payload") or {})))
            except (ValueError, KeyError, TypeError):
                self.bad_lines += 1
        self.seen.extend(fresh)
        return fresh

    def reset(self) -> None:
        """Forget what was read (the agent was launched again)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(b"")
        self.offset = 0
        self.seen.clear()
