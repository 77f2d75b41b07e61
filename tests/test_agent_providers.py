"""What each provider reads from the agent's own events and transcript, on payloads shaped as the
real agents write them (Claude Code 2.1.197 hooks and transcript, codex 0.171.0 notify and rollout;
see docs/agent-sessions.md). The scenarios run the real agents; these pin the rules."""

from __future__ import annotations

import json

from orchestrator.drivers.agent_events import AgentEvent
from orchestrator.drivers.claude_provider import ClaudeProvider
from orchestrator.drivers.codex_provider import CodexProvider

PROMPT = "Write the forecast module"


def ev(event: str, ts: float, **payload: object) -> AgentEvent:
    return AgentEvent(event, ts, dict(payload))


def user_message(text: str, ts: float) -> AgentEvent:
    return ev("rollout.message", ts, role="user", content=[{"type": "input_text", "text": text}])


def test_codex_an_earlier_turns_task_complete_never_starts_or_ends_a_later_turn() -> None:
    codex = CodexProvider()
    earlier = ev("rollout.task_complete", 10.0, turn_id="t1", last_agent_message="Scaffolded.")
    assert not codex.turn_started(earlier, PROMPT)  # read after the next prompt was delivered
    assert codex.turn_started(user_message(PROMPT, 11.0), PROMPT)
    assert codex.turn_ended(ev("rollout.task_complete", 12.0, turn_id="t2"), PROMPT)


def test_codex_a_failed_turn_ends_failed_with_codexs_error() -> None:
    end = ev("rollout.task_complete", 12.0, turn_id="t2", last_agent_message=None, error={"message": "boom"})
    status, reply, _ = CodexProvider().result(end, PROMPT, {"CODEX_HOME": "/nonexistent"}, [])
    assert (status, reply) == ("failed", "boom")


def test_codex_an_escalated_call_waits_for_approval_until_its_output() -> None:
    codex = CodexProvider()
    args = {"cmd": "touch a.txt", "sandbox_permissions": "require_escalated", "justification": "make it"}
    call = ev("rollout.function_call", 1.0, name="exec_command", arguments=json.dumps(args), call_id="call_1")
    request = codex.approval([call])
    assert request is not None and (request.key, request.command, request.detail) == (
        "call_1",
        "touch a.txt",
        "make it",
    )
    assert codex.approval([call, ev("rollout.function_call_output", 2.0, call_id="call_1")]) is None
    assert codex.approval([call, ev("rollout.turn_aborted", 2.0)]) is None
    plain = ev("rollout.function_call", 1.0, name="exec_command", arguments=json.dumps({"cmd": "ls"}), call_id="c2")
    assert codex.approval([plain]) is None  # runs in the sandbox without asking


def test_claude_permission_request_is_an_approval_and_ask_user_question_a_question() -> None:
    claude = ClaudeProvider()
    bash = {"command": "touch a.txt", "description": "make it"}
    turn = [
        ev("PreToolUse", 1.0, tool_name="Bash", tool_input=bash, tool_use_id="toolu_1"),
        ev("PermissionRequest", 1.3, tool_name="Bash", tool_input=bash),
    ]
    request = claude.approval(turn)
    assert request is not None and (request.key, request.tool, request.command) == ("toolu_1", "Bash", "touch a.txt")
    assert claude.question(turn) is None
    assert claude.approval([*turn, ev("PostToolUse", 2.0, tool_use_id="toolu_1")]) is None
    ask = {"questions": [{"question": "Which city?", "options": [{"label": "Berlin"}, {"label": "Lisbon"}]}]}
    asking = [
        ev("PreToolUse", 3.0, tool_name="AskUserQuestion", tool_input=ask, tool_use_id="toolu_2"),
        ev("PermissionRequest", 3.5, tool_name="AskUserQuestion", tool_input=ask),
    ]
    question = claude.question(asking)
    assert claude.approval(asking) is None and question is not None
    assert question.for_person() == "Which city? 1. Berlin / 2. Lisbon"
    assert claude.reply_actions(question, "lisbon") == [("key", "2")]
    assert claude.reply_actions(question, "1") == [("key", "1")]
    assert claude.reply_actions(question, "Porto, please") == [
        ("key", "3"),
        ("text", "Porto, please"),
        ("key", "Enter"),
    ]


