"""A person's answers to a waiting session: `tmux-agent approve|deny SESSION` (an agent's tool
request) and `tmux-agent deny SESSION ID` (refuse a suggestion from `next_actions`).

The CLI never types into a pane: it leaves the answer in the session's metadata
(`approval_answer`, naming the request's key) and the running orchestrator types the agent's own
keys at its next round. An answer to a request that is no longer pending is refused here, and one
that arrives for an older request is dropped by the engine.
"""

from __future__ import annotations

from typing import Any

from orchestrator.clock import iso_utc
from orchestrator.errors import UserError
from orchestrator.model import ApprovalDecision
from orchestrator.state.audit import AuditLog
from orchestrator.state.port import Store


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def answer_tool_request(
    store: Store, audit: AuditLog, session: str, decision: ApprovalDecision, reason: str | None
) -> dict[str, Any]:
    """Queue the person's answer to the pending tool request; returns that request."""
    verb = "approve" if decision == "approved" else "deny"
    metadata = store.metadata(session)
    pending, state = metadata.get("pending_approval"), _text(metadata.get("state"))
    if state != "waiting_approval" or not isinstance(pending, dict) or not pending.get("key"):
        raise UserError(
            f"session {session} is {state or 'in no reported state'}, not waiting_approval: nothing to {verb}",
            key="SESSION",
            fix=f"answer when `tmux-agent status {session}` shows waiting_approval; "
            f"for a suggestion from next_actions give its id: tmux-agent {verb} {session} ID",
        )
    answer = {"decision": decision, "key": pending["key"], "queued_at": iso_utc(store.clock.now())}
    if reason:
        answer["reason"] = reason
    store.update_metadata(session, {"approval_answer": answer})
    audit.record(
        "approval_queued",
        session,
        command_id=pending.get("command_id") if isinstance(pending.get("command_id"), int) else None,
        tool=_text(pending.get("tool")) or None,
        tool_command=_text(pending.get("command")) or None,
        decision=decision,
        by="person",
        detail=reason or f"{verb} with tmux-agent {verb}",
    )
    return pending


def refuse_suggestion(store: Store, audit: AuditLog, session: str, rec_id: str) -> str:
    """`tmux-agent deny SESSION ID`: mark a suggestion refused so it is never queued; its command."""
    next_actions = store.metadata(session).get("next_actions")
    recs = next_actions.get("recommendations", []) if isinstance(next_actions, dict) else []
    rec = next((r for r in recs if isinstance(r, dict) and r.get("id") == rec_id), None)
    if rec is None:
        known = ", ".join(str(r.get("id")) for r in recs if isinstance(r, dict)) or "none"
        raise UserError(
            f"no suggestion '{rec_id}' in next_actions of {session}",
            key="ID",
            fix=f"use one of: {known} (see `tmux-agent status {session}`)",
        )
    if rec.get("command_id"):
        raise UserError(
            f"suggestion '{rec_id}' was already approved (command {rec['command_id']})",
            key="ID",
            fix="it is in the queue or has run; see `tmux-agent status`",
        )
    refused_at = iso_utc(store.clock.now())

    def mark(value: Any) -> Any:
        for item in (value or {}).get("recommendations", []):
            if isinstance(item, dict) and item.get("id") == rec_id:
                item.update(refused_at=refused_at)
        return value

    store.modify_metadata(session, "next_actions", mark)
    command = _text(rec.get("command"))
    audit.record(
        "suggestion_refused",
        session,
        command=command or None,
        recommendation_id=rec_id,
        detail="refused by a person with tmux-agent deny",
    )
    return command
