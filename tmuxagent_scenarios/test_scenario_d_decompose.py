"""Scenario D (需求文档分解): `requirements_doc` set in a session's metadata becomes
`task_decomposition`, and the orchestrator drives its steps through the dispatch queue in
dependency order; a failed step stops the plan, sets a blocker and brings decision assist in,
and fixing the document resumes the plan without re-running what already succeeded.

A plan waits for `tmux-agent approve SESSION plan` unless `[plan] auto_execute = true`; the
scenarios that drive plans say so in their config (RUN_PLANS), and one shows the default.
"""

from __future__ import annotations

import hashlib
import os
import textwrap

import pytest

from pytest_tmuxagent.waiting import wait_until

from .common import fake_only, loop_ran

pytestmark = pytest.mark.scenario_d

SESSION = "weather/bot"
DOC = "docs/weather_bot_end_to_end_plan.md"
FAILING = "test -f secrets/weather.env"
FIXED = "mkdir -p secrets && touch secrets/weather.env"
PLAN = textwrap.dedent("""\
    # Weather bot end-to-end plan

    Build a tiny weather bot, step by step.

    ## Step 1: Scaffold the project
    ```bash
    mkdir -p weather_bot
    echo scaffold >> order.log
    ```
    - [ ] `weather_bot/` exists

    ## Step 2: Write the forecast module
    Depends on: Step 3

    ```bash
    cat > weather_bot/forecast.py <<'PY'
    def forecast(city):
        return f"sunny in {city}"
    PY
    echo forecast >> order.log
    ```
    - [ ] `weather_bot/forecast.py` exists

    ## Step 3: Write the configuration
    ```bash
    {secrets}
    printf 'city = "Beijing"\\n' > weather_bot/config.toml
    echo config >> order.log
    ```

    ## Notes
    Nothing to run here.

    ## Step 4: Smoke test
    ```console
    $ test -f weather_bot/forecast.py && test -f weather_bot/config.toml && echo smoke >> order.log
    ```
    - [x] order.log lists every step
    """)
STEPS = [
    ("s1", "Scaffold the project", []),
    ("s2", "Write the forecast module", ["s3"]),
    ("s3", "Write the configuration", []),
    ("s4", "Smoke test", []),
]
ALL_DONE = ["scaffold", "config", "forecast", "smoke"]
RUN_PLANS = {"plan": {"auto_execute": True}}  # run a plan as soon as it is decomposed (default: wait for approve)


def write_plan(pane, secrets: str) -> str:
    doc = pane.workdir / DOC
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(PLAN.replace("{secrets}", secrets))
    return hashlib.sha256(doc.read_bytes()).hexdigest()


def plan_settled(service, sha: str) -> dict:
    def settled():
        plan = service.metadata(SESSION).get("task_decomposition") or {}
        return plan if plan.get("source_sha256") == sha and plan.get("state") in ("completed", "stopped") else None

    return wait_until(settled, timeout=30, message=f"plan of {DOC} ({sha[:12]}) to finish or stop")


def order(pane) -> list[str]:
    path = pane.workdir / "order.log"
    return path.read_text().split() if path.exists() else []


