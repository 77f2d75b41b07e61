"""Plans from a requirements document in a shell session, in-process (`assist_harness`): the
order steps run in, what stops a plan, decomposition by the AI, and plans that wait for
approval (the default)."""

from __future__ import annotations

import pytest

from orchestrator.assist.coordinator import status_lines
from orchestrator.assist.plan_executor import approve_plan
from orchestrator.errors import UserError
from orchestrator.model import ResultStatus

from .assist_harness import (
    PLAN,
    RUN_PLANS,
    SESSION,
    Harness,
    write_doc,
)

# plans --------------------------------------------------------------------------------------------
Ending = tuple[ResultStatus, int | None]  # how a command ended: status and exit code


def drive(h: Harness, exit_codes: dict[str, int], endings: dict[str, Ending] | None = None) -> list[str]:
    """Run the plan: every queued command 'exits' with its code from exit_codes (default 0), or
    ends as `endings` says (a stall, a cancel)."""
    ran: list[str] = []
    for _ in range(20):
        h.settle()
        queued = h.store.queued(SESSION)
        if not queued:
            break
        for row in queued:
            ran.append(row.command)
            status, code = (endings or {}).get(row.command, (None, exit_codes.get(row.command, 0)))
            h.finish(row.id, code, status)
    return ran


def test_plan_runs_in_dependency_order_one_command_at_a_time(make) -> None:
    h = make(toml=RUN_PLANS)
    write_doc(h, PLAN)
    assert drive(h, {}) == ["make build", "make check", "make test", "make ship"]
    plan = h.store.metadata(SESSION)["task_decomposition"]
    assert plan["state"] == "completed" and plan["progress"] == {"done": 3, "total": 3}
    assert plan["generated_by"] == "markdown" and [s["status"] for s in plan["steps"]] == ["succeeded"] * 3
    assert [e["status"] for e in h.events("plan_finished")] == ["succeeded"]


def test_a_failed_step_stops_the_plan_and_an_edit_resumes_it(make) -> None:
    h = make(toml=RUN_PLANS)
    write_doc(h, PLAN)
    assert drive(h, {"make test": 1}) == ["make build", "make check", "make test"]
    meta = h.store.metadata(SESSION)
    plan = meta["task_decomposition"]
    assert plan["state"] == "stopped" and [s["status"] for s in plan["steps"]] == ["succeeded", "pending", "failed"]
    assert meta["blockers"] == ["plan step s3 “Test” failed: `make test` failed (exit 1) (plan.md)"]
    assert meta["next_actions"]["recommendations"][0]["title"] == "Fix the failed plan step"

    write_doc(h, PLAN.replace("make test", "make test-fixed"))
    assert drive(h, {}) == ["make test-fixed", "make ship"]  # Build is kept, not run again
    meta = h.store.metadata(SESSION)
    assert meta["task_decomposition"]["state"] == "completed" and meta["blockers"] == []


@pytest.mark.parametrize(
    "ending,shown",
    [
        (("stalled", None), "`make build` stalled"),
        (("stalled", 130), "`make build` stalled (exit 130)"),  # the interrupt ended it
        (("cancelled", None), "`make build` cancelled"),
    ],
    ids=["stalled", "stalled-by-its-interrupt", "cancelled"],
)
def test_a_step_whose_command_stalled_or_was_cancelled_stops_the_plan(make, ending: Ending, shown: str) -> None:
    """Not only `failed`: the step fails, its next command and the steps after never run, and
    the reason says how the command ended (no exit code when it never exited by itself)."""
    h = make(toml=RUN_PLANS)
    write_doc(h, PLAN)
    assert drive(h, {}, {"make build": ending}) == ["make build"]  # not make check, make test, make ship
    meta = h.store.metadata(SESSION)
    plan = meta["task_decomposition"]
    assert plan["state"] == "stopped" and [s["status"] for s in plan["steps"]] == ["failed", "pending", "pending"]
    assert plan["stopped_reason"] == f"step s1 failed: {shown}"
    assert meta["blockers"] == [f"plan step s1 “Build” failed: {shown} (plan.md)"]
    assert [e["status"] for e in h.events("plan_finished")] == ["failed"]


def test_a_denied_plan_command_is_never_queued(make) -> None:
    h = make(toml=RUN_PLANS)
    write_doc(h, "## Clean\n```bash\nrm -rf ~\n```\n## Next\n```bash\ntrue\n```\n")
    assert drive(h, {}) == []
    plan = h.store.metadata(SESSION)["task_decomposition"]
    assert [s["status"] for s in plan["steps"]] == ["denied", "pending"] and plan["state"] == "stopped"
    assert "denied by the safety policy" in plan["stopped_reason"]


def test_ai_decomposition_is_checked_and_not_repeated_for_the_same_content(make) -> None:
    cyclic = {
        "steps": [
            {"id": "a", "title": "A", "commands": ["true"], "depends_on": ["b"], "acceptance": []},
            {"id": "b", "title": "B", "commands": ["true"], "depends_on": ["a"], "acceptance": []},
        ]
    }
    good = {"steps": [{"id": "only", "title": "Only", "commands": ["make all"], "depends_on": [], "acceptance": []}]}
    h = make(cyclic, good, toml={"plan": {"auto_execute": False}})
    write_doc(h, PLAN)
    plan = h.settle()["task_decomposition"]
    assert plan["generated_by"] == "markdown" and plan["ai_error"]["kind"] == "schema_mismatch"
    assert "cycle" in plan["ai_error"]["detail"] and h.store.queued(SESSION) == []  # auto_execute off
    h.settle()
    assert len(h.assist.ai.backend.requests) == 1  # same content: not asked again
    write_doc(h, PLAN + "\n")
    plan = h.settle()["task_decomposition"]
    assert plan["generated_by"] == "codex" and [s["id"] for s in plan["steps"]] == ["only"]
    assert "<<<DOCUMENT" in h.assist.ai.backend.requests[-1].prompt


