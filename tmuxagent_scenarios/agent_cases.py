"""What the scenarios' agent cases share: the providers they run on, a shell tool call in each
agent's own shape, and scripting a reply to the provider's API of the scripted model server.

The `agent_under_test` fixture (conftest.py) starts an orchestrator supervising one real agent
session; these helpers say what its model answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_tmuxagent.model_server import ModelServer, tool_call
from pytest_tmuxagent.model_server.replies import Message, ModelReply

PROVIDERS = ["claude", "codex"]
SHELL_TOOL = {"claude": "Bash", "codex": "exec_command"}
TURN_TIMEOUT = 60.0


def shell_call(provider: str, command: str, *, escalate: bool = False, why: str = "look around") -> Message:
    """The model asks the agent to run `command` with its shell tool. `escalate`: codex asks
    for it outside its sandbox (the only way codex shows an approval prompt); Claude Code asks
    on its own for any command that writes."""
    if provider == "claude":
        return tool_call("Bash", {"command": command, "description": why})
    arguments: dict[str, Any] = {"cmd": command}
    if escalate:
        arguments.update(sandbox_permissions="require_escalated", justification=why)
    return tool_call("exec_command", arguments)


def script(model_server: ModelServer, provider: str, *replies: ModelReply, prompt: str | None = None) -> None:
    """Queue replies on the API this provider speaks (Anthropic for claude, Responses for codex).
    `prompt`: only for requests whose latest user text is that prompt, so a request the agent
    makes on its own between turns can never take a reply meant for a turn."""
    when = (lambda request: request.last_user_text() == prompt) if prompt is not None else None
    (model_server.anthropic if provider == "claude" else model_server.openai).script(*replies, when=when)


def model_requests(model_server: ModelServer, provider: str) -> list[tuple[str, str | None, str | None]]:
    """What the model was asked and how it answered (kind, last user text, reply): a failing
    turn's evidence."""
    api = model_server.anthropic if provider == "claude" else model_server.openai
    return [(r.kind, r.last_user_text(), r.reply) for r in api.requests()]


def approve_and_finish(service, session: str, command_id: int, made: Path, reply: str, tool_command: str) -> None:  # type: ignore[no-untyped-def]
    """A person approves the escalated tool request: the turn ends succeeded, the tool's file
    exists, the reply is the model's, and the result records one approval by a person, with the
    time the agent waited for it."""
    service.cli("approve", session)
    row = service.wait_result(command_id, timeout=TURN_TIMEOUT)
    assert row.status == "succeeded" and made.exists()
    last = service.metadata(session)["last_command_result"]
    assert last["reply"] == reply
    [record] = last["approvals"]
    assert (record["decision"], record["by"], record["command"]) == ("approved", "person", tool_command)
    assert record["waited_s"] >= 3