@pytest.mark.parametrize("variant", ["all-steps-pass", "a-step-fails"])
def test_requirements_doc_drives_execution(
    variant, agent_pane, orchestrator_service, wecom_mock, tmuxagent_evidence
) -> None:
    pane = agent_pane(SESSION)
    fails = variant == "a-step-fails"
    sha = write_plan(pane, FAILING if fails else FIXED)
    service = orchestrator_service(
        [pane], settings={"decision": {"enabled": True}, **RUN_PLANS}, env=wecom_mock.env("webhook")
    )
    service.meta_set(SESSION, "requirements_doc", DOC)
    plan = plan_settled(service, sha)

    assert (plan["source"], plan["generated_by"]) == (DOC, "markdown")
    assert [(s["id"], s["title"], s["depends_on"]) for s in plan["steps"]] == STEPS
    assert plan["steps"][0]["commands"] == ["mkdir -p weather_bot", "echo scaffold >> order.log"]
    assert plan["steps"][1]["commands"][0].startswith("cat > weather_bot/forecast.py <<'PY'\n")
    assert plan["steps"][3]["commands"] == [
        "test -f weather_bot/forecast.py && test -f weather_bot/config.toml && echo smoke >> order.log"
    ]
    assert plan["steps"][0]["acceptance"] == ["`weather_bot/` exists"]
    queued = service.audit_events(event="command_queued", session=SESSION)
    assert all(e["detail"].startswith("plan step ") for e in queued)

    if not fails:
        assert plan["state"] == "completed" and plan["progress"] == {"done": 4, "total": 4}
        assert order(pane) == ALL_DONE  # s3 before s2: its dependency; document order otherwise
        assert (pane.workdir / "weather_bot" / "forecast.py").read_text().startswith("def forecast(city):")
        assert (pane.workdir / "weather_bot" / "config.toml").read_text() == 'city = "Beijing"\n'
        assert "plan: 4/4 done (completed" in service.cli("status", SESSION).stdout
        assert service.status()["sessions"][0]["plan_progress"]["done"] == 4
        assert not service.metadata(SESSION).get("blockers")
        tmuxagent_evidence.decide(
            f"`requirements_doc` {DOC} became a task_decomposition of {len(plan['steps'])} steps "
            f"({', '.join(s['id'] for s in plan['steps'])}) that ran to `completed`, dependencies first: "
            f"order.log reads {' → '.join(order(pane))}",
            headline=True,
        )
        return

    # stop on failure: s3 failed, s2 and s4 never ran
    assert plan["state"] == "stopped" and plan["stopped_reason"].startswith(f"step s3 failed: `{FAILING}` failed")
    assert [s["status"] for s in plan["steps"]] == ["succeeded", "pending", "failed", "pending"]
    assert order(pane) == ["scaffold"] and not (pane.workdir / "weather_bot" / "forecast.py").exists()
    assert "plan: 1/4 done (stopped, failed s3)" in service.cli("status", SESSION).stdout
    blocker = next(b for b in service.metadata(SESSION)["blockers"] if b.startswith("plan step s3"))
    actions = wait_until(
        lambda: (
            (service.metadata(SESSION).get("next_actions") or {}).get("blockers") == [blocker]
            and service.metadata(SESSION)["next_actions"]
        ),
        timeout=10,
        message="decision for the blocker",
    )
    assert actions["recommendations"][0]["title"] == "Fix the failed plan step"
    assert any("下一步建议" in m for m in wecom_mock.wait_for_messages(1))

    # fixing the document resumes the plan; the step that succeeded is not run again
    fixed = write_plan(pane, FIXED)
    plan = plan_settled(service, fixed)
    assert plan["state"] == "completed" and [s["status"] for s in plan["steps"]] == ["succeeded"] * 4
    assert order(pane) == ALL_DONE
    assert not [b for b in service.metadata(SESSION).get("blockers", []) if b.startswith("plan step")]
    created = service.audit_events(event="decomposition_created", session=SESSION)
    assert [e["detail"].split(", ")[-1] for e in created] == ["0 kept from before", "1 kept from before"]


CODEX_PLAN = {
    "steps": [
        {
            "id": "deploy",
            "title": "Deploy the bot",
            "commands": ["echo deploy >> order.log"],
            "depends_on": ["setup"],
            "acceptance": ["order.log ends with deploy"],
        },
        {"id": "setup", "title": "Set up", "commands": ["echo setup >> order.log"], "depends_on": [], "acceptance": []},
    ]
}


