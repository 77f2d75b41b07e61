"""Scenario C (决策辅助): a missing-API-key blocker gets `next_actions` and a "下一步建议"
notification — from codex when it answers properly, from the rule-based advisor when it prints
garbage or hangs (within the timeout) — and suggested commands obey the safety policy: a denied
destructive one never runs, a high-risk one waits for `tmux-agent approve`.
"""

from __future__ import annotations

import os
import time

import pytest

from pytest_tmuxagent.fake_codex import FakeCodex
from pytest_tmuxagent.waiting import wait_until

from .common import fake_only, loop_ran

pytestmark = pytest.mark.scenario_c

SESSION = "weather/bot"
BLOCKER = "weather API calls fail with 401 Unauthorized: OPENAI_API_KEY is missing"
CODEX_TIMEOUT = 1.5
# seconds a timed-out call may take past the timeout: the kill's grace (2 s) plus what a machine
# at load 15 on 2 cores adds (killing and reaping the process group, thread scheduling)
LOAD_MARGIN = 12.0
CODEX_ADVICE = {
    "summary": "The weather bot has no OpenAI key.",
    "recommendations": [
        {
            "title": "Confirm the key is visible to the bot",
            "detail": "Check the pane's environment.",
            "command": "echo key-check > assist.log",
            "priority": "high",
            "risk": "low",
        },
        {
            "title": "Reinstall everything from scratch",
            "detail": "Wipe the machine.",
            "command": "rm -rf / --no-preserve-root",
            "priority": "medium",
            "risk": "low",
        },
        {
            "title": "Rotate the key on the server",
            "detail": "Needs a person.",
            "command": "echo rotated > rotated.log",
            "priority": "low",
            "risk": "high",
        },
        {
            "title": "Add OPENAI_API_KEY to ~/.env",
            "detail": "The orchestrator re-reads it.",
            "command": None,
            "priority": "critical",
            "risk": "low",
        },
    ],
}
REPLIES = {"valid": {"kind": "json", "payload": CODEX_ADVICE}, "garbage": {"kind": "garbage"}, "hang": {"kind": "hang"}}
FALLBACK_KIND = {"garbage": "not_json", "hang": "timeout"}


def assist_service(orchestrator_service, pane, wecom_mock, fake: bool = True, backend: str = "codex", **settings):
    decision = {"enabled": True, "auto_run": True, "allowlist": ["^echo "], "pane_scan_seconds": 0.2}
    timeout = {"CODEX_TIMEOUT_SECONDS": str(CODEX_TIMEOUT)} if fake else {}  # live: the user's own timeout
    return orchestrator_service(
        [pane],
        settings={"ai": {"backend": backend}, "decision": decision, **settings},
        env={**wecom_mock.env("webhook"), **timeout},
    )


