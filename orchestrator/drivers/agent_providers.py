"""What differs between the agents: how each is launched with its feedback wired, which of its
events start and end a turn, where its transcript says what the turn did, and — as a fallback for
screens no event reports — what its ready prompt looks like.

Verified against Claude Code 2.1.197 and codex-cli 0.171.0 (see docs/agent-sessions.md):

* Claude Code: hooks from a settings file passed with `--settings` (`SessionStart`,
  `UserPromptSubmit` with `prompt`, `PreToolUse`, `PostToolUse`, `Notification`, `Stop` with
  `last_assistant_message`); each payload names `transcript_path`, a JSONL of `user` /
  `assistant` entries whose `message.content` holds `text` and `tool_use` blocks.
* codex: the `notify` program (`-c notify=[…]`) gets `{"type": "agent-turn-complete",
  "thread-id", "turn-id", "input-messages", "last-assistant-message"}` — also for its own
  title task, which is told apart by its input; the rollout JSONL under
  `CODEX_HOME/sessions/**/rollout-*-<thread-id>.jsonl` holds the turn's `function_call` items.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from orchestrator.drivers.agent_events import AgentEvent
from orchestrator.model import ResultStatus, ToolCall

SHELL_TOOLS = {"Bash", "exec_command", "shell", "local_shell"}
BUSY_MARK = "esc to interrupt"  # both TUIs show it while a turn runs


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


class ClaudeProvider:
    name = "claude"
    HOOKS = ("SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Notification", "Stop")

    def settings(self, hook_argv: Sequence[str]) -> dict[str, Any]:
        hooks: dict[str, Any] = {}
        for event in self.HOOKS:
            command = shlex.join([*hook_argv, event])
            entry: dict[str, Any] = {"hooks": [{"type": "command", "command": command}]}
            if event in ("PreToolUse", "PostToolUse"):
                entry["matcher"] = "*"
            hooks[event] = [entry]
        return {"hooks": hooks}

    def launch_line(self, launch: str, hook_argv: Sequence[str], run_dir: Path, env: dict[str, str]) -> str:
        digest = hashlib.sha1("\0".join(hook_argv).encode()).hexdigest()[:10]
        path = run_dir / f"claude-settings-{digest}.json"
        path.write_text(json.dumps(self.settings(hook_argv)), encoding="utf-8")
        return f"{launch} --settings {shlex.quote(str(path))}"

    def is_ready(self, screen: Sequence[str]) -> bool:
        return any("? for shortcuts" in line for line in screen) and any(
            line.lstrip().startswith("❯") for line in screen
        )

    def looks_like_agent(self, screen: Sequence[str]) -> bool:
        return any("Claude Code" in line or "? for shortcuts" in line for line in screen)

    def turn_started(self, event: AgentEvent, prompt: str) -> bool:
        given = event.payload.get("prompt")
        return event.event == "UserPromptSubmit" and isinstance(given, str) and normalize(given) == normalize(prompt)

    def turn_ended(self, event: AgentEvent, prompt: str) -> bool:
        return event.event == "Stop"

    def idle_event(self, event: AgentEvent) -> bool:
        return event.event in ("Stop", "SessionStart")

    def reply_on_screen(self, screen: Sequence[str]) -> str:
        return last_block(screen, "● ", ("─", "❯"))

    def result(
        self, end: AgentEvent, prompt: str, env: dict[str, str], turn: Sequence[AgentEvent]
    ) -> tuple[ResultStatus, str, list[ToolCall]]:
        """Tool calls from the PreToolUse hooks of the turn (exact, in order); reply and errors from
        the Stop hook and the transcript."""
        hooked: dict[str, ToolCall] = {}
        for event in turn:
            if event.event == "PreToolUse":
                key = str(event.payload.get("tool_use_id") or len(hooked))
                hooked.setdefault(key, tool_call(str(event.payload.get("tool_name")), event.payload.get("tool_input")))
        reply = end.payload.get("last_assistant_message")
        transcript = end.payload.get("transcript_path")
        entries = read_jsonl(Path(transcript)) if isinstance(transcript, str) else []
        start = 0
        for index, entry in enumerate(entries):
            content = (entry.get("message") or {}).get("content") if entry.get("type") == "user" else None
            text = content if isinstance(content, str) else ""
            if isinstance(content, list):
                text = " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
            if text and normalize(text) == normalize(prompt):
                start = index + 1
        tools: list[ToolCall] = []
        status: ResultStatus = "succeeded"
        texts: list[str] = []
        for entry in entries[start:]:
            if entry.get("type") != "assistant":
                continue
            if entry.get("isApiErrorMessage") or entry.get("error"):
                status = "failed"
            for block in (entry.get("message") or {}).get("content") or []:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_use":
                    tools.append(tool_call(str(block.get("name")), block.get("input")))
                elif block.get("type") == "text" and block.get("text"):
                    texts.append(str(block["text"]))
        if not isinstance(reply, str):
            reply = texts[-1] if texts else ""
        return status, reply, list(hooked.values()) if hooked else tools


CODEX_FOOTER = re.compile(r"^\s*\S+.* · ")


class CodexProvider:
    name = "codex"

    def __init__(self) -> None:
        self._rollouts: dict[str, Path] = {}  # thread id → its rollout file, found once

    def launch_line(self, launch: str, hook_argv: Sequence[str], run_dir: Path, env: dict[str, str]) -> str:
        notify = "notify=" + json.dumps([*hook_argv, "notify"])
        return f"{launch} -c {shlex.quote(notify)}"

    def is_ready(self, screen: Sequence[str]) -> bool:
        """`? for shortcuts` shows early; input is taken only once the footer names the model."""
        shortcuts = any("? for shortcuts" in line for line in screen)
        footer = any(CODEX_FOOTER.match(line) and "for shortcuts" not in line for line in screen)
        return shortcuts and footer and any(line.lstrip().startswith("›") for line in screen)

    def looks_like_agent(self, screen: Sequence[str]) -> bool:
        return any("OpenAI Codex" in line or "? for shortcuts" in line for line in screen)

    def turn_started(self, event: AgentEvent, prompt: str) -> bool:
        return self.turn_ended(event, prompt)

    def turn_ended(self, event: AgentEvent, prompt: str) -> bool:
        if event.event != "notify" or event.payload.get("type") != "agent-turn-complete":
            return False
        messages = event.payload.get("input-messages")
        return isinstance(messages, list) and bool(messages) and normalize(str(messages[-1])) == normalize(prompt)

    def idle_event(self, event: AgentEvent) -> bool:
        return event.event == "notify"

    def reply_on_screen(self, screen: Sequence[str]) -> str:
        return last_block(screen, "• ", ("›",))

    def result(
        self, end: AgentEvent, prompt: str, env: dict[str, str], turn: Sequence[AgentEvent]
    ) -> tuple[ResultStatus, str, list[ToolCall]]:
        reply = end.payload.get("last-assistant-message")
        thread, turn_id = end.payload.get("thread-id"), end.payload.get("turn-id")
        home = Path(env.get("CODEX_HOME") or Path(env.get("HOME") or Path.home()) / ".codex")
        tools: list[ToolCall] = []
        status: ResultStatus = "succeeded"
        files: list[Path] = []
        if isinstance(thread, str):
            known = self._rollouts.get(thread)
            files = [known] if known is not None else sorted((home / "sessions").rglob(f"rollout-*-{thread}.jsonl"))
            if files:
                self._rollouts[thread] = files[-1]
        inside = False
        for entry in read_jsonl(files[-1]) if files else []:
            payload = entry.get("payload") or {}
            kind = payload.get("type")
            if entry.get("type") == "event_msg" and kind == "task_started":
                attribution = payload.get("turn_attribution") or {}
                inside = turn_id in (attribution.get("turn_id"), payload.get("turn_id"))
            elif entry.get("type") == "event_msg" and kind == "task_complete" and payload.get("turn_id") == turn_id:
                inside = False
            elif inside and entry.get("type") == "event_msg" and kind in ("error", "stream_error"):
                status = "failed"
            elif inside and entry.get("type") == "response_item" and kind == "function_call":
                try:
                    arguments = json.loads(payload.get("arguments") or "{}")
                except ValueError:
                    arguments = {"raw": payload.get("arguments")}
                tools.append(tool_call(str(payload.get("name")), arguments))
        return status, reply if isinstance(reply, str) else "", tools


PROVIDERS: dict[str, type[ClaudeProvider] | type[CodexProvider]] = {"claude": ClaudeProvider, "codex": CodexProvider}
