"""What to do next about a blocked session: the prompt for the AI, and the rule-based advisor
used when AI is off or fails.

Recommendations have the shape `{id, title, detail, command?, priority, risk}`; the id is a
short hash of title and command, so the same suggestion keeps its id across decisions and
`tmux-agent approve SESSION ID` can name it.

For an agent session (`kind: agent`) a recommendation's `command` is the next **prompt** to the
agent, not a shell command: the AI is told so, and the rules suggest prompts (a rule's shell
check becomes a prompt asking the agent to run it; a failed turn's prompt can be sent again).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.payloads import PRIORITIES as PRIORITIES  # re-exported: most urgent last
from orchestrator.payloads import Advice, Priority, Risk, as_priority, as_risk
from orchestrator.redact import redact
from orchestrator.schema import load_schema

DECISION_SCHEMA = load_schema("decision_reply.schema.json")
KEY_NAME = re.compile(r"\b([A-Z][A-Z0-9_]*(?:API_KEY|TOKEN|SECRET|_KEY))\b")
STREAK_PREFIX = "failure streak:"
PLAN_PREFIX = "plan step "
TURN_FAILED_PREFIX = "agent turn failed:"
AGENT_REPORT_PREFIX = "agent reported:"
AGENT_PREFIXES = (TURN_FAILED_PREFIX, AGENT_REPORT_PREFIX)
"""Blockers an agent's turn put there; the next turn that ends without them takes them away."""


def recommendation_id(title: str, command: str | None) -> str:
    return hashlib.sha1(f"{title}\n{command or ''}".encode()).hexdigest()[:6]


def normalize(items: Iterable[Mapping[str, Any]]) -> list[Advice]:
    """Clean, de-duplicated recommendations, most urgent first (stable within a priority)."""
    out: list[Advice] = []
    seen: set[str] = set()
    for item in items:
        title = " ".join(str(item.get("title") or "").split())[:200]
        if not title:
            continue
        command = (item.get("command") or "").strip() or None
        rec: Advice = {
            "id": recommendation_id(title, command),
            "title": title,
            "detail": str(item.get("detail") or "").strip()[:2000],
            "priority": as_priority(item.get("priority")) or "medium",
            "risk": as_risk(item.get("risk")) or "medium",
        }
        if command:
            rec["command"] = command
        if rec["id"] not in seen:
            seen.add(rec["id"])
            out.append(rec)
    return sorted(out, key=lambda r: -PRIORITIES.index(r["priority"]))


def check_reply(data: Mapping[str, Any]) -> None:
    """Beyond the schema: at least one recommendation with a title."""
    if not any(str(r.get("title") or "").strip() for r in data.get("recommendations", [])):
        raise ValueError("recommendations: none with a title")


def build_prompt(session: str, blockers: list[str], metadata: Mapping[str, Any], provider: str | None = None) -> str:
    """The question for the AI; `provider` set means an agent session (Claude Code, codex):
    then `command` is the next prompt to the agent."""
    last = metadata.get("last_command_result") or {}
    parts = [
        "You are the decision assistant of tmuxagent, which supervises AI coding agents running in tmux panes.",
        f"The agent session `{session}` is blocked. Blockers:",
        *[f"- {b}" for b in blockers],
    ]
    if provider is not None and last:
        tools = [
            f"{t.get('name')}: {t.get('command')}" if t.get("command") else str(t.get("name"))
            for t in last.get("tools") or []
            if isinstance(t, dict)
        ]
        parts += [
            f"The session runs the coding agent `{provider}`; its work is prompts. "
            f"Last prompt: {json.dumps(str(last.get('command')), ensure_ascii=False)} -> {last.get('status')}.",
            "The agent's reply:",
            "```",
            str(last.get("reply") or last.get("output_tail") or "(none)"),
            "```",
        ]
        if tools:
            parts.append(f"Tools it called: {'; '.join(tools)}")
    elif last:
        parts += [
            f"Last command: `{last.get('command')}` -> {last.get('status')} (exit {last.get('exit_code')}).",
            "Its output tail:",
            "```",
            str(last.get("output_tail") or "(none)"),
            "```",
        ]
    plan = metadata.get("task_decomposition")
    if isinstance(plan, dict) and plan.get("steps"):
        steps = "; ".join(f"{s.get('id')} {s.get('title')!r} {s.get('status')}" for s in plan["steps"])
        parts.append(f"Plan from {plan.get('source')}: {steps}")
    what = (
        f"`command` is the next prompt to send to the {provider} agent in that session (plain words, as a person "
        "would type it to the agent; not a shell command), or null when a person must act."
        if provider is not None
        else "`command` is one shell command to type into the session's pane, or null when a person must act."
    )
    parts += [
        f"Recommend what to do next, most urgent first. {what} Never suggest destructive commands (rm -rf, force "
        'pushes, piping downloads into a shell). Use risk "high" for anything that deletes data, pushes, '
        "deploys or needs sudo. Priority is low, medium, high or critical.",
        "Reply with ONLY one JSON object matching this JSON Schema, no prose and no code fences:",
        json.dumps({k: v for k, v in DECISION_SCHEMA.items() if not k.startswith("$")}, ensure_ascii=False),
    ]
    return redact("\n".join(parts))


