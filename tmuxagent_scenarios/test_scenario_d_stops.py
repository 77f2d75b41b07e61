"""Scenario D (需求文档分解): a plan stops at the first step that did not succeed, however it
ended — not only by a non-zero exit (issue 18, holes 1 and 2).

- A step whose command **stalled** (a download that hangs without a byte of output, given up
  after the stall timeout) or was **cancelled** (its pane closed while it ran) fails: the rest
  of that step and the steps after it never run, even once the session can run commands again
  (the cooldown is over, the pane is back), and `stopped_reason`, the `plan step …` blocker and
  `tmux-agent status` name the step and how its command ended.
- A step with a command the **safety policy denies** (built-in deny list, or `[decision]
  denylist`) is `denied` before any of its commands is queued — approving the plan does not
  change that: nothing of it reaches the DB, the audit log or the pane, and nothing after it runs.
"""

from __future__ import annotations

import hashlib
import textwrap
from typing import Any

import pytest

from pytest_tmuxagent.waiting import wait_until

from .common import loop_ran

pytestmark = pytest.mark.scenario_d

SESSION = "weather/bot"
RUN_PLANS = {"plan": {"auto_execute": True}}
HANG = "sleep 600"  # stands in for a download that hangs silently


def write_doc(pane, doc: str, text: str) -> str:  # type: ignore[no-untyped-def]
    path = pane.workdir / doc
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plan_of(service, sha: str, states: tuple[str, ...], what: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The session's plan made from the document with `sha` once it is in one of `states`."""

    def reached() -> dict[str, Any] | None:
        plan = service.metadata(SESSION).get("task_decomposition") or {}
        return plan if plan.get("source_sha256") == sha and plan.get("state") in states else None

    found: dict[str, Any] = wait_until(reached, timeout=45, message=what)
    return found


def settled(service, sha: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The plan once it completed or stopped, after a few more supervisor rounds (in which a
    stopped plan must queue nothing), read again."""
    plan_of(service, sha, ("completed", "stopped"), "the plan to finish or stop")
    loop_ran(service, rounds=5)
    return plan_of(service, sha, ("completed", "stopped"), "the plan to stay finished or stopped")


def order(pane) -> list[str]:  # type: ignore[no-untyped-def]
    path = pane.workdir / "order.log"
    return path.read_text().split() if path.exists() else []


def queued_commands(service) -> list[str]:  # type: ignore[no-untyped-def]
    """Every command of the session in the state DB, oldest first."""
    store = service.store()
    try:
        return [row.command for row in reversed(store.commands(SESSION, limit=100))]
    finally:
        store.close()


# hole 1: a stalled or cancelled step --------------------------------------------------------
REFRESH_DOC = "docs/weather_data_refresh_plan.md"
REFRESH = textwrap.dedent(f"""\
    # Weather data refresh

    Refresh the cached forecasts the bot answers from.

    ## Step 1: Prepare the cache directory
    ```bash
    mkdir -p cache
    echo prepare >> order.log
    ```

    ## Step 2: Download the forecast feed
    The feed server sometimes hangs without sending a byte.

    ```bash
    echo download >> order.log
    {HANG}
    echo downloaded >> order.log
    ```
    - [ ] the feed is in `cache/`

    ## Step 3: Build the city index
    Depends on: Step 2

    ```bash
    echo index >> order.log
    ```

    ## Step 4: Announce the refresh
    ```bash
    echo announce >> order.log
    ```
    """)
STALLS = {
    "stall_timeout_seconds": 2,
    "stall_retries_before_notify": 1,
    "cooldown_seconds": 1,
    "interrupt_grace_seconds": 0.5,
}
NO_STALL = {"stall_timeout_seconds": 120}  # the pane is closed long before


def hang_command_id(service, sha: str) -> int:  # type: ignore[no-untyped-def]
    """The id of step s2's second command (the hanging download), once it is queued."""

    def queued() -> int | None:
        plan = service.metadata(SESSION).get("task_decomposition") or {}
        if plan.get("source_sha256") != sha:
            return None
        ids = plan["steps"][1].get("command_ids") or []
        return ids[1] if len(ids) >= 2 else None

    found: int = wait_until(queued, timeout=30, message=f"step s2's `{HANG}` to be queued")
    return found


@pytest.mark.parametrize("ending", ["stalled", "cancelled"])
def test_a_step_whose_command_stalled_or_was_cancelled_stops_the_plan(
    ending, agent_pane, orchestrator_service, wecom_mock, tmuxagent_evidence
) -> None:
    pane = agent_pane(SESSION)
    agent_pane("spare/shell")  # another tmux session: closing the bot's pane leaves the tmux server up
    sha = write_doc(pane, REFRESH_DOC, REFRESH)
    service = orchestrator_service(
        [pane], settings={**(STALLS if ending == "stalled" else NO_STALL), **RUN_PLANS}, env=wecom_mock.env("webhook")
    )
    service.meta_set(SESSION, "requirements_doc", REFRESH_DOC)
    hang = hang_command_id(service, sha)
    if ending == "cancelled":
        wait_until(lambda: any(f"#{hang} {HANG}" in line for line in pane.capture()), timeout=15, message="typed")
        pane.kill()  # a person closes the pane mid-download ...
    row = service.wait_result(hang, timeout=30)
    assert (row.command, row.status, row.exit_code) == (HANG, ending, None)  # it never exited by itself
    if ending == "cancelled":
        pane = agent_pane(SESSION)  # ... and opens it again: the session can run commands
    plan = settled(service, sha)

    statuses = [s["status"] for s in plan["steps"]]
    assert (plan["state"], statuses) == ("stopped", ["succeeded", "failed", "pending", "pending"]), (
        f"a step whose command ended {ending} did not stop the plan; order.log: {order(pane)}"
    )
    assert plan["stopped_reason"] == f"step s2 failed: `{HANG}` {ending}"  # no "(exit None)"
    assert order(pane) == ["prepare", "download"]  # not `downloaded`, `index` or `announce`
    assert queued_commands(service) == [
        "mkdir -p cache",
        "echo prepare >> order.log",
        "echo download >> order.log",
        HANG,
    ]
    assert "plan: 1/4 done (stopped, failed s2)" in (status := service.cli("status", SESSION).stdout)
    assert f"stopped: step s2 failed: `{HANG}` {ending}" in status
    blocker = f"plan step s2 “Download the forecast feed” failed: `{HANG}` {ending} ({REFRESH_DOC})"
    assert blocker in service.metadata(SESSION)["blockers"]
    [finished] = service.audit_events(event="plan_finished", session=SESSION)
    assert finished["status"] == "failed" and f"`{HANG}` {ending}" in finished["detail"]
    tmuxagent_evidence.decide(
        f"step s2's `{HANG}` ended `{ending}` and the plan stopped there ({plan['stopped_reason']}); "
        f"the rest of s2, s3 and s4 never ran: order.log reads {' → '.join(order(pane))}"
    )


# hole 2: a step the safety policy denies ----------------------------------------------------
RELEASE_DOC = "docs/weather_bot_release_plan.md"
RELEASE = textwrap.dedent("""\
    # Weather bot release

    ## Step 1: Build the package
    ```bash
    mkdir -p build
    echo build >> order.log
    ```
    - [ ] `build/` exists

    ## Step 2: Start from a clean tree
    Releases are made from a clean checkout.

    ```bash
    echo clean >> order.log
    {denied}
    ```

    ## Step 3: Publish the release
    ```bash
    echo publish >> order.log
    ```
    """)
DENIALS = {  # variant: (the denied command, [decision] settings, the reason the policy gives)
    "built-in-deny-list": ("git clean -fdx", {}, "deletes untracked files"),
    "configured-denylist": (
        "rm -rf build",
        {"denylist": [r"\brm\s+-rf\b"]},
        r"matches denylist '\\brm\\s+-rf\\b'",
    ),
}


@pytest.mark.parametrize("variant", DENIALS)
def test_a_step_the_safety_policy_denies_stops_the_plan_and_is_never_typed(
    variant, agent_pane, orchestrator_service, tmuxagent_evidence
) -> None:
    denied, decision, why = DENIALS[variant]
    pane = agent_pane(SESSION)
    sha = write_doc(pane, RELEASE_DOC, RELEASE.replace("{denied}", denied))
    service = orchestrator_service([pane], settings={"decision": decision} if decision else None)
    service.meta_set(SESSION, "requirements_doc", RELEASE_DOC)
    plan_of(service, sha, ("waiting_approval",), "the plan to wait for approval")
    service.cli("approve", SESSION, "plan")  # a person approves the plan: the denial still holds
    plan = settled(service, sha)

    statuses = [s["status"] for s in plan["steps"]]
    assert (plan["state"], statuses) == ("stopped", ["succeeded", "denied", "pending"]), (
        f"a plan step with `{denied}` was not denied by the safety policy; order.log: {order(pane)}"
    )
    assert plan["steps"][1]["commands"] == ["echo clean >> order.log", denied]
    assert "command_ids" not in plan["steps"][1]
    reason = f"step s2 denied by the safety policy: `{denied}` {why}"
    assert plan["stopped_reason"] == reason
    # never queued, never typed: not in the DB, not in the audit log, not run in the pane
    assert queued_commands(service) == ["mkdir -p build", "echo build >> order.log"]
    for event in ("command_queued", "command_dispatched"):
        assert [e.get("command") for e in service.audit_events(event=event, session=SESSION)] == [
            "mkdir -p build",
            "echo build >> order.log",
        ], event
    assert order(pane) == ["build"]  # not even the step's harmless first command, nor step 3
    assert (pane.workdir / "build").is_dir()
    assert not any(denied in line for line in pane.capture(200))
    # the reason where a person looks
    status = service.cli("status", SESSION).stdout
    assert "plan: 1/3 done (stopped, failed s2)" in status and f"stopped: {reason}" in status
    blocker = f"plan step s2 “Start from a clean tree” denied by the safety policy: `{denied}` {why} ({RELEASE_DOC})"
    assert blocker in service.metadata(SESSION)["blockers"]
    step_events = [e["detail"] for e in service.audit_events(event="plan_step", session=SESSION)]
    assert f"s2 'Start from a clean tree': denied — `{denied}` {why}" in step_events
    tmuxagent_evidence.decide(
        f"an approved plan stopped at step s2, whose `{denied}` the safety policy denies ({why}): "
        f"nothing of s2 was queued or typed and s3 never ran; order.log reads {' → '.join(order(pane))}"
    )
