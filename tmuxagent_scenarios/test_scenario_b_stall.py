"""Scenario B (卡顿检测与自愈): `sleep 600` stalls; the orchestrator interrupts it, retries it
when the session is marked retry-safe, then ends it `stalled`, sends "命令卡顿" with the real time
waited, cools the session down, and runs the next command after the cooldown. A chatty long
command is not a stall, and neither is a question: a command waiting for an answer is
`waiting_input` until `tmux-agent reply` answers it.
"""

from __future__ import annotations

import pytest

from orchestrator.clock import parse_iso_utc
from pytest_tmuxagent.waiting import wait_until
from tmuxagent_scenarios.common import loop_ran, supervised_for

pytestmark = pytest.mark.scenario_b

SESSION = "weather/bot"
STALL = {
    "stall_timeout_seconds": 1,
    "stall_retries_before_notify": 1,
    "cooldown_seconds": 2,
    "interrupt_grace_seconds": 0.5,
}


@pytest.mark.tmuxagent_each_store
def test_stalled_command_is_healed_alerted_and_cooled_down(
    agent_pane, orchestrator_service, wecom_mock, tmuxagent_evidence
) -> None:
    pane = agent_pane(SESSION)
    service = orchestrator_service(
        [pane], settings=STALL, env=wecom_mock.env("webhook"), session_overrides={SESSION: {"retry_safe": True}}
    )
    stuck = service.send(SESSION, "echo waiting-for-weather-api; sleep 600")
    after = service.send(SESSION, "echo recovered")

    row = service.wait_result(stuck, timeout=20)
    assert (row.status, row.exit_code) == ("stalled", None)
    assert row.attempts == 2  # the first run and one retry
    assert row.output_tail.endswith("waiting-for-weather-api")

    assert service.metrics.wait_until_value("orchestrator_stall_count_total", 2.0, session=SESSION) == 2.0
    assert service.metadata(SESSION)["stall_count"] == 2

    [alert] = wecom_mock.wait_for_messages(1, timeout=10)
    assert "命令卡顿" in alert and SESSION in alert and "sleep 600" in alert
    assert "waiting-for-weather-api" in alert and "waited" in alert

    nxt = service.wait_result(after, timeout=20)
    assert (nxt.status, nxt.output_tail) == ("succeeded", "recovered")
    events = service.audit_events(session=SESSION)
    kinds = [e["event"] for e in events]
    assert kinds.count("stall_detected") == 2 and kinds.count("stall_interrupt") == 2
    assert kinds.count("stall_retry") == 1
    cooldown = next(e for e in events if e["event"] == "cooldown_started")
    seconds, _, until_text = cooldown["detail"].partition("s until ")
    until = parse_iso_utc(until_text)
    # the configured cooldown, counted from a moment between the stalled result and the cooldown's
    # audit line (how long between is up to the machine's load; both bounds are exact)
    assert float(seconds) == STALL["cooldown_seconds"]
    started_between = (parse_iso_utc(row.finished_at), parse_iso_utc(cooldown["ts"]))
    assert started_between[0] - 0.001 <= until - STALL["cooldown_seconds"] <= started_between[1] + 0.001
    assert "cooldown_ended" in kinds
    # nothing was dispatched inside the cooldown
    assert parse_iso_utc(nxt.started_at) >= until
    dispatched_during = [
        e
        for e in events
        if e["event"] == "command_dispatched" and parse_iso_utc(cooldown["ts"]) <= parse_iso_utc(e["ts"]) < until
    ]
    assert dispatched_during == []
    dispatched = next(e for e in events if e["event"] == "command_dispatched" and e.get("command_id") == stuck)
    detected = next(e for e in events if e["event"] == "stall_detected")
    detect_s = parse_iso_utc(detected["ts"]) - parse_iso_utc(dispatched["ts"])
    delivered = next(r.time for r in wecom_mock.requests if r.message and "命令卡顿" in r.message)
    alert_s = delivered - parse_iso_utc(detected["ts"])
    next_s = parse_iso_utc(nxt.started_at) - parse_iso_utc(row.finished_at)
    tmuxagent_evidence.figure("stall_detection", detect_s)
    tmuxagent_evidence.figure("stall_alert_delivery", alert_s)
    tmuxagent_evidence.decide(
        f"`sleep 600` stalled after {detect_s:.1f} s (timeout {STALL['stall_timeout_seconds']} s), was interrupted "
        f"and retried once, ended `stalled` after {row.attempts} attempts; 命令卡顿 reached WeCom {alert_s:.1f} s "
        f"after detection, and the next command ran {next_s:.1f} s later, after the "
        f"{STALL['cooldown_seconds']} s cooldown",
        headline=True,
    )


RESTART_COOLDOWN = 6  # seconds: room to stop and start the orchestrator inside it, even on a busy machine


def started_twice(service) -> list[dict] | None:  # type: ignore[no-untyped-def]
    """Both `orchestrator_started` lines, once the restart's is written (it follows the start)."""
    starts = service.audit_events(event="orchestrator_started")
    return starts if len(starts) == 2 else None


