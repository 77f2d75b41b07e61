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


PROVIDERS: dict[str, type[ClaudeProvider] | type[CodexProvider]] = {"claude": ClaudeProvider, "codex": CodexProvider}
