"""Requirements document → steps `{id, title, commands, depends_on, acceptance}`.

Two ways, one result shape:

* the AI client with `decomposition_reply.schema.json` (plus checks: unique ids, known
  dependencies, no cycles): `build_prompt`, `decomposition_schema`, `reply_check` here;
* a deterministic Markdown parser, used when AI is off or fails: `plan_markdown.parse_markdown`
  (CommonMark; its docstring has the rules).

`check_steps` and `execution_order` hold for steps from either. For the AI, a fleet with agent
sessions gets a schema whose steps also say `session` and `kind` (both nullable: the plan's
session; by that session's kind). The prompt carries the schema as JSON — the same object the
codex backend writes to `--output-schema` (`ai_client.wire_schema`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orchestrator.adapters.ai_client import wire_schema
from orchestrator.config import SessionConfig
from orchestrator.payloads import WorkKind
from orchestrator.schema import load_schema

DECOMPOSITION_SCHEMA = load_schema("decomposition_reply.schema.json")
WORK_KINDS: tuple[WorkKind, ...] = ("command", "prompt")


# checks for any source -----------------------------------------------------------------------
def check_steps(steps: Sequence[Mapping[str, Any]], sessions: Sequence[str] | None = None) -> None:
    """Unique ids, known dependencies, no cycles, at least one step, a known kind, and (when
    `sessions` is given) only those session names; ValueError otherwise."""
    if not steps:
        raise ValueError("steps: empty")
    for step in steps:
        if step.get("kind") not in (None, *WORK_KINDS):
            raise ValueError(f"step {step.get('id')}: kind must be command or prompt, not {step.get('kind')!r}")
        named = step.get("session")
        if named is not None and (not isinstance(named, str) or (sessions is not None and named not in sessions)):
            raise ValueError(f"step {step.get('id')}: session {named!r} is not one of {list(sessions or [])}")
    ids = [s["id"] for s in steps]
    if len(set(ids)) != len(ids) or not all(isinstance(i, str) and i.strip() for i in ids):
        raise ValueError("steps: ids must be unique and non-empty")
    for step in steps:
        unknown = [d for d in step["depends_on"] if d not in ids or d == step["id"]]
        if unknown:
            raise ValueError(f"step {step['id']}: depends_on names unknown steps {unknown}")
    if len(execution_order(steps)) != len(steps):
        raise ValueError("steps: dependency cycle")


def check_reply(data: Mapping[str, Any]) -> None:
    check_steps(data.get("steps", []))


def reply_check(sessions: Sequence[str]) -> Callable[[Mapping[str, Any]], None]:
    """`check_reply` that also allows only these session names."""
    return lambda data: check_steps(data.get("steps", []), sessions)


def decomposition_schema(agents: bool) -> dict[str, Any]:
    """The reply schema: as shipped, or for a fleet with agent sessions with each step's
    `session` and `kind` too (required and nullable, so it stays strict-mode compatible)."""
    if not agents:
        return DECOMPOSITION_SCHEMA
    schema = copy.deepcopy(DECOMPOSITION_SCHEMA)
    item = schema["properties"]["steps"]["items"]
    item["properties"]["session"] = {"type": ["string", "null"]}
    item["properties"]["kind"] = {"type": ["string", "null"], "enum": ["command", "prompt", None]}
    item["required"] = [*item["required"], "session", "kind"]
    return schema


def execution_order(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    """Dependency order, document order among the ready ones (steps in a cycle are left out)."""
    done: list[str] = []
    pending = list(steps)
    while pending:
        ready = next((s for s in pending if all(d in done for d in s["depends_on"])), None)
        if ready is None:
            break
        done.append(ready["id"])
        pending.remove(ready)
    return done


def build_prompt(path: str, text: str, sessions: Sequence[SessionConfig] = (), owner: str | None = None) -> str:
    """The question for the AI; with agent sessions among `sessions` it also asks each step's
    `session` and `kind` (prompt steps for agents)."""
    agents = any(s.kind == "agent" for s in sessions)
    schema = decomposition_schema(agents)
    parts = [
        "You turn a requirements document into an executable plan for an AI coding agent's shell.",
        f"Document `{path}`:",
        "<<<DOCUMENT",
        text,
        "DOCUMENT>>>",
        "Break it into ordered steps. Each step: a short unique `id` (s1, s2, …), a `title`, the shell "
        "`commands` to run in order (each one complete; empty when a person must act), `depends_on` (ids of "
        "steps that must succeed first) and `acceptance` (checks that show the step is done). Keep the "
        "document's own commands verbatim; do not invent destructive ones.",
    ]
    if agents:
        fleet = "; ".join(
            f"`{s.name}` ({'agent ' + (s.provider or 'claude') if s.kind == 'agent' else 'shell'})" for s in sessions
        )
        parts.append(
            f"The sessions are: {fleet}; this plan belongs to `{owner}`. A step also says `session` (one of those "
            "names, or null for the plan's own session) and `kind`: `command` when its `commands` are shell "
            "commands for a shell session, `prompt` when they are prompts (plain-language instructions, one per "
            "turn) for an agent session, or null to follow the session's kind. Keep the document's own prompts "
            "verbatim."
        )
    parts += [
        "Reply with ONLY one JSON object matching this JSON Schema, no prose and no code fences:",
        json.dumps(wire_schema(schema), ensure_ascii=False),
    ]
    return "\n".join(parts)
