"""What every agent provider shares: the `Provider` port the agent driver talks to, the question
an agent asks, and the small readers of screens and JSONL transcripts both providers use.

The providers themselves are `claude_provider` and `codex_provider`; `agent_providers` names them.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from orchestrator.drivers.agent_events import AgentEvent
from orchestrator.model import ApprovalRequest, ResultStatus, ToolCall

SHELL_TOOLS = {"Bash", "exec_command", "shell", "local_shell"}
BUSY_MARK = "esc to interrupt"  # both TUIs show it while a turn runs


@dataclass(frozen=True)
class AgentQuestion:
    """The agent asks the person a question (Claude Code's AskUserQuestion menu): the question,
    and the labels of its choices in order (the person may answer with a label or a number)."""

    key: str
    text: str
    options: tuple[str, ...] = ()

    def for_person(self) -> str:
        if not self.options:
            return self.text
        return self.text + " " + " / ".join(f"{i}. {label}" for i, label in enumerate(self.options, 1))


ReplyAction = tuple[Literal["key", "text"], str]


def screen_busy(screen: Sequence[str]) -> bool:
    return any(BUSY_MARK in line for line in screen)


def last_block(screen: Sequence[str], bullet: str, stops: Sequence[str]) -> str:
    """The text of the last `bullet`-led block above the input box, continuation lines included."""
    lines = list(screen)
    end = max((i for i, line in enumerate(lines) if line.lstrip().startswith(tuple(stops))), default=len(lines))
    start = max((i for i, line in enumerate(lines[:end]) if line.lstrip().startswith(bullet)), default=-1)
    if start < 0:
        return ""
    block = [lines[start].lstrip()[len(bullet) :].strip()]
    for line in lines[start + 1 : end]:
        if not line.strip() or line.lstrip().startswith(("─", "❯", "›", "✻", "•", "●", "╭", "╰")):
            break
        block.append(line.strip())
    return "\n".join(block).strip()


def normalize(text: str) -> str:
    return " ".join(text.split())


def entry_time(entry: dict[str, Any]) -> float:
    """An entry's ISO 8601 `timestamp` as epoch seconds (now when it has none)."""
    stamp = entry.get("timestamp")
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return time.time()


def content_text(content: Any, kinds: tuple[str, ...] = ("text", "input_text")) -> str:
    """The text blocks of a message's content (a string, or a list of typed blocks), joined."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") in kinds)


class Provider(Protocol):
    name: str

    def launch_line(self, launch: str, hook_argv: Sequence[str], run_dir: Path, env: dict[str, str]) -> str:
        """The command typed at the shell prompt to start the agent with its feedback wired."""
        ...

    def is_ready(self, screen: Sequence[str]) -> bool:
        """The agent's own prompt is on the screen, ready for input (screen fallback)."""
        ...

    def looks_like_agent(self, screen: Sequence[str]) -> bool: ...

    def turn_started(self, event: AgentEvent, prompt: str) -> bool: ...

    def turn_ended(self, event: AgentEvent, prompt: str) -> bool: ...

    def idle_event(self, event: AgentEvent) -> bool:
        """The agent is back at its prompt after this event (no turn in flight)."""
        ...

    def reply_on_screen(self, screen: Sequence[str]) -> str:
        """The last reply block on the screen — the fallback for an adopted agent without hooks."""
        ...

    approve_keys: tuple[str, ...]
    """The agent's own keys that approve its tool request (the dialog's first choice)."""
    deny_keys: tuple[str, ...]
    """The keys that refuse it and hand the prompt back (the agent then waits to be told why)."""
    approvals_reported: bool
    """True when the agent's events say exactly when it asks; else the screen is read (fallback)."""

    def approval(self, turn: Sequence[AgentEvent]) -> ApprovalRequest | None:
        """The tool request the agent waits on, from the turn's events (None when none is open)."""
        ...

    def approval_on_screen(self, screen: Sequence[str]) -> ApprovalRequest | None:
        """The approval prompt drawn on the screen (fallback for what no event reports)."""
        ...

    def dialog_drawn(self, screen: Sequence[str]) -> bool:
        """The approval dialog is on the screen, so its keys reach it (not the input box)."""
        ...

    def transcript_path(
        self, events: Sequence[AgentEvent], env: dict[str, str], workdir: Path, since: float
    ) -> Path | None:
        """The agent's own transcript of this session, once it exists (None until then)."""
        ...

    def question(self, turn: Sequence[AgentEvent]) -> AgentQuestion | None:
        """The question the agent waits to have answered, from the turn's events."""
        ...

    def reply_actions(self, question: AgentQuestion, text: str) -> list[ReplyAction]:
        """How a person's answer is typed into the agent's question (keys, then text)."""
        ...

    def transcript_event(self, entry: dict[str, Any]) -> AgentEvent | None:
        """One transcript entry as an event (`transcript.*` / `rollout.*`), or None to skip it."""
        ...

    def turn_aborted(self, event: AgentEvent) -> bool:
        """The turn was cut short (an interrupt): the agent is back at its prompt, no end event."""
        ...

    def result(
        self, end: AgentEvent, prompt: str, env: dict[str, str], turn: Sequence[AgentEvent]
    ) -> tuple[ResultStatus, str, list[ToolCall]]:
        """How the turn ended, its reply and tool calls; `turn` is the events from its start to its end."""
        ...


def tool_call(name: str, arguments: Any) -> ToolCall:
    call = ToolCall(name=name)
    if isinstance(arguments, dict):
        call["input"] = arguments
        command = arguments.get("command", arguments.get("cmd"))
        if isinstance(command, list):
            command = shlex.join(str(c) for c in command)
        if isinstance(command, str) and name in SHELL_TOOLS:
            call["command"] = command
    return call


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue  # a line being written, or cut
        if isinstance(item, dict):
            out.append(item)
    return out