def next_actions(service, timeout: float = 10.0, **match) -> dict:
    def ready():
        actions = service.metadata(SESSION).get("next_actions")
        return actions if actions and all(actions.get(k) == v for k, v in match.items()) else None

    return wait_until(ready, timeout=timeout, message=f"next_actions {match} for {SESSION}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("kind", ["valid", "garbage", "hang"])
def test_missing_api_key_blocker_gets_next_actions(
    kind, agent_pane, orchestrator_service, fake_codex, wecom_mock, tmuxagent_evidence
) -> None:
    fake_codex.script([REPLIES[kind]])  # live: the real codex answers ("valid"); the other kinds skip
    fake = isinstance(fake_codex, FakeCodex)
    service = assist_service(orchestrator_service, agent_pane(SESSION), wecom_mock, fake=fake)
    started = time.monotonic()
    service.meta_set(SESSION, "blockers", [BLOCKER])
    actions = next_actions(service, timeout=CODEX_TIMEOUT + 30 if fake else 300, blockers=[BLOCKER])
    elapsed = time.monotonic() - started
    recs = actions["recommendations"]

    if not fake:
        assert actions["source"] == "codex" and recs and all(r["priority"] and r["risk"] for r in recs)
    elif kind == "valid":
        assert actions["source"] == "codex" and "ai_error" not in actions
        assert [r["priority"] for r in recs] == ["critical", "high", "medium", "low"]  # most urgent first
        assert recs[0]["title"] == "Add OPENAI_API_KEY to ~/.env" and "command" not in recs[0]
    else:
        assert actions["source"] == "rules"
        assert actions["ai_error"]["kind"] == FALLBACK_KIND[kind] and actions["ai_error"]["backend"] == "codex"
        assert (recs[0]["title"], recs[0]["priority"]) == ("Provide OPENAI_API_KEY", "high")
        assert {r["policy"] for r in recs if r.get("command")} == {"suggested"}  # not allowlisted: nothing ran
    if kind == "hang":  # the fallback came once the timeout cut the hung codex off (it never answers by itself)
        assert actions["ai_error"]["detail"] == f"no answer within {CODEX_TIMEOUT:g}s (killed)"
        # the call as the engine timed it, not this test's wall clock (which a busy machine stretches)
        assert CODEX_TIMEOUT <= actions["latency_s"] < CODEX_TIMEOUT + LOAD_MARGIN
    [message] = wecom_mock.wait_for_messages(1)
    assert "下一步建议" in message and SESSION in message and recs[0]["title"] in message
    delivered = next(r.time for r in wecom_mock.requests if r.message and "下一步建议" in r.message)
    tmuxagent_evidence.figure("decision_to_delivery", delivered - time.time() + (time.monotonic() - started))
    tmuxagent_evidence.decide(
        f"Blocker {BLOCKER!r} ({kind} codex reply) got next_actions from source `{actions['source']}` in "
        f"{elapsed:.1f} s, first recommendation {recs[0]['title']!r} ({recs[0]['priority']}), and 下一步建议 "
        "reached WeCom",
        headline=kind == "valid",
    )
    if not fake:
        return

    [call] = fake_codex.wait_for_calls(1)
    assert call["argv"][0] == "exec" and call["argv"][-1] == "-"
    assert call["output_schema"]["required"] == ["summary", "recommendations"]
    assert BLOCKER in call["stdin"] and SESSION in call["stdin"]
    assert call["env"]["CODEX_TIMEOUT_SECONDS"] == str(CODEX_TIMEOUT)
    if kind == "hang":  # the hung codex was killed, not left behind
        wait_until(lambda: not pid_alive(call["pid"]), timeout=5, message="hung codex killed")

    metrics = service.metrics
    assert metrics.wait_until_value("orchestrator_decisions_total", 1.0, session=SESSION, source=actions["source"]) == 1
    assert (
        metrics.value("orchestrator_decision_assist_calls_total", session=SESSION, backend="codex", task="decision")
        == 1
    )
    if kind != "valid":
        assert (
            metrics.value(
                "orchestrator_decision_assist_errors_total", session=SESSION, backend="codex", kind=FALLBACK_KIND[kind]
            )
            == 1
        )
    [decision] = service.audit_events(event="decision_made", session=SESSION)
    assert decision["source"] == actions["source"] and decision.get("error_kind") == FALLBACK_KIND.get(kind)
    assert service.process.poll() is None


@pytest.mark.tmuxagent_each_store
def test_suggested_commands_obey_the_safety_policy(agent_pane, orchestrator_service, fake_codex, wecom_mock) -> None:
    fake_only(fake_codex)
    fake_codex.script([REPLIES["valid"]])
    pane = agent_pane(SESSION)
    service = assist_service(orchestrator_service, pane, wecom_mock)
    service.meta_set(SESSION, "blockers", [BLOCKER])
    recs = {r["title"]: r for r in next_actions(service, source="codex")["recommendations"]}

    allowed = recs["Confirm the key is visible to the bot"]
    assert allowed["policy"] == "auto_run"
    row = service.wait_result(allowed["command_id"])
    assert (row.status, row.source) == ("succeeded", "decision")
    assert (pane.workdir / "assist.log").read_text().strip() == "key-check"

    destructive = recs["Reinstall everything from scratch"]
    assert destructive["policy"] == "denied" and "command_id" not in destructive
    refused = service.cli("approve", SESSION, destructive["id"], check=False)
    assert refused.returncode == 2 and "refused" in refused.stderr and "Traceback" not in refused.stderr

    risky = recs["Rotate the key on the server"]
    assert (risky["policy"], risky["risk"]) == ("needs_approval", "high") and "command_id" not in risky
    assert not (pane.workdir / "rotated.log").exists()
    text = service.cli("status", SESSION).stdout
    assert f"tmux-agent approve {SESSION} {risky['id']}" in text and "next actions (codex" in text
    approved = int(service.cli("approve", SESSION, risky["id"]).stdout.split()[0])
    assert service.wait_result(approved).status == "succeeded"
    assert (pane.workdir / "rotated.log").read_text().strip() == "rotated"
    marked = {r["id"]: r for r in service.metadata(SESSION)["next_actions"]["recommendations"]}
    assert marked[risky["id"]]["command_id"] == approved and marked[risky["id"]]["approved_at"]

    store = service.store()
    try:
        ran = [r.command for r in store.commands(SESSION, limit=100)]
    finally:
        store.close()
    assert sorted(ran) == sorted(["echo key-check > assist.log", "echo rotated > rotated.log"])
    verdicts = {e["command"]: e["policy"] for e in service.audit_events(event="safety_decision", session=SESSION)}
    assert verdicts == {
        "echo key-check > assist.log": "auto_run",
        "rm -rf / --no-preserve-root": "denied",
        "echo rotated > rotated.log": "needs_approval",
    }
    assert [e["recommendation_id"] for e in service.audit_events(event="suggestion_refused")] == [destructive["id"]]
    assert [e["command_id"] for e in service.audit_events(event="suggestion_approved")] == [approved]
    assert service.metrics.value("orchestrator_suggestions_total", session=SESSION, policy="denied") == 1


@pytest.mark.tmuxagent_each_store
def test_blockers_come_from_pane_output_and_failure_streaks(agent_pane, orchestrator_service, wecom_mock) -> None:
    pane = agent_pane(SESSION)
    service = assist_service(orchestrator_service, pane, wecom_mock, backend="off", failure_alert_threshold=2)

    # an agent printing in its pane (typed so that the typed line itself does not match), after
    # the orchestrator's first look at the pane: what was there before is not news
    loop_ran(service)
    pane.type("printf '%s%s\\n' 'ERROR: WEATHER_API' '_KEY is not set'")
    actions = next_actions(service, blockers=["ERROR: WEATHER_API_KEY is not set"])
    assert actions["source"] == "rules" and actions["recommendations"][0]["title"] == "Provide WEATHER_API_KEY"

    # a dispatched command's output, then a failure streak
    failing = "echo 'openai.AuthenticationError: OPENAI_API_KEY environment variable is missing'; false"
    assert [service.wait_result(service.send(SESSION, failing)).status for _ in range(2)] == ["failed", "failed"]
    streak = wait_until(
        lambda: [b for b in service.metadata(SESSION).get("blockers", []) if b.startswith("failure streak:")],
        timeout=10,
        message="failure-streak blocker",
    )
    assert "2 consecutive failures" in streak[0]
    blockers = service.metadata(SESSION)["blockers"]
    assert blockers[:2] == [
        "ERROR: WEATHER_API_KEY is not set",
        "openai.AuthenticationError: OPENAI_API_KEY environment variable is missing",
    ]
    titles = [r["title"] for r in next_actions(service, blockers=blockers)["recommendations"]]
    assert {"Provide WEATHER_API_KEY", "Provide OPENAI_API_KEY", "Read the failing command's output"} <= set(titles)

    service.cli("unblock", SESSION)
    wait_until(
        lambda: not [b for b in service.metadata(SESSION)["blockers"] if b.startswith("failure streak:")],
        timeout=10,
        message="failure-streak blocker removed after unblock",
    )
    detected = [e["detail"] for e in service.audit_events(event="blocker_detected", session=SESSION)]
    assert [d.split(":")[0] for d in detected] == ["pane output", "command output", "failure streak"], detected
    titles = [m.split("\n")[0] for m in wecom_mock.wait_for_messages(3)]
    assert f"## 下一步建议 · {SESSION}" in titles and f"## 命令连续失败 · {SESSION}" in titles
