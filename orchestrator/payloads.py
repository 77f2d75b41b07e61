"""The metadata decision assist and plans write: `next_actions` and `task_decomposition`.

A leaf module (stdlib only): the shapes the dashboard, `tmux-agent status`/`approve` and the
scenario tests read, and the vocabularies they use, each one `Literal`. Metadata read back
from the store may have been edited by hand, so readers still check shapes; these types are
what decision assist and the plan executor produce.

`next_actions` = {generated_at, source: codex|openai|rules, blockers, summary,
recommendations: [{id, title, detail, command?, kind?, priority, risk, policy, policy_reason,
command_id?, approved_at?}], latency_s, ai_error?: {backend, kind, detail}}; `kind` is
"prompt" when `command` is the next prompt to an agent session, else "command".

`task_decomposition` = {source (the document path), source_sha256, generated_at,
generated_by: codex|openai|markdown, state: pending|running|completed|stopped|empty,
stopped_reason?, progress: {done, total}, warnings?, ai_error?, steps: [{id, title, commands,
session?, kind?: command|prompt, depends_on, acceptance, status:
pending|running|succeeded|failed|skipped|denied, command_ids?, started_at?, finished_at?}]}.
"""

from __future__ import annotations

from typing import Literal, TypedDict, get_args

# vocabularies ---------------------------------------------------------------------------------
AIBackendName = Literal["codex", "openai"]
AITask = Literal["decision", "decomposition"]
"""What an AI call is for (a metric label)."""

AIErrorKind = Literal[
    "timeout",
    "missing_binary",
    "usage_error",
    "exit_nonzero",
    "empty_output",
    "not_json",
    "schema_mismatch",
    "missing_api_key",
    "auth",
    "rate_limited",
    "server_error",
    "network",
    "bad_reply",
    "missing_dependency",
    "proxy_unusable",
    "api_error",
    "unexpected",
]
ERROR_KINDS: tuple[AIErrorKind, ...] = get_args(AIErrorKind)
"""Why an AI call gave no usable answer (docs/decision-assist.md#error-kinds says when each one
happens). Every one falls back to the rules or the Markdown parser."""

DecisionSource = Literal["codex", "openai", "rules"]
Priority = Literal["low", "medium", "high", "critical"]
PRIORITIES: tuple[Priority, ...] = ("low", "medium", "high", "critical")
"""Least urgent first: a priority's index is its rank."""

Risk = Literal["low", "medium", "high"]
RISKS: tuple[Risk, ...] = ("low", "medium", "high")

Policy = Literal["denied", "needs_approval", "auto_run", "suggested", "no_command"]
"""The safety policy's verdict on a suggested command (see assist/safety.py)."""

WorkKind = Literal["command", "prompt"]
"""What a suggestion or a plan step queues: a shell command (shell session) or a prompt (agent session)."""

PlanGenerator = Literal["codex", "openai", "markdown"]
PlanState = Literal["waiting_approval", "pending", "running", "completed", "stopped", "empty"]
StepStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "denied"]


def as_priority(value: object) -> Priority | None:
    """The value as a priority, or None when it is not one (metadata may be hand-edited)."""
    return next((p for p in PRIORITIES if p == value), None)


def as_risk(value: object) -> Risk | None:
    """The value as a risk, or None when it is not one."""
    return next((r for r in RISKS if r == value), None)


class AIErrorInfo(TypedDict):
    """`ai_error`: why the AI's answer was not used (the rules or the parser answered)."""

    backend: AIBackendName
    kind: AIErrorKind
    detail: str


# next_actions ---------------------------------------------------------------------------------
class _AdviceRequired(TypedDict):
    id: str
    title: str
    detail: str
    priority: Priority
    risk: Risk


class Advice(_AdviceRequired, total=False):
    """A recommendation before the safety policy judged its command."""

    command: str
    kind: WorkKind
    """With `command`: a shell command, or (agent sessions) the next prompt to the agent."""


class _RecommendationJudged(Advice):
    policy: Policy
    policy_reason: str


class Recommendation(_RecommendationJudged, total=False):
    """One entry of `next_actions.recommendations`."""

    command_id: int
    approved_at: str


class _NextActionsRequired(TypedDict):
    generated_at: str
    source: DecisionSource
    blockers: list[str]
    summary: str
    recommendations: list[Recommendation]
    latency_s: float


class NextActions(_NextActionsRequired, total=False):
    """Metadata `next_actions`."""

    ai_error: AIErrorInfo


# task_decomposition ---------------------------------------------------------------------------
class _StepSpecRequired(TypedDict):
    id: str
    title: str
    commands: list[str]
    depends_on: list[str]
    acceptance: list[str]


class StepSpec(_StepSpecRequired, total=False):
    """A step as a decomposition (the AI's or the Markdown parser's) proposes it. `commands` are
    the units it queues: shell commands, or prompts when `kind` is "prompt" (absent: command);
    `session` is the session they go to (absent: the session whose plan it is)."""

    session: str
    kind: WorkKind


class _PlanStepRequired(StepSpec):
    status: StepStatus


class PlanStep(_PlanStepRequired, total=False):
    """One entry of `task_decomposition.steps`."""

    command_ids: list[int]
    started_at: str
    finished_at: str


class PlanProgress(TypedDict):
    """`task_decomposition.progress`."""

    done: int
    total: int


class _TaskDecompositionRequired(TypedDict):
    source: str
    source_sha256: str
    generated_at: str
    generated_by: PlanGenerator
    state: PlanState
    steps: list[PlanStep]


class TaskDecomposition(_TaskDecompositionRequired, total=False):
    """Metadata `task_decomposition`."""

    stopped_reason: str
    progress: PlanProgress
    warnings: list[str]
    ai_error: AIErrorInfo


class PlanReport(TypedDict):
    """What `plan_progress` tells `tmux-agent status` about a (possibly hand-edited) plan."""

    done: int
    total: int
    state: str | None
    running: str | None
    failed: list[str | None]
    """Ids of the failed or denied steps (None for a hand-written step without one)."""