def test_an_unreadable_doc_is_reported_once(make) -> None:
    h = make(toml={"ai": {"backend": "off"}})
    h.store.update_metadata(SESSION, {"requirements_doc": "missing.md"})
    h.settle()
    h.settle()
    assert len(h.events("decomposition_failed")) == 1
    assert "task_decomposition" not in h.store.metadata(SESSION)


# plans that wait for approval (the default) ------------------------------------------------------
def test_a_plan_waits_for_approval_by_default_and_approve_starts_it(make) -> None:
    h = make(toml={"ai": {"backend": "off"}})
    write_doc(h, PLAN)
    assert drive(h, {}) == []  # nothing queued, however many rounds
    meta = h.store.metadata(SESSION)
    assert meta["task_decomposition"]["state"] == "waiting_approval" and not meta.get("blockers")
    assert "    answer: tmux-agent approve weather/bot plan" in status_lines(SESSION, meta)
    [created] = h.events("decomposition_created")
    assert created["detail"].endswith("; waits for `tmux-agent approve weather/bot plan`")

    plan, started = approve_plan(h.store, h.audit, SESSION)
    assert started and plan["state"] == "running"
    assert approve_plan(h.store, h.audit, SESSION)[1] is False  # approving again changes nothing
    [approved] = h.events("plan_approved")
    assert (approved["by"], approved["detail"]) == (
        "person",
        f"approved with tmux-agent approve: 3 step(s) to run from plan.md (sha256 {plan['source_sha256'][:12]})",
    )
    assert drive(h, {}) == ["make build", "make check", "make test", "make ship"]
    assert h.store.metadata(SESSION)["task_decomposition"]["state"] == "completed"
    with pytest.raises(UserError, match="the plan of weather/bot is completed, not waiting_approval"):
        approve_plan(h.store, h.audit, SESSION)


def test_a_changed_document_is_a_new_plan_that_waits_again(make) -> None:
    h = make(toml={"ai": {"backend": "off"}})
    write_doc(h, PLAN)
    h.settle()
    approve_plan(h.store, h.audit, SESSION)
    assert drive(h, {"make test": 1}) == ["make build", "make check", "make test"]
    write_doc(h, PLAN.replace("make test", "make test-fixed"))
    assert drive(h, {}) == []
    plan = h.store.metadata(SESSION)["task_decomposition"]
    assert plan["state"] == "waiting_approval" and [s["status"] for s in plan["steps"]] == [
        "succeeded",
        "pending",
        "pending",
    ]
    approve_plan(h.store, h.audit, SESSION)
    assert drive(h, {}) == ["make test-fixed", "make ship"]  # Build is kept, not run again

    write_doc(h, PLAN.replace("make test", "make test-fixed") + "\n")  # same steps, all done: nothing to approve
    plan = h.settle()["task_decomposition"]
    assert plan["state"] == "completed" and h.store.queued(SESSION) == []


def test_approving_a_plan_does_not_approve_what_the_safety_policy_denies(make) -> None:
    h = make(toml={"ai": {"backend": "off"}})
    write_doc(h, "## Clean\n```bash\nrm -rf ~\n```\n")
    h.settle()
    approve_plan(h.store, h.audit, SESSION)
    assert drive(h, {}) == []
    plan = h.store.metadata(SESSION)["task_decomposition"]
    assert plan["state"] == "stopped" and plan["steps"][0]["status"] == "denied"


def test_a_pending_plan_an_older_version_left_waits_too(make) -> None:
    h = make(toml={"ai": {"backend": "off"}})
    write_doc(h, PLAN)
    plan = h.settle()["task_decomposition"]
    h.store.update_metadata(SESSION, {"task_decomposition": plan | {"state": "pending"}})
    assert drive(h, {}) == []
    assert approve_plan(h.store, h.audit, SESSION)[1] is True
    assert drive(h, {})[:1] == ["make build"]


def test_only_a_waiting_plan_can_be_approved(make) -> None:
    h = make(toml={"ai": {"backend": "off"}})
    with pytest.raises(UserError, match=r"session weather/bot has no plan \(task_decomposition\): nothing to approve"):
        approve_plan(h.store, h.audit, SESSION)
    write_doc(h, "# Nothing to do here\nJust prose.\n")
    assert h.settle()["task_decomposition"]["state"] == "empty"
    with pytest.raises(UserError, match="the plan of weather/bot is empty, not waiting_approval") as refused:
        approve_plan(h.store, h.audit, SESSION)
    assert refused.value.key == "plan" and h.events("plan_approved") == []


def test_auto_execute_runs_a_plan_that_waits(make) -> None:
    waiting = make(toml={"ai": {"backend": "off"}})
    write_doc(waiting, PLAN)
    plan = waiting.settle()["task_decomposition"]
    assert plan["state"] == "waiting_approval"
    h = make(toml=RUN_PLANS)  # the same plan, seen by an orchestrator with auto_execute = true
    h.store.update_metadata(SESSION, {"task_decomposition": plan})
    write_doc(h, PLAN)
    assert drive(h, {}) == ["make build", "make check", "make test", "make ship"]
    assert len(h.events("decomposition_created")) == 0  # the same content: not decomposed again
