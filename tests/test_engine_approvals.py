"""An agent's tool request in the engine: the safety policy answers what it can, a person the
rest; waiting for a person is never a stall; each answer lands in the turn's result, the audit
log, the metrics and (escalated) a `需要确认` notification. Fake driver, real store, audit trail,
metrics and the real `ToolApprovalPolicy`."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.assist.approval_policy import ToolApprovalPolicy
from orchestrator.cli.answers import answer_tool_request
from orchestrator.config import ApprovalSettings
from orchestrator.errors import UserError
from orchestrator.model import ApprovalRequest
from orchestrator.state.audit import AuditLog
from orchestrator.state.audit_read import read_events

from .engine_rig import Rig, S, make_rig

POLICY = ToolApprovalPolicy(ApprovalSettings(allowlist=(r"touch \S+",)))


def ask(rig: Rig, command: str, key: str = "toolu_1") -> int:
    cid = rig.send("make the weather file")
    rig.sup.step()
    rig.driver.start(cid)
    rig.driver.approval_requests[cid] = ApprovalRequest(key, "Bash", command, "make a file")
    rig.sup.step()
    return cid


def finish(rig: Rig, cid: int) -> dict[str, object]:
    rig.driver.end(cid, 0)
    rig.sup.step()
    last = rig.store.metadata(S)["last_command_result"]
    assert isinstance(last, dict)
    return last


def events(rig: Rig, name: str) -> list[dict[str, object]]:
    return [e for e in read_events(rig.audit_path).events if e["event"] == name]


def test_an_allowlisted_command_is_approved_by_the_policy_with_the_agents_keys(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, approvals=POLICY)
    cid = ask(rig, "touch approved.txt")
    assert rig.driver.approval_answers == [(cid, True, "")]
    assert rig.store.metadata(S)["state"] == "working"
    assert rig.store.metadata(S)["pending_approval"] is None
    assert rig.notify.sent == []  # nobody had to be asked
    last = finish(rig, cid)
    assert last["approvals"] == [
        {
            "tool": "Bash",
            "command": "touch approved.txt",
            "decision": "approved",
            "by": "policy",
            "reason": "allowlisted ([approvals] allowlist 'touch \\\\S+')",
            "waited_s": 0.0,
        }
    ]
    (requested,) = events(rig, "approval_requested")
    assert (requested["verdict"], requested["tool_command"]) == ("approve", "touch approved.txt")
    (answered,) = events(rig, "approval_answered")
    assert (answered["decision"], answered["by"]) == ("approved", "policy")
    assert rig.metrics.approvals.labels(session=S, decision="approved", by="policy")._value.get() == 1


def test_a_destructive_command_is_denied_and_the_agent_is_told_why(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, approvals=POLICY)
    cid = ask(rig, "rm -rf build")
    ((answered_id, approve, note),) = rig.driver.approval_answers
    assert (answered_id, approve) == (cid, False)
    assert "safety policy denied `rm -rf build`" in note and "high risk" in note
    last = finish(rig, cid)
    assert [(a["decision"], a["by"]) for a in last["approvals"]] == [("denied", "policy")]  # type: ignore[index, union-attr]


def test_an_escalated_request_waits_for_a_person_and_is_never_a_stall(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, approvals=POLICY)
    cid = ask(rig, "make deploy")
    for _ in range(40):  # four stall timeouts
        rig.advance(1.0)
    assert rig.driver.interrupts == [] and rig.driver.approval_answers == []
    meta = rig.store.metadata(S)
    assert meta["state"] == "waiting_approval" and meta["state_detail"] == "Bash: make deploy"
    pending = meta["pending_approval"]
    assert isinstance(pending, dict) and (pending["key"], pending["command"], pending["verdict"]) == (
        "toolu_1",
        "make deploy",
        "escalate",
    )
    (note,) = rig.notify.sent
    assert note["title"] == f"需要确认 · {S}" and "make deploy" in note["body"]
    assert f"tmux-agent approve {S}" in note["body"] and f"tmux-agent deny {S}" in note["body"]

    answer_tool_request(rig.store, AuditLog(rig.audit_path, clock=rig.clock), S, "approved", None)
    rig.advance(1.0)
    assert rig.driver.approval_answers == [(cid, True, "")]
    assert rig.store.metadata(S)["state"] == "working"
    assert rig.store.metadata(S)["approval_answer"] is None
    rig.advance(9.0)
    assert rig.driver.interrupts == []  # the stall clock started again at the answer
    last = finish(rig, cid)
    (record,) = last["approvals"]  # type: ignore[misc]
    assert (record["decision"], record["by"], record["waited_s"]) == ("approved", "person", 41.0)
    assert rig.metrics.approval_wait.labels(session=S, by="person")._sum.get() == 41.0


def test_a_person_denies_with_a_reason_the_agent_is_told(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, approvals=POLICY)
    cid = ask(rig, "make deploy")
    answer_tool_request(rig.store, AuditLog(rig.audit_path, clock=rig.clock), S, "denied", "not on Fridays")
    rig.sup.step()
    ((_, approve, note),) = rig.driver.approval_answers
    assert not approve and "person supervising this session denied `make deploy`: not on Fridays" in note
    assert [e["by"] for e in events(rig, "approval_queued")] == ["person"]
    last = finish(rig, cid)
    assert [(a["decision"], a["by"], a["reason"]) for a in last["approvals"]] == [  # type: ignore[index, union-attr]
        ("denied", "person", "not on Fridays")
    ]


def test_an_answer_for_an_older_request_never_lands_on_a_newer_one(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, approvals=POLICY)
    cid = ask(rig, "make deploy", key="toolu_1")
    rig.store.update_metadata(S, {"approval_answer": {"decision": "approved", "key": "toolu_0"}})
    rig.sup.step()
    assert rig.driver.approval_answers == [] and rig.store.metadata(S)["state"] == "waiting_approval"
    assert rig.status(cid) == "running"


def test_approving_a_session_that_waits_for_nothing_is_one_clear_error(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, approvals=POLICY)
    with pytest.raises(UserError, match="not waiting_approval: nothing to approve"):
        answer_tool_request(rig.store, AuditLog(rig.audit_path, clock=rig.clock), S, "approved", None)


def test_a_request_answered_in_the_pane_is_recorded_as_a_persons_unknown_answer(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, approvals=POLICY)
    cid = ask(rig, "make deploy")
    rig.driver.approval_requests.pop(cid)  # someone pressed a key in the pane
    rig.sup.step()
    assert rig.store.metadata(S)["state"] == "working"
    last = finish(rig, cid)
    assert [(a["decision"], a["by"]) for a in last["approvals"]] == [("unknown", "person")]  # type: ignore[index, union-attr]


def test_the_request_is_in_metadata_before_the_state_says_waiting_approval(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, approvals=POLICY)
    seen: list[tuple[object, object]] = []
    original = rig.store.update_metadata

    def spy(name: str, changes: dict[str, object]) -> None:
        original(name, changes)
        if changes.get("state") == "waiting_approval":
            seen.append((changes["state"], rig.store.metadata(name).get("pending_approval")))

    rig.store.update_metadata = spy  # type: ignore[method-assign]
    ask(rig, "make deploy")
    [(state, pending)] = seen
    assert isinstance(pending, dict) and pending["command"] == "make deploy"
