"""Requirements document → steps `{id, title, commands, depends_on, acceptance}`.

Two ways, one result shape:

* the AI client with `decomposition_reply.schema.json` (plus checks: unique ids, known
  dependencies, no cycles);
* a deterministic Markdown parser, used when AI is off or fails. Every heading whose own body
  has a fenced shell block (```bash, sh, shell, zsh, console) or a checklist (`- [ ] …`) is a
  step, in document order, with ids s1, s2, …. Each top-level shell command of a block is one
  command (continued lines, quotes, here-documents and if/for/while/case blocks stay whole;
  `$ ` prompts are dropped, and in `console` blocks lines without one are output). Checklist
  items are the acceptance criteria. A line `Depends on: …` (also `depends_on:`, `Requires:`,
  `After:`, `依赖：`) names earlier or later steps by number (`2`, `s2`, `Step 2`, `步骤 2`)
  or by title.

Prompt steps (for agent sessions): a fenced ```prompt block is one prompt (its text verbatim,
multi-line), and so is a `Prompt: …` line; a heading with prompts is a step of `kind: "prompt"`
whose `commands` are its prompts, in order (shell blocks beside them are ignored, with a
warning). A `Session: NAME` line (also `会话：`) sends the step to another configured session
than the plan's own. Steps without prompts or a session line have the shape they always had.
For the AI, a fleet with agent sessions gets a schema whose steps also say `session` and
`kind` (both nullable: the plan's session; by that session's kind).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.config import SessionConfig, load_schema
from orchestrator.payloads import StepSpec, WorkKind

DECOMPOSITION_SCHEMA = load_schema("decomposition_reply.schema.json")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE_OPEN = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
CHECKLIST = re.compile(r"^\s*[-*+]\s+\[[ xX]\]\s+(.*\S)\s*$")
DEPENDS = re.compile(
    r"^\s*(?:[-*+]\s+)?[*_]{0,2}(?:depends[ _]on|dependencies|requires|after|依赖|前置步骤)[*_]{0,2}"
    r"\s*[:：]\s*[*_]{0,2}\s*(.+?)\s*$",
    re.I,
)
PROMPT_LINE = re.compile(r"^\s*(?:[-*+]\s+)?[*_]{0,2}(?:prompt|提示词)[*_]{0,2}\s*[:：]\s*[*_]{0,2}\s*(.+?)\s*$", re.I)
SESSION_LINE = re.compile(
    r"^\s*(?:[-*+]\s+)?[*_]{0,2}(?:session|会话)[*_]{0,2}\s*[:：]\s*[*_]{0,2}\s*`?([^`\s*]+)`?[*_]{0,2}\s*$", re.I
)
PROMPT_LANGS = {"prompt"}
WORK_KINDS: tuple[WorkKind, ...] = ("command", "prompt")
NUMBERED = re.compile(r"^(?:step\s*(\d+)|(\d+)[.)、]|步骤\s*(\d+))\s*[:：.、)-]?\s*", re.I)
REFERENCE = re.compile(r"^(?:s|step\s*|步骤\s*)?-?\s*(\d+)$", re.I)
SHELL_LANGS = {"bash", "sh", "shell", "zsh", "console", "shell-session", "shellsession"}
PUNCTUATION = set(";&|\n")  # runs of these separate commands
OPENERS = {"if": "fi", "for": "done", "while": "done", "until": "done", "case": "esac", "{": "}"}
CLOSERS = {"fi", "done", "esac", "}"}
HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")


# shell blocks → commands --------------------------------------------------------------------
def _complete(text: str) -> bool:
    """Whether the accumulated lines form whole commands (no open quote, block or here-doc)."""
    if text.endswith("\\"):
        return False
    for match in HEREDOC.finditer(text):
        rest = text[match.end() :].split("\n")[1:]
        if not any(line.strip() == match.group(2) for line in rest):
            return False
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|\n")
        lexer.whitespace = " \t\r"  # a newline separates commands like ';'
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words = list(lexer)
    except ValueError:
        return False
    depth, at_start = 0, True
    for word in words:
        if (at_start or word == "{") and word in OPENERS:
            depth += 1
        elif (at_start or word == "}") and word in CLOSERS:
            depth -= 1
        at_start = set(word) <= PUNCTUATION or word in ("then", "do", "else", "elif", "{", "in")
    return depth <= 0


def split_commands(block: str, console: bool = False) -> list[str]:
    commands: list[str] = []
    lines: list[str] = []
    for raw in block.splitlines():
        line = raw.rstrip()
        if not lines:
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.startswith("$ "):
                line = stripped[2:]
            elif console:
                continue  # a console block's output line
        lines.append(line)
        text = "\n".join(lines)
        if _complete(text):
            commands.append(text.strip())
            lines = []
    if lines:
        commands.append("\n".join(lines).strip())
    return commands


# Markdown → steps --------------------------------------------------------------------------
@dataclass
class _Section:
    title: str
    number: int | None
    commands: list[str] = field(default_factory=list)
    acceptance: list[str] = field(default_factory=list)
    depends: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    session: str | None = None


def _heading(text: str) -> tuple[str, int | None]:
    match = NUMBERED.match(text)
    if not match:
        return text.strip(), None
    number = next(int(g) for g in match.groups() if g)
    return (text[match.end() :].strip() or text.strip()), number


def parse_markdown(text: str) -> tuple[list[StepSpec], list[str]]:
    """Steps and warnings (unresolved dependencies) from a Markdown plan."""
    sections: list[_Section] = []
    current: _Section | None = None
    fence: str | None = None
    lang = ""
    block: list[str] = []
    for line in text.splitlines():
        if fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                if current is not None and lang in SHELL_LANGS:
                    current.commands += split_commands("\n".join(block), console=lang == "console")
                elif current is not None and lang in PROMPT_LANGS and "\n".join(block).strip():
                    current.prompts.append("\n".join(block).strip())
                fence = None
            else:
                block.append(line)
            continue
        opened = FENCE_OPEN.match(line)
        heading = HEADING.match(line)
        if opened:
            fence, lang, block = opened.group(1), opened.group(2).lower(), []
        elif heading:
            current = _Section(*_heading(heading.group(2)))
            sections.append(current)
        elif current is not None and (item := CHECKLIST.match(line)):
            current.acceptance.append(item.group(1))
        elif current is not None and (said := PROMPT_LINE.match(line)):
            current.prompts.append(said.group(1))
        elif current is not None and (where := SESSION_LINE.match(line)):
            current.session = where.group(1)
        elif current is not None and (deps := DEPENDS.match(line)):
            current.depends += [
                d.strip(" `*_") for d in re.split(r"[,;，；、]|\band\b|和", deps.group(1)) if d.strip(" `*_")
            ]
    chosen = [s for s in sections if s.commands or s.prompts or s.acceptance]
    warnings: list[str] = []
    steps: list[StepSpec] = []
    for index, section in enumerate(chosen, start=1):
        depends: list[str] = []
        for ref in section.depends:
            target = _resolve(ref, chosen)
            if target is None or target == index:
                warnings.append(f"s{index}: dependency {ref!r} names no other step; ignored")
            elif f"s{target}" not in depends:
                depends.append(f"s{target}")
        step: StepSpec = {
            "id": f"s{index}",
            "title": section.title,
            "commands": section.prompts or section.commands,
            "depends_on": depends,
            "acceptance": section.acceptance,
        }
        if section.prompts:
            step["kind"] = "prompt"
            if section.commands:
                warnings.append(f"s{index}: has prompts and shell commands; the shell commands are ignored")
        if section.session:
            step["session"] = section.session
        steps.append(step)
    return steps, warnings


def _resolve(ref: str, sections: list[_Section]) -> int | None:
    """A dependency reference → the 1-based index of the step it names."""
    match = REFERENCE.match(ref.strip())
    if match:
        number = int(match.group(1))
        by_heading = [i for i, s in enumerate(sections, start=1) if s.number == number]
        if by_heading:
            return by_heading[0]
        return number if 1 <= number <= len(sections) else None
    wanted = ref.strip().lower()
    for exact in (True, False):
        for i, section in enumerate(sections, start=1):
            title = section.title.lower()
            if title == wanted or (not exact and wanted in title):
                return i
    return None


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
        json.dumps({k: v for k, v in schema.items() if not k.startswith("$")}, ensure_ascii=False),
    ]
    return "\n".join(parts)