AdviceTemplate = tuple[str, str, str | None, Priority, Risk]
"""title, detail, command, priority, risk; `{key}`, `{session}`, `{blocker}` … are filled in."""


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    advice: tuple[AdviceTemplate, ...]
    agent_advice: tuple[AdviceTemplate, ...] | None = None
    """For agent sessions (commands are prompts); None: `advice` with its shell commands turned into prompts."""


def _rule(pattern: str, *advice: AdviceTemplate, agent: tuple[AdviceTemplate, ...] | None = None) -> Rule:
    return Rule(re.compile(pattern, re.I), advice, agent)


LAST_PROMPT = "{last_prompt}"
"""A rule's command that stands for the last turn's prompt, sent again as it was."""

AGENT_RULES: tuple[Rule, ...] = (
    _rule(
        r"^" + re.escape(TURN_FAILED_PREFIX),
        agent=(
            (
                "Read the agent's error",
                "The agent's last turn ended in an error (the model API answered with an error, or the agent "
                "reported one): see the reply in `tmux-agent status {session}` and the agent's pane; check the model "
                "account, its base URL, the proxy and the request limits.",
                None,
                "high",
                "low",
            ),
            (
                "Send the prompt again",
                "Once the cause is fixed, send the failed turn's prompt to the agent again.",
                LAST_PROMPT,
                "medium",
                "low",
            ),
        ),
    ),
)
"""Rules only agent sessions have, tried before RULES."""

