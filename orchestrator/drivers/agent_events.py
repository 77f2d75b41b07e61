"""The events an agent reported about itself, as `orchestrator.cli.agent_hook` appended them,
and the agent's own transcript (Claude Code's session JSONL, codex's rollout) read as it grows.

One JSONL file per agent session. Read incrementally from a byte offset; a last line without its
newline (a hook still writing, or cut by a crash) is left for the next read, and an unreadable
line is skipped and counted, never fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def read_new_lines(path: Path, offset: int) -> tuple[list[bytes], int]:
    """Whole lines appended to `path` since `offset`, and the offset after them."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    return [line for line in data[:end].split(b"\n") if line.strip()], offset + end + 1


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
        lines, self.offset = read_new_lines(self.path, self.offset)
        fresh = []
        for raw in lines:
            try:
                item = json.loads(raw)
                fresh.append(AgentEvent(str(item["event"]), float(item["ts"]), dict(item.get("payload") or {})))
            except (ValueError, KeyError, TypeError):
                self.bad_lines += 1
        self.seen.extend(fresh)
        return fresh

    def add(self, events: list[AgentEvent]) -> None:
        """Events read from elsewhere (the agent's transcript), in the order they were read."""
        self.seen.extend(events)

    def reset(self) -> None:
        """Forget what was read (the agent was launched again)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(b"")
        self.offset = 0
        self.seen.clear()


@dataclass
class TranscriptTail:
    """The agent's own transcript, read as it grows: its entries (dicts) and how many bytes of it
    have been read (a stall guard's activity: a hung model writes nothing here)."""

    path: Path
    offset: int = 0
    bad_lines: int = 0

    def poll(self) -> list[dict[str, Any]]:
        lines, self.offset = read_new_lines(self.path, self.offset)
        out: list[dict[str, Any]] = []
        for raw in lines:
            try:
                item = json.loads(raw)
            except ValueError:
                self.bad_lines += 1
                continue
            if isinstance(item, dict):
                out.append(item)
        return out
