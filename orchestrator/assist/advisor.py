"""What to do next about a blocked session: the prompt for the AI, and the rule-based advisor
used when AI is off or fails.

Recommendations have the shape `{id, title, detail, command?, priority, risk}`; the id is a
short hash of title and command, so the same suggestion keeps its id across decisions and
`tmux-agent approve SESSION ID` can name it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.config import load_schema
from orchestrator.payloads import PRIORITIES as PRIORITIES  # re-exported: most urgent last
from orchestrator.payloads import Advice, Priority, Risk, as_priority, as_risk
from orchestrator.redact import redact

DECISION_SCHEMA = load_schema("decision_reply.schema.json")
KEY_NAME = re.compile(r"\b([A-Z][A-Z0-9_]*(?:API_KEY|TOKEN|SECRET|_KEY))\b")
STREAK_PREFIX = "failure streak:"
PLAN_PREFIX = "plan step "


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


def build_prompt(session: str, blockers: list[str], metadata: Mapping[str, Any]) -> str:
    last = metadata.get("last_command_result") or {}
    parts = [
        "You are the decision assistant of tmuxagent, which supervises AI coding agents running in tmux panes.",
        f"The agent session `{session}` is blocked. Blockers:",
        *[f"- {b}" for b in blockers],
    ]
    if last:
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
    parts += [
        "Recommend what to do next, most urgent first. `command` is one shell command to type into the "
        "session's pane, or null when a person must act. Never suggest destructive commands (rm -rf, force "
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


def _rule(pattern: str, *advice: AdviceTemplate) -> Rule:
    return Rule(re.compile(pattern, re.I), advice)


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


class RuleAdvisor:
    """Deterministic advice from patterns in the blockers; always has an answer."""

    def advise(self, session: str, blockers: list[str]) -> tuple[str, list[Advice]]:
        items: list[dict[str, Any]] = []
        for blocker in blockers:
            matched = [rule for rule in RULES if rule.pattern.search(blocker)]
            advice = matched[0].advice if matched else (FALLBACK,)
            found = KEY_NAME.search(blocker)
            key = found.group(1) if found else "OPENAI_API_KEY"
            values = {
                "key": key,
                "key_var": "{" + key + "}",
                "session": session,
                "blocker": blocker[:300],
                "short": blocker[:60],
            }
            for title, detail, command, priority, risk in advice:
                items.append(
                    {
                        "title": title.format(**values),
                        "detail": detail.format(**values),
                        "command": command.format(**values) if command else None,
                        "priority": priority,
                        "risk": risk,
                    }
                )
        summary = f"rule-based advice for {len(blockers)} blocker(s)"
        return summary, normalize(items)
