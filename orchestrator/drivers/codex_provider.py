"""codex as a provider: the `notify` program (`-c notify=[…]`) gets `{"type":
"agent-turn-complete", "thread-id", "turn-id", "input-messages", "last-assistant-message"}` —
also for its own title task, which is told apart by its input; the rollout JSONL under
`CODEX_HOME/sessions/**/rollout-*-<thread-id>.jsonl` holds the turn's `function_call` items.
Verified against codex-cli 0.171.0 (see docs/agent-sessions.md).
"""

from __future__ import annotations

import hashlib
import json
import re
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

CODEX_FOOTER = re.compile(r"^\s*\S+.* · ")


APPROVAL_HEADING = "Would you like to run the following command?"


class CodexProvider:
    name = "codex"
    approve_keys: tuple[str, ...] = ("y",)  # "1. Yes, proceed (y)"
    deny_keys: tuple[str, ...] = ("Escape",)  # "3. No, and tell Codex what to do differently (esc)"
    approvals_reported: bool = False

    def __init__(self) -> None:
        self._rollouts: dict[str, Path] = {}  # thread id → its rollout file, found once
        self._live: Path | None = None  # this TUI session's rollout, once transcript_path found it

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
        """The rollout records the prompt as the turn's user message when the turn begins (the
        notify program only at its end: the fallback when the rollout is not found)."""
        if event.event == "rollout.message" and event.payload.get("role") == "user":
            return normalize(content_text(event.payload.get("content"))) == normalize(prompt)
        return event.event == "notify" and self.turn_ended(event, prompt)  # a task_complete names no prompt

    def turn_ended(self, event: AgentEvent, prompt: str) -> bool:
        """The notify program's `agent-turn-complete` for this prompt, or the rollout's
        `task_complete` (the only end a failed turn has: codex notifies successes only)."""
        if event.event == "rollout.task_complete":
            return True
        if event.event != "notify" or event.payload.get("type") != "agent-turn-complete":
            return False
        messages = event.payload.get("input-messages")
        return isinstance(messages, list) and bool(messages) and normalize(str(messages[-1])) == normalize(prompt)

    def idle_event(self, event: AgentEvent) -> bool:
        return event.event == "notify"

    def reply_on_screen(self, screen: Sequence[str]) -> str:
        return last_block(screen, "• ", ("›",))

    def approval(self, turn: Sequence[AgentEvent]) -> ApprovalRequest | None:
        """From the rollout (codex's notify program reports turn ends only): a shell call that
        asked to run outside the sandbox (`sandbox_permissions: require_escalated` — the calls
        codex asks about under `on-request`) and has no output yet."""
        pending: ApprovalRequest | None = None
        for event in turn:
            payload = event.payload
            if event.event == "rollout.function_call":
                try:
                    arguments = json.loads(payload.get("arguments") or "{}")
                except ValueError:
                    continue
                if isinstance(arguments, dict) and arguments.get("sandbox_permissions") == "require_escalated":
                    name = str(payload.get("name") or "exec_command")
                    command = tool_call(name, arguments).get("command", "")
                    why = str(arguments.get("justification") or "")
                    pending = ApprovalRequest(str(payload.get("call_id")), name, command, why, "rollout")
            elif event.event == "rollout.function_call_output" and pending and payload.get("call_id") == pending.key:
                pending = None
            elif event.event in ("rollout.turn_aborted", "rollout.task_complete"):
                pending = None
        return pending

    def approval_on_screen(self, screen: Sequence[str]) -> ApprovalRequest | None:
        """The approval prompt (fallback: no codex event reports it): the heading, a `Reason:`
        line, and the command on a `$ ` line."""
        lines = [line.strip() for line in screen]
        try:
            start = max(i for i, line in enumerate(lines) if line == APPROVAL_HEADING)
        except ValueError:
            return None
        reason, command = "", ""
        for line in lines[start + 1 : start + 12]:
            if line.startswith("Reason:"):
                reason = line[len("Reason:") :].strip()
            elif line.startswith("$ ") and not command:
                command = line[2:].strip()
        if not any("Press enter to confirm" in line for line in lines[start:]):
            return None
        key = "screen-" + hashlib.sha1(f"{command}\0{reason}".encode()).hexdigest()[:12]
        return ApprovalRequest(key, "exec_command", command, reason, "screen")

    def dialog_drawn(self, screen: Sequence[str]) -> bool:
        return any(line.strip() == APPROVAL_HEADING for line in screen) and any(
            "Press enter to confirm" in line for line in screen
        )

    def transcript_path(
        self, events: Sequence[AgentEvent], env: dict[str, str], workdir: Path, since: float
    ) -> Path | None:
        """The rollout codex opened for this TUI session: the newest under `CODEX_HOME/sessions`
        written since the launch whose `session_meta` names this workdir."""
        sessions = self._home(env) / "sessions"
        try:
            candidates = sorted(
                (p for p in sessions.glob("*/*/*/rollout-*.jsonl") if p.stat().st_mtime >= since - 2),
                key=lambda p: p.stat().st_mtime,
                reverse=True,
            )
        except OSError:
            return None
        for path in candidates:
            try:
                with path.open(encoding="utf-8", errors="replace") as fh:
                    meta = json.loads(fh.readline() or "{}")
            except (OSError, ValueError):
                continue
            cwd = (meta.get("payload") or {}).get("cwd") if isinstance(meta, dict) else None
            if isinstance(cwd, str) and Path(cwd).resolve() == workdir.resolve():
                self._live = path
                return path
        return None

    def transcript_event(self, entry: dict[str, Any]) -> AgentEvent | None:
        payload = entry.get("payload")
        if entry.get("type") not in ("response_item", "event_msg") or not isinstance(payload, dict):
            return None
        return AgentEvent(f"rollout.{payload.get('type')}", entry_time(entry), payload)

    def turn_aborted(self, event: AgentEvent) -> bool:
        return event.event == "rollout.turn_aborted"

    def question(self, turn: Sequence[AgentEvent]) -> AgentQuestion | None:
        return None

    def reply_actions(self, question: AgentQuestion, text: str) -> list[ReplyAction]:
        return [("text", text), ("key", "Enter")]

    def _home(self, env: dict[str, str]) -> Path:
        return Path(env.get("CODEX_HOME") or Path(env.get("HOME") or Path.home()) / ".codex")

    def result(
        self, end: AgentEvent, prompt: str, env: dict[str, str], turn: Sequence[AgentEvent]
    ) -> tuple[ResultStatus, str, list[ToolCall]]:
        reply = end.payload.get("last-assistant-message", end.payload.get("last_agent_message"))
        thread, turn_id = end.payload.get("thread-id"), end.payload.get("turn-id", end.payload.get("turn_id"))
        home = self._home(env)
        tools: list[ToolCall] = []
        status: ResultStatus = "succeeded"
        error = end.payload.get("error")
        if isinstance(error, dict):  # the rollout's task_complete of a turn that ended in an error
            status, reply = "failed", str(error.get("message") or "codex reported an error")
        files: list[Path] = [self._live] if thread is None and self._live is not None else []
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