RULES: tuple[Rule, ...] = (
    _rule(
        r"^" + re.escape(STREAK_PREFIX),
        (
            "Read the failing command's output",
            "The session is blocked after consecutive failures; see "
            "`tmux-agent status {session}` for last_command_result and its output tail.",
            None,
            "high",
            "low",
        ),
        (
            "Unblock the session once the cause is fixed",
            "Run `tmux-agent unblock {session}`; queued commands then continue in order.",
            None,
            "medium",
            "low",
        ),
    ),
    _rule(
        r"^" + re.escape(PLAN_PREFIX),
        (
            "Fix the failed plan step",
            "Correct the step's commands (or what they need) in the requirements "
            "document; when its content changes the plan is decomposed again and resumes, keeping the steps "
            "that already succeeded.",
            None,
            "high",
            "low",
        ),
    ),
    _rule(
        r"api[ _-]?key|[a-z0-9]_(?:key|token|secret)\b|access token|credential|\b401\b|unauthori[sz]ed|"
        r"authenticationerror|密钥",
        (
            "Provide {key}",
            "Add `{key}=...` to the env file (~/.env; the orchestrator re-reads it) or export it "
            "in the agent's shell, then re-run the failed command.",
            None,
            "high",
            "low",
        ),
        (
            "Check that {key} is visible to the agent",
            "Prints only whether the variable is set, never its value.",
            'test -n "${key_var}" && echo "{key} is set" || echo "{key} is missing"',
            "medium",
            "low",
        ),
        agent=(
            (
                "Provide {key}",
                "Make `{key}` available to the agent: the session's `env` in agent-config.yaml (the agent "
                "gets it when it is launched), the env file or the environment it was started from.",
                None,
                "high",
                "low",
            ),
            (
                "Tell the agent to continue once {key} is set",
                "After {key} is provided, send the agent this prompt.",
                "{key} has been provided. Check that it is set without printing its value, then continue "
                "the task where you stopped.",
                "medium",
                "low",
            ),
        ),
    ),
    _rule(
        r"command not found|no such file or directory|not installed|no module named|modulenotfounderror",
        (
            "Install the missing tool or module",
            "A program or module the command needs is missing in the pane's environment (PATH, virtualenv).",
            None,
            "high",
            "medium",
        ),
    ),
    _rule(
        r"connection (?:refused|reset)|timed? ?out|could not resolve|unreachable|proxy|ssl|tls",
        (
            "Check the network and proxy settings",
            "The command could not reach a server; check HTTP(S)_PROXY / "
            "NO_PROXY in the env file and that the service is up.",
            None,
            "medium",
            "low",
        ),
    ),
    _rule(
        r"permission denied|eacces|operation not permitted",
        (
            "Fix the file permissions",
            "The agent's user cannot read or write a path the command needs.",
            None,
            "medium",
            "medium",
        ),
    ),
    _rule(
        r"\bfail(?:ed|ure)?\b|error|assert",
        (
            "Re-run the failing command and read its output",
            "Reproduce the failure in the pane to see the full error before changing anything.",
            None,
            "medium",
            "low",
        ),
    ),
)
FALLBACK: AdviceTemplate = (
    "Investigate “{short}”",
    "No rule matches “{blocker}”; look at the pane and resolve it by hand, "
    "then clear `blockers` with `tmux-agent meta set {session} blockers '[]'`.",
    None,
    "medium",
    "low",
)
AGENT_FALLBACK: tuple[AdviceTemplate, ...] = (
    FALLBACK,
    (
        "Ask the agent what it needs",
        "A prompt asking the agent to say what is missing, or to go on safely without it.",
        "You reported: “{short}”. Say exactly what you need to continue, or continue with a safe "
        "workaround if there is one.",
        "low",
        "low",
    ),
)


def fill(command: str | None, values: Mapping[str, str], last_prompt: str | None) -> str | None:
    """A rule's command filled in; the last prompt is taken verbatim (a prompt may hold braces)."""
    if command == LAST_PROMPT:
        return last_prompt
    return command.format(**values) if command else None


def as_prompt(command: str) -> str:
    """A rule's shell command, for an agent session: a prompt asking the agent to run it."""
    return f"Run this shell command and tell me what it prints: `{command}`"


class RuleAdvisor:
    """Deterministic advice from patterns in the blockers; always has an answer.

    For an agent session (`agent=True`) the suggestions are prompts: agent rules first, each
    rule's agent advice, else its shell commands as prompts; `last_prompt` (the last turn's
    prompt) is what "send the prompt again" sends."""

    def advise(
        self, session: str, blockers: list[str], *, agent: bool = False, last_prompt: str | None = None
    ) -> tuple[str, list[Advice]]:
        items: list[dict[str, Any]] = []
        rules = (*AGENT_RULES, *RULES) if agent else RULES
        for blocker in blockers:
            matched = [rule for rule in rules if rule.pattern.search(blocker)]
            advice: tuple[AdviceTemplate, ...]
            if not matched:
                advice = AGENT_FALLBACK if agent else (FALLBACK,)
            elif agent and matched[0].agent_advice is not None:
                advice = matched[0].agent_advice
            elif agent:
                advice = tuple((t, d, as_prompt(c) if c else None, p, r) for t, d, c, p, r in matched[0].advice)
            else:
                advice = matched[0].advice
            found = KEY_NAME.search(blocker)
            key = found.group(1) if found else "OPENAI_API_KEY"
            short = blocker.split(":", 1)[1].strip() if agent and blocker.startswith(AGENT_PREFIXES) else blocker
            values = {
                "key": key,
                "key_var": "{" + key + "}",
                "session": session,
                "blocker": blocker[:300],
                "short": short[:60],
            }
            for title, detail, command, priority, risk in advice:
                if command == LAST_PROMPT and not last_prompt:
                    continue  # nothing to send again
                items.append(
                    {
                        "title": title.format(**values),
                        "detail": detail.format(**values),
                        "command": fill(command, values, last_prompt),
                        "priority": priority,
                        "risk": risk,
                    }
                )
        summary = f"rule-based advice for {len(blockers)} blocker(s)"
        return summary, normalize(items)
