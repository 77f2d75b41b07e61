"""Claude Code as a provider: launched with a `--settings` file whose hooks append one line per
event (`SessionStart`, `UserPromptSubmit` with `prompt`, `PreToolUse`, `PostToolUse`,
`Notification`, `Stop` with `last_assistant_message`); each payload names `transcript_path`, a
JSONL of `user` / `assistant` entries whose `message.content` holds `text` and `tool_use` blocks.
Verified against Claude Code 2.1.197 (see docs/agent-sessions.md).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.drivers.agent_events import AgentEvent
from orchestrator.drivers.provider_base import (
    AgentQuestion,
    ReplyAction,
    content_text,
    entry_time,
    last_block,
    normalize,
    read_jsonl,
    tool_call,
)
from orchestrator.model import ApprovalRequest, ResultStatus, ToolCall


class ClaudeProvider:
    name = "claude"
    HOOKS = (
        "SessionStart",
        "UserPromptSubmit",
        "PreToolUse",
        "PermissionRequest",
        "PostToolUse",
        "PostToolUseFailure",
        "Notification",
        "Stop",
        "StopFailure",
    )
    approve_keys: tuple[str, ...] = ("1",)  # "❯ 1. Yes"
    deny_keys: tuple[str, ...] = ("Escape",)  # same as "3. No": the turn ends, "What should Claude do instead?"
    approvals_reported: bool = True
    ANSWERED = ("PostToolUse", "PostToolUseFailure", "PermissionDenied", "Stop", "StopFailure", "UserPromptSubmit")
    ENDS = ("Stop", "StopFailure")  # StopFailure: the turn ended in an API error (after its retries)

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
        return event.event in self.ENDS

    def idle_event(self, event: AgentEvent) -> bool:
        return event.event in (*self.ENDS, "SessionStart")

    def reply_on_screen(self, screen: Sequence[str]) -> str:
        return last_block(screen, "● ", ("─", "❯"))

    QUESTION_TOOL = "AskUserQuestion"

    def _open_permission(self, turn: Sequence[AgentEvent]) -> tuple[str, AgentEvent] | None:
        """The `PermissionRequest` still open (sent when a dialog opens — a tool's permission, or
        AskUserQuestion's menu — until a later event shows it answered), with its key: it carries
        no tool_use_id, so the key is the id of the `PreToolUse` with the same input."""
        open_one: tuple[str, AgentEvent] | None = None
        calls: list[AgentEvent] = []
        prompts = 0
        for event in turn:
            if event.event == "UserPromptSubmit":
                prompts += 1
                if prompts == 1:  # the turn's own prompt, whenever its hook's line landed: no answer
                    continue
            if event.event == "PreToolUse":
                calls.append(event)
            elif event.event == "PermissionRequest":
                name, given = event.payload.get("tool_name"), event.payload.get("tool_input")
                match = next(
                    (
                        c
                        for c in reversed(calls)
                        if c.payload.get("tool_input") == given and c.payload.get("tool_name") == name
                    ),
                    None,
                )
                key = str(match.payload.get("tool_use_id")) if match is not None else f"permission-{event.ts:.6f}"
                open_one = (key, event)
            elif event.event in self.ANSWERED:
                open_one = None
        return open_one

    def approval(self, turn: Sequence[AgentEvent]) -> ApprovalRequest | None:
        found = self._open_permission(turn)
        if found is None or found[1].payload.get("tool_name") == self.QUESTION_TOOL:
            return None
        key, event = found
        name, given = str(event.payload.get("tool_name") or "tool"), event.payload.get("tool_input")
        detail = given.get("description") if isinstance(given, dict) else None
        return ApprovalRequest(key, name, tool_call(name, given).get("command", ""), str(detail or ""), "hook")

    def question(self, turn: Sequence[AgentEvent]) -> AgentQuestion | None:
        """AskUserQuestion's menu (its first question: the one on the screen)."""
        found = self._open_permission(turn)
        if found is None or found[1].payload.get("tool_name") != self.QUESTION_TOOL:
            return None
        given = found[1].payload.get("tool_input")
        questions = given.get("questions") if isinstance(given, dict) else None
        first = questions[0] if isinstance(questions, list) and questions and isinstance(questions[0], dict) else {}
        options = tuple(
            str(o.get("label")) for o in first.get("options") or [] if isinstance(o, dict) and o.get("label")
        )
        return AgentQuestion(found[0], str(first.get("question") or "(see the pane)"), options)

    def reply_actions(self, question: AgentQuestion, text: str) -> list[ReplyAction]:
        """A choice's number or label presses its number; other words take the menu's own
        "Type something." choice (the one after the options) and are typed there."""
        wanted = text.strip()
        labels = [label.casefold() for label in question.options]
        if wanted.isdigit() and 1 <= int(wanted) <= len(labels):
            return [("key", wanted)]
        if wanted.casefold() in labels:
            return [("key", str(labels.index(wanted.casefold()) + 1))]
        return [("key", str(len(labels) + 1)), ("text", text), ("key", "Enter")]

    def approval_on_screen(self, screen: Sequence[str]) -> ApprovalRequest | None:
        return None  # PermissionRequest reports it

    def dialog_drawn(self, screen: Sequence[str]) -> bool:
        return any("Do you want to proceed?" in line for line in screen)

    def transcript_path(
        self, events: Sequence[AgentEvent], env: dict[str, str], workdir: Path, since: float
    ) -> Path | None:
        """Every hook payload names the session's transcript (`transcript_path`)."""
        for event in reversed(events):
            path = event.payload.get("transcript_path")
            if isinstance(path, str) and path:
                return Path(path)
        return None

    def transcript_event(self, entry: dict[str, Any]) -> AgentEvent | None:
        kind = entry.get("type")
        if kind not in ("user", "assistant"):
            return None
        text = content_text((entry.get("message") or {}).get("content"))
        if kind == "user" and text.startswith("[Request interrupted by user"):
            return AgentEvent("transcript.interrupted", entry_time(entry), {"text": text})
        return AgentEvent(f"transcript.{kind}", entry_time(entry), {"error": bool(entry.get("isApiErrorMessage"))})

    def turn_aborted(self, event: AgentEvent) -> bool:
        return event.event == "transcript.interrupted"

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
        tools: list[ToolCall] = []
        status: ResultStatus = "succeeded"
        texts: list[str] = []
        for entry in turn_entries(entries, prompt, end.payload.get("prompt_id")):
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
        if end.event == "StopFailure":
            status = "failed"
        return status, reply, list(hooked.values()) if hooked else tools


def turn_entries(entries: list[dict[str, Any]], prompt: str, prompt_id: object) -> list[dict[str, Any]]:
    """The transcript entries after this turn's prompt, or none when its prompt is not there.

    The hook wakes the engine within milliseconds, and Claude Code may not have written the
    turn's entries yet: the transcript then ends with earlier turns, whose API errors are not
    this one's. The hook's `prompt_id` is the prompt entry's `promptId` (exact, even when the
    same prompt is sent again); a transcript without promptIds (an older version) is matched
    on the prompt's text, the last such entry."""
    start: int | None = None
    if isinstance(prompt_id, str) and any("promptId" in e for e in entries):
        start = next(
            (i + 1 for i, e in enumerate(entries) if e.get("type") == "user" and e.get("promptId") == prompt_id), None
        )
        return entries[start:] if start is not None else []
    for index, entry in enumerate(entries):
        content = (entry.get("message") or {}).get("content") if entry.get("type") == "user" else None
        text = content if isinstance(content, str) else ""
        if isinstance(content, list):
            text = " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
        if text and normalize(text) == normalize(prompt):
            start = index + 1
    return entries[start:] if start is not None else []
