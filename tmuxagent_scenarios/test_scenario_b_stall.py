"""Scenario B (卡顿检测与自愈): `sleep 600` stalls; the orchestrator interrupts and
retries it, then ends it `stalled`, sends "命令卡顿", cools the session down, and
runs the next command after the cooldown. A chatty long command is not a stall.
"""

from __future__ import annotations

import pytest

from orchestrator.clock import parse_iso_utc

pytestmark = pytest.mark.scenario_b

SESSION = "weather/bot"
STALL = {
    "stall_timeout_seconds": 1,
    "stall_retries_before_notify": 1,
    "cooldown_seconds": 2,
    "interrupt_grace_seconds": 0.5,
}


def test_stalled_command_is_healed_alerted_and_cooled_down(agent_pane, orchestrator_service, wecom_mock) -> None:
    pane = agent_pane(SESSION)
    service = orchestrator_service([pane], settings=STALL, env=wecom_mock.env("webhook"))
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
    until = parse_iso_utc(cooldown["detail"].rsplit(" until ", 1)[1])
    assert until - parse_iso_utc(cooldown["ts"]) == pytest.approx(STALL["cooldown_seconds"], abs=0.5)
    assert "cooldown_ended" in kinds
    # nothing was dispatched inside the cooldown
    assert parse_iso_utc(nxt.started_at) >= until
    dispatched_during = [
        e
        for e in events
        if e["event"] == "command_dispatched" and parse_iso_utc(cooldown["ts"]) <= parse_iso_utc(e["ts"]) < until
    ]
    assert dispatched_during == []


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
    """An agent TUI that ignores Ctrl-C but leaves on Escape: the session's keys are what is sent."""
    pane = agent_pane(SESSION)
    service = orchestrator_service(
        [pane],
        settings={**STALL, "stall_retries_before_notify": 0},
        env=wecom_mock.env("webhook"),
        session_overrides={SESSION: {"interrupt_keys": ["Escape"]}},
    )
    tui = (
        'python3 -c "import signal,sys,termios,tty; signal.signal(signal.SIGINT, signal.SIG_IGN); '
        "print('agent tui ready', flush=True); tty.setcbreak(0); key = sys.stdin.read(1); "
        "print('agent got', 'ESC' if key == chr(27) else repr(key))\""
    )
    row = service.wait_result(service.send(SESSION, tui), timeout=20)
    assert row.status == "stalled" and row.exit_code == 0  # it left by itself when Escape arrived
    assert row.output_tail.endswith("agent got ESC")
    [interrupt] = service.audit_events(event="stall_interrupt")
    assert interrupt["detail"] == "sent Escape"
    assert "命令卡顿" in wecom_mock.wait_for_messages(1)[0]
