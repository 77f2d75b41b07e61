"""Scenario E (连续失败告警): failures up to `failure_alert_threshold` raise the
`orchestrator_failure_streak` gauge, send exactly one "命令连续失败" alert, and
block the session — queued commands stay queued until `tmux-agent unblock`.
"""

from __future__ import annotations

import pytest

from orchestrator.clock import parse_iso_utc

pytestmark = pytest.mark.scenario_e

SESSION = "weather/bot"


def heartbeats_pass(service, count: int = 5) -> None:
    """Let the supervisor loop run several more rounds (seen on its heartbeat)."""
    start = service.metrics.value("orchestrator_heartbeat_timestamp_seconds")
    service.metrics.wait_until_value(
        "orchestrator_heartbeat_timestamp_seconds", lambda v: v >= start + count * 0.05, timeout=10
    )


@pytest.mark.parametrize("threshold", [1, 3])
@pytest.mark.tmuxagent_each_store
def test_failure_streak_alerts_once_blocks_and_resumes(
    threshold, agent_pane, orchestrator_service, wecom_mock, tmuxagent_evidence
) -> None:
    pane = agent_pane(SESSION)
    service = orchestrator_service(
        [pane], settings={"failure_alert_threshold": threshold}, env=wecom_mock.env("webhook"), start=False
    )
    failures = [service.send(SESSION, f"echo attempt {i}; (exit {10 + i})") for i in range(threshold)]
    kept = [service.send(SESSION, f"echo kept-{i} >> kept.log") for i in range(2)]
    service.start()

    assert [service.wait_result(i).status for i in failures] == ["failed"] * threshold
    metrics = service.metrics
    assert metrics.wait_until_value("orchestrator_failure_streak", float(threshold), session=SESSION) == threshold
    assert metrics.wait_until_value("orchestrator_session_blocked", 1.0, session=SESSION) == 1.0
    [alert] = wecom_mock.wait_for_messages(1)
    assert "命令连续失败" in alert and SESSION in alert and f"exit {10 + threshold - 1}" in alert

    heartbeats_pass(service)
    status = service.status()["sessions"][0]
    assert status["metadata"]["blocked"] is True
    assert [q["id"] for q in status["queued"]] == kept  # kept, in order, not dispatched
    assert not [e for e in service.audit_events(event="command_dispatched") if e["command_id"] in kept]

    service.cli("unblock", SESSION)
    assert [service.wait_result(i).status for i in kept] == ["succeeded", "succeeded"]
    assert (pane.workdir / "kept.log").read_text().split() == ["kept-0", "kept-1"]
    assert metrics.wait_until_value("orchestrator_failure_streak", 0.0, session=SESSION) == 0.0
    assert metrics.value("orchestrator_session_blocked", session=SESSION) == 0.0
    assert len(wecom_mock.messages()) == 1  # one alert per streak, not one per failure
    events = [e["event"] for e in service.audit_events(session=SESSION)]
    assert events.count("session_blocked") == 1 and "session_unblocked" in events
    last = service.command(failures[-1])
    delivered = next(r.time for r in wecom_mock.requests if r.message and "命令连续失败" in r.message)
    alert_s = delivered - parse_iso_utc(last.finished_at)
    tmuxagent_evidence.figure("streak_to_alert", alert_s)
    tmuxagent_evidence.decide(
        f"{threshold} failure(s) in a row (threshold {threshold}) set orchestrator_failure_streak to {threshold} and "
        f"blocked `{SESSION}`; one 命令连续失败 reached WeCom {alert_s * 1000:.0f} ms after the last failure, the "
        f"{len(kept)} queued commands waited and ran in order after `tmux-agent unblock`",
        headline=threshold == 3,
    )


def test_a_success_resets_the_streak(agent_pane, orchestrator_service, wecom_mock) -> None:
    pane = agent_pane(SESSION)
    service = orchestrator_service(
        [pane], settings={"failure_alert_threshold": 3}, env=wecom_mock.env("webhook"), start=False
    )
    ids = [service.send(SESSION, c) for c in ("false", "false", "true", "false", "false")]
    service.start()
    assert [service.wait_result(i).status for i in ids] == ["failed", "failed", "succeeded", "failed", "failed"]
    assert service.metrics.wait_until_value("orchestrator_failure_streak", 2.0, session=SESSION) == 2.0
    assert service.metrics.value("orchestrator_session_blocked", session=SESSION) == 0.0
    assert not service.metadata(SESSION).get("blocked")
    heartbeats_pass(service)
    assert wecom_mock.messages() == []


@pytest.mark.tmuxagent_each_store
def test_unblock_resets_the_streak_so_one_more_failure_does_not_block_again(
    agent_pane, orchestrator_service, wecom_mock
) -> None:
    """After `tmux-agent unblock` the streak starts again from 0: ONE more failure makes it 1 — not
    threshold + 1, which would block the session again and send a second 命令连续失败. (Following
    the unblock with a success, as the case above does, resets the streak anyway and hides this.)"""
    threshold = 3
    pane = agent_pane(SESSION)
    service = orchestrator_service(
        [pane], settings={"failure_alert_threshold": threshold}, env=wecom_mock.env("webhook"), start=False
    )
    failures = [service.send(SESSION, f"echo attempt {i}; (exit {10 + i})") for i in range(threshold)]
    one_more = service.send(SESSION, "echo after-unblock; (exit 7)")  # held by the block
    service.start()
    assert [service.wait_result(i).status for i in failures] == ["failed"] * threshold
    metrics = service.metrics
    assert metrics.wait_until_value("orchestrator_session_blocked", 1.0, session=SESSION) == 1.0
    assert len(wecom_mock.wait_for_messages(1)) == 1

    service.cli("unblock", SESSION)
    assert service.wait_result(one_more).status == "failed"
    heartbeats_pass(service)  # the result's handlers ran and the gauges mirror the DB
    assert metrics.value("orchestrator_failure_streak", session=SESSION) == 1.0, "unblock did not reset the streak"
    assert service.metadata(SESSION)["failure_streak"] == 1
    assert metrics.value("orchestrator_session_blocked", session=SESSION) == 0.0
    assert service.metadata(SESSION)["blocked"] is False
    kinds = [e["event"] for e in service.audit_events(session=SESSION)]
    assert (kinds.count("failure_streak"), kinds.count("session_blocked")) == (1, 1)

    # not blocked: the next command is dispatched (a block would keep it queued)
    nxt = service.wait_result(service.send(SESSION, "echo still-dispatched"), timeout=10)
    assert (nxt.status, nxt.output_tail) == ("succeeded", "still-dispatched")
    assert metrics.wait_until_value("orchestrator_notifications_pending", 0.0) == 0.0
    alerts = wecom_mock.messages()
    assert len(alerts) == 1, f"a second alert after the unblock: {alerts}"  # the streak's one 命令连续失败
