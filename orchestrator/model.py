"""The orchestrator's nouns: commands, their results, sessions and what the engine knows of them.

A leaf module (it imports nothing above `config`): every layer — the engine, the drivers, the
guards, decision assist, the state store, the dashboard — speaks these types, and each status
vocabulary is one `Literal` here, not strings spread over modules.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, get_args

if sys.version_info >= (3, 11):
    from typing import NotRequired
else:  # pragma: no cover
    from typing_extensions import NotRequired

from orchestrator.config import SessionConfig
from orchestrator.redact import redact

Status = Literal["queued", "running", "succeeded", "failed", "stalled", "cancelled"]
"""A command's life: queued → running → one of the four results."""

ResultStatus = Literal["succeeded", "failed", "stalled", "cancelled"]
TERMINAL_STATUSES: tuple[ResultStatus, ...] = ("succeeded", "failed", "stalled", "cancelled")


SessionStateName = Literal[
    "idle",
    "working",
    "waiting_input",
    "waiting_approval",
    "stalled",
    "blocked",
    "cooldown",
    "error",
    "exited",
    "pane_missing",
    "unsupported",
]
"""Every session's state, as DESIGN.md names them (metadata `state`, the session-state gauge)."""

SESSION_STATES: tuple[SessionStateName, ...] = get_args(SessionStateName)


class LastCommandResult(TypedDict):
    """Metadata `last_command_result`: the contract dashboards, replay and alerts read."""

    command_id: int
    command: str
    exit_code: int | None
    status: ResultStatus
    started_at: str
    finished_at: str
    duration_s: float
    output_tail: str
    reply: NotRequired[str]
    tools: NotRequired[list[ToolCall]]
    approvals: NotRequired[list[ApprovalRecord]]


class ToolCall(TypedDict, total=False):
    """One tool call of an agent's turn (`command` for shell tools), as the agent recorded it."""

    name: str
    command: str
    input: dict[str, Any]
    decided_by: str


ApprovalDecision = Literal["approved", "denied", "unknown"]
"""What was answered to an agent's request to run a tool (`unknown`: someone answered it in the
pane itself, and the agent did not say which way)."""

ApprovalDecider = Literal["policy", "person"]
"""Who answered it: the safety policy on its own, or a person (`tmux-agent approve/deny`, or keys
pressed in the pane)."""

ApprovalVerdict = Literal["approve", "deny", "escalate"]
"""The safety policy's verdict on a tool request: answer it alone, or ask a person."""


@dataclass(frozen=True)
class ApprovalRequest:
    """An agent asks to run a tool and waits (Claude Code's permission dialog, codex's approval
    prompt). `key` tells one request from the next within a turn (the tool call's id where the
    agent reports one); `source` says how it was known (`hook`, `rollout`, or `screen`)."""

    key: str
    tool: str
    command: str
    detail: str = ""
    source: str = "hook"

    def summary(self) -> str:
        return f"{self.tool}: {self.command}" if self.command else self.tool


class ApprovalRecord(TypedDict):
    """One answered approval in a turn's result (`last_command_result.approvals`)."""

    tool: str
    command: str
    decision: ApprovalDecision
    by: ApprovalDecider
    reason: str
    waited_s: float


@dataclass(frozen=True)
class ApprovalRuling:
    """The safety policy's answer to an `ApprovalRequest`, with the reason a person can read."""

    verdict: ApprovalVerdict
    reason: str


@dataclass(frozen=True)
class CommandRow:
    """One row of the command queue as the state store keeps it."""

    id: int
    session: str
    command: str
    status: Status
    source: str
    queued_at: str
    started_at: str | None
    finished_at: str | None
    exit_code: int | None
    duration_s: float | None
    output_tail: str | None
    attempts: int
    recorded_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CommandResult:
    """How a command ended; written once, by the engine, into the row and `last_command_result`."""

    exit_code: int | None
    status: ResultStatus
    started_at: str
    finished_at: str
    duration_s: float
    output_tail: str
    reply: str | None = None
    tools: tuple[ToolCall, ...] | None = None
    approvals: tuple[ApprovalRecord, ...] = ()

    def as_last_result(self, command_id: int, command: str) -> LastCommandResult:
        last = LastCommandResult(
            command_id=command_id,
            command=redact(command),  # a display copy: the queue row keeps the exact text
            exit_code=self.exit_code,
            status=self.status,
            started_at=self.started_at,
            finished_at=self.finished_at,
            duration_s=self.duration_s,
            output_tail=redact(self.output_tail),
        )
        if self.reply is not None:
            last["reply"] = self.reply
        if self.tools is not None:
            last["tools"] = list(self.tools)
        if self.approvals:
            last["approvals"] = list(self.approvals)
        return last


@dataclass(frozen=True)
class ExitRecord:
    """A unit of work's end as its own channel reports it: for a shell the shell's exit record;
    for an agent's turn its hook or notify event (no exit code; `status` says how it ended, and
    `reply` and `tools` come from the agent's transcript)."""

    exit_code: int | None
    started: float
    finished: float
    status: ResultStatus | None = None
    reply: str | None = None
    tools: tuple[ToolCall, ...] | None = None
    approvals: tuple[ApprovalRecord, ...] = ()


@dataclass(frozen=True)
class PaneRef:
    pane_id: str
    target: str


@dataclass
class Running:
    """A command the engine has delivered and is waiting on."""

    row: CommandRow
    pane_id: str
    sent_at: float
    last_activity_marker: int = 0
    last_activity: float = 0.0
    interrupt_sent_at: float | None = None
    stalled_for: float = 0.0
    waiting_since: float | None = None
    progress_marker: int = -1
    interrupt_marker: int | None = None
    approval: ApprovalRequest | None = None  # the tool request the agent waits on, if any
    approval_since: float | None = None
    approval_ruling: ApprovalRuling | None = None
    approvals: list[ApprovalRecord] = field(default_factory=list)  # answered in this turn
    answered_keys: set[str] = field(default_factory=set)


@dataclass
class SessionState:
    """What the engine keeps in memory about one supervised session."""

    config: SessionConfig
    running: Running | None = None
    dispatch_error: str | None = None
    state: SessionStateName = "idle"
    state_detail: str = ""


StallAction = Literal["wait", "interrupt", "retry", "give_up"]


@dataclass(frozen=True)
class StallVerdict:
    """The stall guard's answer for one running command; the engine carries it out."""

    action: StallAction
    idle_s: float = 0.0


@dataclass(frozen=True)
class PaneInfo:
    """One look at a pane, in one tmux call: its first process, mode, cursor and terminal."""

    pane_id: str
    pid: int
    dead: bool
    in_mode: bool
    mode: str
    current_command: str
    cursor_x: int
    cursor_y: int
    width: int
    tty: str
    piped: bool
    activity: int = 0  # the window's last output (whole seconds, tmux's `window_activity`)


@dataclass(frozen=True)
class Readiness:
    """A driver's answer to "may work be typed into this pane now?", with the state that says why not."""

    ready: bool
    state: SessionStateName
    detail: str = ""
    # not ready for a moment only (the shell is still drawing the prompt after a command): the
    # engine looks again within milliseconds instead of a poll interval
    soon: bool = False