def test_codex_decomposes_and_unchanged_content_is_not_sent_again(agent_pane, orchestrator_service, fake_codex) -> None:
    fake_only(fake_codex)
    fake_codex.script([{"kind": "json", "payload": CODEX_PLAN}, {"kind": "garbage"}])
    pane = agent_pane(SESSION)
    sha = write_plan(pane, FIXED)
    service = orchestrator_service(
        [pane], settings={"ai": {"backend": "codex"}, **RUN_PLANS}, env={"CODEX_TIMEOUT_SECONDS": "5"}
    )
    service.meta_set(SESSION, "requirements_doc", DOC)
    plan = plan_settled(service, sha)
    assert plan["generated_by"] == "codex" and [s["id"] for s in plan["steps"]] == ["deploy", "setup"]
    assert order(pane) == ["setup", "deploy"]
    [call] = fake_codex.wait_for_calls(1)
    assert "## Step 3: Write the configuration" in call["stdin"] and call["output_schema"]["required"] == ["steps"]

    # same content (touched, and after a restart): not sent to codex again, not re-run
    os.utime(pane.workdir / DOC)
    service.stop()
    service.start()
    loop_ran(service, rounds=5)
    assert len(fake_codex.calls()) == 1 and not service.status()["sessions"][0]["queued"]
    assert service.metadata(SESSION)["task_decomposition"]["generated_at"] == plan["generated_at"]

    # changed content: decomposed again; codex now prints garbage, so the Markdown parser takes over
    with (pane.workdir / DOC).open("a") as doc:
        doc.write("\n## Step 5: Report\n```bash\necho report >> order.log\n```\n")
    new_sha = hashlib.sha256((pane.workdir / DOC).read_bytes()).hexdigest()
    plan = plan_settled(service, new_sha)
    assert plan["generated_by"] == "markdown" and plan["ai_error"]["kind"] == "not_json"
    assert len(plan["steps"]) == 5 and len(fake_codex.calls()) == 2
    assert order(pane) == ["setup", "deploy", *ALL_DONE, "report"]


def test_once_mode_runs_the_whole_plan_then_exits(agent_pane, orchestrator_service) -> None:
    pane = agent_pane(SESSION)
    sha = write_plan(pane, FIXED)
    service = orchestrator_service([pane], settings=RUN_PLANS, start=False)
    service.meta_set(SESSION, "requirements_doc", DOC)
    service.start("--once", wait=False)
    assert service.process.wait(timeout=60) == 0, service.log_text()[-2000:]
    plan = service.metadata(SESSION)["task_decomposition"]
    assert (plan["source_sha256"], plan["state"]) == (sha, "completed") and order(pane) == ALL_DONE


@pytest.mark.tmuxagent_each_store
def test_by_default_a_plan_waits_for_tmux_agent_approve(agent_pane, orchestrator_service, tmuxagent_evidence) -> None:
    pane = agent_pane(SESSION)
    sha = write_plan(pane, FIXED)
    service = orchestrator_service([pane])
    service.meta_set(SESSION, "requirements_doc", DOC)

    def waiting():
        plan = service.metadata(SESSION).get("task_decomposition") or {}
        return plan if plan.get("source_sha256") == sha and plan.get("state") == "waiting_approval" else None

    plan = wait_until(waiting, timeout=30, message=f"plan of {DOC} to wait for approval")
    loop_ran(service, rounds=5)
    assert order(pane) == [] and not service.status()["sessions"][0]["queued"]
    status = service.cli("status", SESSION).stdout
    assert "plan: 0/4 done (waiting_approval" in status and f"answer: tmux-agent approve {SESSION} plan" in status

    approved = service.cli("approve", SESSION, "plan")
    assert approved.stdout.strip() == f"plan of {SESSION} approved: {DOC}"
    plan = plan_settled(service, sha)
    assert plan["state"] == "completed" and order(pane) == ALL_DONE
    [event] = service.audit_events(event="plan_approved", session=SESSION)
    assert event["by"] == "person"
    refused = service.cli("approve", SESSION, "plan", check=False)
    assert refused.returncode == 2 and "is completed, not waiting_approval" in refused.stderr
    tmuxagent_evidence.decide(
        f"with the default `[plan] auto_execute = false` the plan of {DOC} waited (nothing ran) until "
        f"`tmux-agent approve {SESSION} plan`, then ran to `completed`: order.log reads {' → '.join(order(pane))}"
    )
