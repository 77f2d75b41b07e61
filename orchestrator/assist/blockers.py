"""Blockers: what keeps a session from making progress, kept as metadata `blockers` (a list
of strings).

A person sets them (`tmux-agent meta set S blockers '[...]'`), or this module finds them:

* in a finished command's output tail and in new lines of the session's pane (what a program
  printed outside any dispatched command), by pattern — built-in ones for a missing API key, plus `[decision]
  blocker_patterns` and the session's `blocker_patterns`; one blocker per pattern, the last
  matching line;
* from a failure streak: while the session is blocked a "failure streak: …" blocker is present,
  and `tmux-agent unblock` removes it again;
* from an agent's turn (agent sessions): a turn that ended `failed` (an API error) is an
  "agent turn failed: …" blocker with the agent's error; a reply that reports a blocker (the
  patterns above plus the agent ones: "I cannot continue", "I'm blocked", "Blocker: …") is an
  "agent reported: …" blocker, one per pattern, the last matching line. They describe the
  agent's state after its latest turn, so the next turn that ends (succeeded or failed)
  replaces them: a turn that ends without them takes them away. An agent's pane is not
  scanned — its TUI redraws the prompt, the reply and its own status lines; the turn's reply
  is the agent's report. The built-in missing-API-key patterns are for program output; an
  agent's reply often talks about code that checks keys, so in replies only the agent
  patterns and the configured `blocker_patterns` count.

A line a dispatched command printed is that command's, found in its output tail (the exact
channel), whatever order the screen and the tail show it in: while a command runs the pane is not
looked at (its new lines wait for the next look after the result), and a pane line that ends with
a line of a recent output tail is that line, drawn after the prompt (`$ <line>`) — not a second
blocker.

Every blocker found is audited (`blocker_detected`).
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from orchestrator.assist.advisor import AGENT_PREFIXES, AGENT_REPORT_PREFIX, STREAK_PREFIX, TURN_FAILED_PREFIX
from orchestrator.clock import Clock, next_beat
from orchestrator.config import DecisionSettings, SessionConfig
from orchestrator.drivers.shell_files import is_header_line
from orchestrator.ports import PaneReader
from orchestrator.redact import redact
from orchestrator.state.audit import AuditLog
from orchestrator.state.port import Store

BlockerOrigin = Literal["command output", "pane output", "failure streak", "plan", "agent turn", "agent reply"]
"""Where a blocker was found (the start of its `blocker_detected` audit detail)."""

BUILTIN_PATTERNS = (
    r"(?i)\b[A-Z0-9_]*API_KEY\b.{0,80}\b(?:missing|not set|not found|unset|empty|required|invalid|not provided)\b",
    r"(?i)\b(?:missing|no|invalid|incorrect)\b.{0,40}\bapi[ _-]?key\b",
    r"(?i)\bapi[ _-]?key\b.{0,40}\b(?:missing|not set|not found|required|invalid|not provided)\b",
    r"\bAuthenticationError\b|\b401\b.{0,20}\b(?i:unauthori[sz]ed)\b",
    r"(?i)缺少.{0,20}(?:API ?Key|密钥)|(?:API ?Key|密钥).{0,20}(?:缺失|未设置|无效)",
)
AGENT_PATTERNS = (
    r"(?i)\b(?:I|we)\s+(?:cannot|can ?not|can't|can’t|am unable to|are unable to|could not|couldn't|couldn’t)"
    r"\s+(?:continue|proceed|go on|finish|complete|move on)\b",
    r"(?i)\b(?:I'm|I’m|I am|we're|we are)\s+(?:blocked|stuck)\b",
    r"(?i)^\W{0,4}blocker(?:s)?\W{0,4}\s*[:：]",
    r"(?i)\b(?:I|we)\s+(?:have to|had to|must|need to)\s+stop\b",
    r"无法继续|被阻塞|阻塞[:：]",
)
"""What an agent says when it stops for something it lacks (only in agent replies)."""
MAX_BLOCKER_CHARS = 300
PANE_SCAN_LINES = 60
OUTPUT_LINES_KEPT = 2 * PANE_SCAN_LINES  # recent output-tail lines a pane line is checked against


def normalize_blockers(value: object) -> list[str]:
    """Metadata `blockers` as a clean list of distinct strings, whatever shape a person wrote."""
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, dict):
            text = str(item.get("text") or item.get("title") or json.dumps(item, ensure_ascii=False))
        else:
            text = str(item)
        text = " ".join(text.split())
        if text and text not in out:
            out.append(text)
    return out


class BlockerWatch:
    def __init__(
        self,
        *,
        settings: DecisionSettings,
        sessions: Sequence[SessionConfig],
        store: Store,
        audit: AuditLog,
        clock: Clock,
        panes: PaneReader,
    ) -> None:
        self.store = store
        self.audit = audit
        self.clock = clock
        self.panes = panes
        self.scan_every = settings.pane_scan_seconds
        self.agents = {s.name for s in sessions if s.kind == "agent"}
        self.patterns = {
            s.name: [
                re.compile(p)
                for p in (
                    *(AGENT_PATTERNS if s.name in self.agents else BUILTIN_PATTERNS),
                    *settings.blocker_patterns,
                    *s.blocker_patterns,
                )
            ]
            for s in sessions
        }
        self._pane_lines: dict[str, set[str]] = {}
        self._pane_last: dict[str, str] = {}
        self._next_scan: dict[str, float] = {}
        self._running: set[str] = set()
        self._output: dict[str, collections.deque[str]] = collections.defaultdict(
            lambda: collections.deque(maxlen=OUTPUT_LINES_KEPT)
        )

    # finding -------------------------------------------------------------------------------
    def find(self, session: str, lines: list[str]) -> list[str]:
        found: list[str] = []
        for pattern in self.patterns.get(session, []):
            hits = [line for line in lines if pattern.search(line)]
            if hits:
                text = " ".join(redact(hits[-1]).split())[:MAX_BLOCKER_CHARS]
                if text not in found:
                    found.append(text)
        return found

    def command_started(self, session: str) -> None:
        """A command was dispatched: what the pane shows now is its output, told by its result."""
        self._running.add(session)

    def command_ended(self, session: str, output_tail: str) -> list[str]:
        """A command's result is in: blockers in its output tail; returns those that were new."""
        self._running.discard(session)
        self._output[session].extend(line.strip() for line in output_tail.splitlines() if line.strip())
        return self.from_output(session, output_tail)

    def from_output(self, session: str, output_tail: str) -> list[str]:
        """Blockers in a finished command's output tail; returns those that were new."""
        return self.add(session, self.find(session, output_tail.splitlines()), "command output")

    def _printed_by_a_command(self, session: str, line: str) -> bool:
        text = line.rstrip()
        return any(text.endswith(printed) for printed in self._output.get(session, ()))

    def reported(self, session: str, reply: str) -> list[str]:
        """The blockers an agent's reply reports ("agent reported: <the line>")."""
        return [f"{AGENT_REPORT_PREFIX} {text}"[:MAX_BLOCKER_CHARS] for text in self.find(session, reply.splitlines())]

    def from_turn(self, session: str, status: str, prompt: str, reply: str) -> list[str]:
        """An agent's turn ended: its blockers replace those of the turns before; returns the new ones.

        A stalled or cancelled turn says nothing about the agent's state: nothing changes."""
        if status not in ("succeeded", "failed"):
            return []
        failed: list[str] = []
        if status == "failed":
            short = " ".join(redact(prompt).split())
            short = short if len(short) <= 60 else short[:59] + "…"
            error = " ".join(redact(reply).split()) or "no reply"
            failed = [f"{TURN_FAILED_PREFIX} “{short}”: {error}"[:MAX_BLOCKER_CHARS]]
        reported = self.reported(session, reply)
        current = normalize_blockers(self.store.metadata(session).get("blockers"))
        stale = [b for b in current if b.startswith(AGENT_PREFIXES) and b not in failed + reported]
        if stale:
            self.remove(session, lambda b: b in stale)
        return self.add(session, failed, "agent turn") + self.add(session, reported, "agent reply")

    def scan_pane(self, name: str) -> list[str]:
        """New lines in the session's pane since the last look; the first look is only the baseline.

        Without a known pane (or when tmux does not answer) there is nothing to scan this time; an
        agent session's pane is never scanned (its turns' replies are, see `from_turn`).
        """
        now = self.clock.monotonic()
        if name in self.agents or self.scan_every <= 0 or now < self._next_scan.get(name, 0.0):
            return []
        if name in self._running:  # the baseline stays: these lines are judged once the result is in
            return []
        self._next_scan[name] = next_beat(now, self.scan_every)  # every pane's look in one round
        if name in self._pane_lines and not self.panes.drew_since_last_look(name):
            return []  # nothing written since the last look (tmux's activity stamp): no capture
        captured = self.panes.capture_session(name, PANE_SCAN_LINES)
        if captured is None:
            return []
        # The orchestrator's own `▶ #N command` headers show the command, not what it printed; the
        # lines a dispatched command printed are its output tail's.
        lines = [line for line in captured if not is_header_line(line) and not self._printed_by_a_command(name, line)]
        previous, previous_last = self._pane_lines.get(name), self._pane_last.get(name)
        # The cursor's line may still be being written: it counts once it is the same on two looks.
        last = lines[-1] if lines else ""
        settled = lines[:-1] + ([last] if last == previous_last else [])
        self._pane_lines[name], self._pane_last[name] = set(settled), last
        if previous is None:  # the baseline: everything on the screen now is old
            self._pane_lines[name].add(last)
            return []
        return self.add(name, self.find(name, [line for line in settled if line not in previous]), "pane output")

    def sync_streak(self, session: str, metadata: dict[str, Any]) -> dict[str, Any]:
        """A blocked session has a failure-streak blocker; an unblocked one has none."""
        present = [b for b in normalize_blockers(metadata.get("blockers")) if b.startswith(STREAK_PREFIX)]
        if metadata.get("blocked") and not present:
            last = metadata.get("last_command_result") or {}
            how = (
                f"last prompt `{last.get('command')}` {last.get('status')}"
                if session in self.agents
                else f"last `{last.get('command')}` exit {last.get('exit_code')}"
            )
            text = f"{STREAK_PREFIX} {metadata.get('failure_streak') or '?'} consecutive failures; {how}"
            self.add(session, [redact(text)], "failure streak")
        elif not metadata.get("blocked") and present:
            self.remove(session, lambda b: b.startswith(STREAK_PREFIX))
        else:
            return metadata
        return self.store.metadata(session)

    # writing ---------------------------------------------------------------------------------
    def add(self, session: str, texts: list[str], origin: BlockerOrigin) -> list[str]:
        """Merge blockers into the metadata; returns those that were new."""
        added: list[str] = []

        def merge(current: Any) -> list[str]:
            blockers = normalize_blockers(current)
            added.extend(t for t in texts if t not in blockers)
            return blockers + added

        if texts and [t for t in texts if t not in normalize_blockers(self.store.metadata(session).get("blockers"))]:
            self.store.modify_metadata(session, "blockers", merge)
        for text in added:
            self.audit.record("blocker_detected", session, detail=f"{origin}: {text}")
        return added

    def remove(self, session: str, drop: Callable[[str], bool]) -> None:
        self.store.modify_metadata(
            session, "blockers", lambda current: [b for b in normalize_blockers(current) if not drop(b)]
        )
