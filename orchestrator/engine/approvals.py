"""An agent asks to run a tool: rule on it, answer it, or wait for a person.

Part of the engine. While a turn runs, the driver is asked each round whether the agent waits on
a tool request (exact from the agent's hooks where it has them; see the drivers). A new request
makes the session `waiting_approval` and is put to the safety policy (a port): `approve`
(allowlisted) and `deny` (destructive) are answered at once with the agent's own keys;
`escalate` waits for a person — `tmux-agent approve SESSION` / `tmux-agent deny SESSION` leave an
answer in the session's metadata (`approval_answer`, naming the request's key so a stale answer
never lands on a newer request), read here. Waiting is never a stall: the stall clock starts again
when the request is answered. Each answer is kept for the turn's result (`approvals`): what was
decided, by whom (policy or person), why, and how long the agent waited.

Nothing is auto-approved because a person could not be told: an escalated request waits for as
long as it takes.
"""

from __future__ import annotations

import logging
from typing import Protocol

from orchestrator.clock import Clock
from orchestrator.errors import TmuxUnavailable
from orchestrator.events import ApprovalAnswered, ApprovalRequested, EventBus
from orchestrator.model import (
    ApprovalDecider,
    ApprovalDecision,
    ApprovalRecord,
    ApprovalRequest,
    ApprovalRuling,
    SessionState,
    SessionStateName,
)
from orchestrator.ports import ApprovalPolicy, Driver
from orchestrator.redact import redact
from orchestrator.state.port import Store

log = logging.getLogger("orchestrator")

NO_POLICY = ApprovalRuling("escalate", "no safety policy is configured: a person decides")


class Engine(Protocol):
    """What the approval watch uses of the supervisor that owns it."""

    store: Store
    bus: EventBus
    clock: Clock

    def set_state(self, state: SessionState, new: SessionStateName, detail: str = "") -> None: ...

    def driver_for(self, session: str) -> Driver: ...


def denial_note(request: ApprovalRequest, by: ApprovalDecider, reason: str) -> str:
    """What the agent is told when its tool request is refused (typed as its next input)."""
    who = "The orchestrator's safety policy" if by == "policy" else "The person supervising this session"
    what = f"`{request.command}`" if request.command else f"the {request.tool} tool"
    return f"{who} denied {what}: {reason}. Do not run it; carry on without it, or say what you need instead."


class ApprovalWatch:
    def __init__(self, engine: Engine, policy: ApprovalPolicy | None) -> None:
        self.engine = engine
        self.policy = policy

    def check(self, state: SessionState) -> bool:
        """Look at the running turn's tool requests; True while it waits on one."""
        running = state.running
        assert running is not None
        engine, name = self.engine, state.config.name
        request = engine.driver_for(name).pending_approval(running.row.id)
        if running.approval is None:
            if request is None or request.key in running.answered_keys:
                return False
            ruling = self.policy.rule(name, request) if self.policy is not None else NO_POLICY
            running.approval, running.approval_ruling = request, ruling
            running.approval_since = engine.clock.monotonic()
            # the request first (metadata `pending_approval`), then the state a reader acts on
            engine.bus.publish(ApprovalRequested(name, running.row, request, ruling))
            engine.set_state(state, "waiting_approval", redact(request.summary()))
            if ruling.verdict != "escalate":
                self._answer(state, ruling.verdict == "approve", "policy", ruling.reason)
            return running.approval is not None
        if request is None or request.key != running.approval.key:
            self._settled(state, "unknown", "person", "answered in the pane")
            return False
        standing = running.approval_ruling
        if standing is not None and standing.verdict != "escalate":  # the policy's keys did not go through
            self._answer(state, standing.verdict == "approve", "policy", standing.reason)
        else:
            self._person(state)
        return running.approval is not None

    def _person(self, state: SessionState) -> None:
        running = state.running
        assert running is not None and running.approval is not None
        store, name = self.engine.store, state.config.name
        answer = store.metadata(name).get("approval_answer")
        if not isinstance(answer, dict) or answer.get("decision") not in ("approved", "denied"):
            return
        store.update_metadata(name, {"approval_answer": None})
        if answer.get("key") not in (None, running.approval.key):
            log.warning("%s: an answer for an earlier approval request was dropped", name)
            return
        reason = answer.get("reason")
        approve = answer["decision"] == "approved"
        default = "approved with tmux-agent approve" if approve else "denied with tmux-agent deny"
        self._answer(state, approve, "person", reason if isinstance(reason, str) and reason else default)

    def _answer(self, state: SessionState, approve: bool, by: ApprovalDecider, reason: str) -> None:
        running = state.running
        assert running is not None and running.approval is not None
        engine, request = self.engine, running.approval
        note = "" if approve else denial_note(request, by, reason)
        try:
            engine.driver_for(state.config.name).answer_approval(running.row.id, running.pane_id, approve, note)
        except TmuxUnavailable as exc:
            engine.bus.publish(
                ApprovalAnswered(
                    state.config.name,
                    running.row,
                    request,
                    "approved" if approve else "denied",
                    by,
                    reason,
                    self._waited(state),
                    delivered=False,
                    detail=str(exc),
                )
            )
            return
        self._settled(state, "approved" if approve else "denied", by, reason)

    def _waited(self, state: SessionState) -> float:
        running = state.running
        assert running is not None
        since = running.approval_since
        return round(max(0.0, self.engine.clock.monotonic() - since), 6) if since is not None else 0.0

    def _settled(self, state: SessionState, decision: ApprovalDecision, by: ApprovalDecider, reason: str) -> None:
        running = state.running
        assert running is not None and running.approval is not None
        request, waited = running.approval, self._waited(state)
        running.approvals.append(
            ApprovalRecord(
                tool=request.tool,
                command=redact(request.command),
                decision=decision,
                by=by,
                reason=redact(reason),
                waited_s=waited,
            )
        )
        running.answered_keys.add(request.key)
        running.approval = running.approval_since = running.approval_ruling = None
        running.last_activity = self.engine.clock.monotonic()  # the stall clock starts again
        self.engine.bus.publish(ApprovalAnswered(state.config.name, running.row, request, decision, by, reason, waited))
        self.engine.set_state(state, "working")