@pytest.mark.tmuxagent_each_store
def test_a_cooldown_survives_a_restart_of_the_orchestrator(agent_pane, orchestrator_service, wecom_mock) -> None:
    """Stopped and started again (same DB) inside a stall's cooldown, the orchestrator still holds
    the session's next command until `cooldown_until`, and runs it after."""
    pane = agent_pane(SESSION)
    service = orchestrator_service(
        [pane], settings={**STALL, "cooldown_seconds": RESTART_COOLDOWN}, env=wecom_mock.env("webhook")
    )
    stuck = service.send(SESSION, "echo before-restart; sleep 600")
    after = service.send(SESSION, "echo after-restart")
    assert service.wait_result(stuck, timeout=20).status == "stalled"
    [cooldown] = wait_until(lambda: service.audit_events(event="cooldown_started"), timeout=10, message="cooldown")
    stored = service.metadata(SESSION)["cooldown_until"]
    until = parse_iso_utc(stored)

    assert service.stop() == 0
    assert service.metadata(SESSION)["cooldown_until"] == stored  # the stop kept it
    assert service.command(after).status == "queued"
    service.start()
    [_, restarted] = wait_until(lambda: started_twice(service), timeout=10, message="the restart's audit line")
    assert parse_iso_utc(restarted["ts"]) < until, "the restart took longer than the cooldown: nothing was tested"

    row = service.wait_result(after, timeout=RESTART_COOLDOWN + 15)
    assert (row.status, row.output_tail) == ("succeeded", "after-restart")
    assert parse_iso_utc(row.started_at) >= until, f"dispatched at {row.started_at}, inside the cooldown to {stored}"
    events = service.audit_events(session=SESSION)
    [ended] = [e for e in events if e["event"] == "cooldown_ended"]
    assert parse_iso_utc(ended["ts"]) >= until
    [dispatched] = [e for e in events if e["event"] == "command_dispatched" and e["command_id"] == after]
    assert parse_iso_utc(dispatched["ts"]) >= until
    assert service.metadata(SESSION).get("cooldown_until") is None


CHATTY = {
    "progress-lines": "for i in $(seq 1 25); do echo building step $i; sleep 0.1; done",
    "carriage-return-progress-bar": "for i in $(seq 1 25); do printf '\\r[%-25s] %d%%' $(printf '#%.0s' $(seq 1 $i)) $((i*4)); sleep 0.1; done; echo",
}


@pytest.mark.parametrize("command", CHATTY.values(), ids=CHATTY.keys())
def test_a_long_command_that_keeps_printing_is_not_a_stall(command, agent_pane, orchestrator_service) -> None:
    pane = agent_pane(SESSION)
    service = orchestrator_service([pane], settings=STALL)
    row = service.wait_result(service.send(SESSION, command), timeout=20)
    assert row.status == "succeeded" and row.duration_s > STALL["stall_timeout_seconds"] * 2
    assert service.metrics.value("orchestrator_stall_count_total", session=SESSION) == 0.0
    assert not service.audit_events(event="stall_detected")


def test_interrupt_keys_are_configurable_per_session(agent_pane, orchestrator_service, wecom_mock) -> None:
    """A program that ignores Ctrl-C but not Ctrl-\\: the session's keys are what is sent."""
    pane = agent_pane(SESSION)
    service = orchestrator_service(
        [pane],
        settings=STALL,
        env=wecom_mock.env("webhook"),
        session_overrides={SESSION: {"interrupt_keys": ["C-\\"]}},
    )
    stubborn = (
        'python3 -c "import signal,time; signal.signal(signal.SIGINT, signal.SIG_IGN); '
        "print('stubborn ready', flush=True); time.sleep(600)\""
    )
    row = service.wait_result(service.send(SESSION, stubborn), timeout=20)
    assert (row.status, row.exit_code) == ("stalled", 131)  # SIGQUIT ended it: 128 + 3
    assert row.attempts == 1  # not retry-safe: not run again
    [interrupt] = service.audit_events(event="stall_interrupt")
    assert interrupt["detail"] == "sent C-\\"
    assert "命令卡顿" in wecom_mock.wait_for_messages(1)[0]


def test_a_question_is_not_a_stall_and_reply_answers_it(agent_pane, orchestrator_service, wecom_mock) -> None:
    pane = agent_pane(SESSION)
    service = orchestrator_service([pane], settings=STALL, env=wecom_mock.env("webhook"))
    command_id = service.send(SESSION, "read -p 'continue? [y/N] ' answer; echo \"answer=$answer\"")
    wait_until(lambda: service.metadata(SESSION).get("state") == "waiting_input", timeout=15, message="waiting_input")
    [alert] = wecom_mock.wait_for_messages(1, timeout=10)
    assert "需要输入" in alert and SESSION in alert and "continue? [y/N]" in alert
    # three stall timeouts later: still waiting, never interrupted, never counted
    loop_ran(service, rounds=3)
    supervised_for(service, 3 * STALL["stall_timeout_seconds"], "three stall timeouts pass")
    assert service.command(command_id).status == "running"  # type: ignore[union-attr]
    assert not service.audit_events(event="stall_detected")
    assert service.metrics.value("orchestrator_stall_count_total", session=SESSION) == 0.0
    assert sum(line.startswith("continue? [y/N]") for line in pane.capture()) == 1  # asked once, never re-run

    service.cli("reply", SESSION, "--", "y")
    row = service.wait_result(command_id, timeout=15)
    assert (row.status, row.exit_code) == ("succeeded", 0)
    assert row.output_tail.splitlines() == ["continue? [y/N] y", "answer=y"]  # the terminal, as the person saw it
    kinds = [e["event"] for e in service.audit_events(session=SESSION)]
    assert "input_requested" in kinds and "reply_sent" in kinds


def test_a_command_not_marked_retry_safe_runs_once(agent_pane, orchestrator_service, wecom_mock) -> None:
    pane = agent_pane(SESSION)
    service = orchestrator_service([pane], settings=STALL, env=wecom_mock.env("webhook"))
    row = service.wait_result(service.send(SESSION, "echo deploying >> deploys.log; sleep 600"), timeout=20)
    assert (row.status, row.attempts) == ("stalled", 1)
    assert (pane.workdir / "deploys.log").read_text().split() == ["deploying"]
    [alert] = wecom_mock.wait_for_messages(1, timeout=10)
    assert "命令卡顿" in alert