def test_claude_a_late_hook_of_the_turns_own_prompt_does_not_answer_its_question() -> None:
    """Each hook is its own process: on a loaded machine the turn's UserPromptSubmit line can land
    after the question's PermissionRequest. It starts the turn, it answers nothing; a second
    prompt (a person's follow-up) does."""
    claude = ClaudeProvider()
    ask = {"questions": [{"question": "Which city?", "options": [{"label": "Berlin"}, {"label": "Lisbon"}]}]}
    late = [
        ev("PreToolUse", 3.0, tool_name="AskUserQuestion", tool_input=ask, tool_use_id="toolu_2"),
        ev("PermissionRequest", 3.5, tool_name="AskUserQuestion", tool_input=ask),
        ev("UserPromptSubmit", 3.6, prompt=PROMPT),
    ]
    assert claude.question(late) is not None
    assert claude.question([*late, ev("UserPromptSubmit", 9.0, prompt="never mind, use Berlin")]) is None


def test_claude_stop_failure_ends_the_turn_failed() -> None:
    claude = ClaudeProvider()
    end = ev("StopFailure", 5.0, error="server_error", last_assistant_message="API Error: 500 Internal server error.")
    assert claude.turn_ended(end, PROMPT)
    status, reply, tools = claude.result(end, PROMPT, {}, [])
    assert (status, reply, tools) == ("failed", "API Error: 500 Internal server error.", [])


def test_claude_an_interrupt_in_the_transcript_aborts_the_turn() -> None:
    claude = ClaudeProvider()
    entry = {
        "type": "user",
        "timestamp": "2026-12-01T12:00:00.000Z",
        "message": {"content": [{"type": "text", "text": "[Request interrupted by user]"}]},
    }
    event = claude.transcript_event(entry)
    assert event is not None and claude.turn_aborted(event)
    assert event.ts == 1796126400.0


def transcript_line(kind: str, text: str, prompt_id: str | None = None, error: bool = False) -> dict[str, object]:
    """One user or assistant entry as Claude Code 2.1.197 writes it to the session's transcript."""
    entry: dict[str, object] = {"type": kind, "timestamp": "2026-12-01T12:00:00.000Z"}
    entry["message"] = {"role": kind, "content": text if kind == "user" else [{"type": "text", "text": text}]}
    if prompt_id:
        entry["promptId"] = prompt_id
    if error:
        entry.update(isApiErrorMessage=True, error="unknown", apiErrorStatus=400)
    return entry


def claude_turn_result(tmp_path, entries, prompt_id: str, prompt: str = PROMPT):  # type: ignore[no-untyped-def]
    transcript = tmp_path / "session.jsonl"
    transcript.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    end = ev("Stop", 9.0, prompt_id=prompt_id, transcript_path=str(transcript), last_assistant_message="Sunny.")
    return ClaudeProvider().result(end, prompt, {}, [])


def test_claude_a_stop_read_before_the_transcript_holds_its_prompt_ignores_earlier_turns(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The Stop hook wakes the engine in a millisecond, before Claude Code may have written this
    turn's entries: the transcript then ends with the previous turn, an API error. That error is
    not this turn's: a Stop (not a StopFailure) whose prompt is not in the transcript yet is the
    hook's word alone (succeeded, its reply)."""
    earlier = [
        transcript_line("user", "forecast attempt 2", "p-2"),
        transcript_line("assistant", "API Error: 400", error=True),
    ]
    assert claude_turn_result(tmp_path, earlier, "p-3", "say you are back")[:2] == ("succeeded", "Sunny.")


def test_claude_the_same_prompt_sent_again_is_told_apart_by_its_prompt_id(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A failed prompt sent again has the same text: only the hook's prompt_id (the transcript's
    promptId) says which entry starts this turn, so the first attempt's error is not this one's."""
    first = [transcript_line("user", PROMPT, "p-1"), transcript_line("assistant", "API Error: 400", error=True)]
    assert claude_turn_result(tmp_path, first, "p-2")[0] == "succeeded"  # p-2 not written yet
    again = [*first, transcript_line("user", PROMPT, "p-2"), transcript_line("assistant", "Sunny.")]
    assert claude_turn_result(tmp_path, again, "p-2")[:2] == ("succeeded", "Sunny.")
    failed_again = [
        *first,
        transcript_line("user", PROMPT, "p-2"),
        transcript_line("assistant", "API Error", error=True),
    ]
    assert claude_turn_result(tmp_path, failed_again, "p-2")[0] == "failed"
