"""The real orchestrator process: restarts lose nothing, signals stop it cleanly,
dry-run sends nothing, and faults (pane closed, tmux gone) are survived."""

from __future__ import annotations

import collections
import signal

from orchestrator.model import TERMINAL_STATUSES
from pytest_tmuxagent.waiting import wait_until
from tests.test_metrics_promtool import promtool_check

SESSION = "weather/bot"


def test_sigkill_with_queued_commands_then_restart_loses_none(agent_pane, orchestrator_service) -> None:
    pane = agent_pane(SESSION)
    service = orchestrator_service([pane], start=False)
    ids = [service.send(SESSION, f"sleep 0.5; echo run-{i} >> ran.log") for i in range(5)]
    service.start()
    wait_until(lambda: service.command(ids[1]).status == "running", timeout=15, message="second command never ran")
    service.kill()
    assert sum(service.command(i).status in TERMINAL_STATUSES for i in ids) < len(ids)

    service.start()
    rows = [service.wait_result(i) for i in ids]
    assert [r.status for r in rows] == ["succeeded"] * 5
    assert (pane.workdir / "ran.log").read_text().split() == [f"run-{i}" for i in range(5)]
    results = collections.Counter(e["command_id"] for e in service.audit_events(event="command_result"))
    assert results == {i: 1 for i in ids}


def test_sigterm_stops_cleanly(agent_pane, orchestrator_service) -> None:
    service = orchestrator_service([agent_pane(SESSION)])
    assert service.stop(signal.SIGTERM) == 0
    assert service.audit_events()[-1]["event"] == "orchestrator_stopped"


def test_dry_run_records_and_sends_nothing(agent_pane, orchestrator_service) -> None:
    pane = agent_pane(SESSION)
    service = orchestrator_service([pane], start_args=("--dry-run",))
    command_id = service.send(SESSION, "touch dry-run-was-here")
    wait_until(lambda: service.audit_events(event="dry_run_dispatch"), timeout=10)
    assert service.command(command_id).status == "queued"
    assert not (pane.workdir / "dry-run-was-here").exists()
    assert not any("dry-run-was-here" in line for line in pane.capture())


def test_once_drains_the_queue_and_exits(agent_pane, orchestrator_service) -> None:
    pane = agent_pane(SESSION)
    service = orchestrator_service([pane], start=False)
    ids = [service.send(SESSION, "echo one"), service.send(SESSION, "false")]
    service.start("--once", wait=False)
    assert service.process.wait(timeout=20) == 0
    assert [service.command(i).status for i in ids] == ["succeeded", "failed"]


def test_pane_closed_mid_command_is_recorded_and_survived(agent_pane, orchestrator_service) -> None:
    pane = agent_pane(SESSION)
    spare = agent_pane("spare/pane")
    service = orchestrator_service([pane, spare])
    long_id = service.send(SESSION, "sleep 60")
    wait_until(lambda: service.command(long_id).status == "running", timeout=10)
    wait_until(lambda: any("sleep 60" in line or "cmd-" in line for line in pane.capture()), timeout=10)
    pane.kill()
    row = service.wait_result(long_id)
    assert (row.status, row.exit_code) == ("cancelled", None)
    assert service.process.poll() is None
    assert service.wait_result(service.send("spare/pane", "true")).status == "succeeded"


def test_tmux_server_gone_keeps_commands_queued(agent_pane, orchestrator_service, tmux_server) -> None:
    pane = agent_pane(SESSION)
    service = orchestrator_service([pane])
    # the metrics endpoint is up before the supervisor has looked at its panes: let it look first
    wait_until(lambda: service.audit_events(event="orchestrator_started"), timeout=10)
    tmux_server.kill()
    command_id = _enqueue_direct(service)
    wait_until(lambda: service.audit_events(event="dispatch_failed"), timeout=10)
    assert service.process.poll() is None
    assert service.command(command_id).status == "queued"
    assert len(service.audit_events(event="dispatch_failed")) == 1  # said once, not every poll


def _enqueue_direct(service) -> int:
    """`tmux-agent send` checks the pane; with the server gone, queue straight into the DB."""
    store = service.store()
    try:
        return store.enqueue(SESSION, "true")
    finally:
        store.close()


def test_live_metrics_pass_promtool(agent_pane, orchestrator_service) -> None:
    service = orchestrator_service([agent_pane(SESSION)])
    service.wait_result(service.send(SESSION, "false"))
    text = service.metrics.scrape().text
    assert "orchestrator_heartbeat_timestamp_seconds" in text
    result = promtool_check(text.encode())
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_secret_typed_into_a_command_is_masked_everywhere(agent_pane, orchestrator_service) -> None:
    secret = "app-secret-value-123456"
    service = orchestrator_service([agent_pane(SESSION)], env={"WECOM_APP_SECRET": secret})
    row = service.wait_result(service.send(SESSION, f"echo token={secret} plain {secret}"))
    assert secret not in row.output_tail and "***" in row.output_tail
    assert secret not in service.audit_log.read_text()
    assert service.leaked_secrets() == []


def test_the_leak_detector_itself_finds_a_leak(agent_pane, orchestrator_service) -> None:
    service = orchestrator_service([agent_pane(SESSION)], env={"OPENAI_API_KEY": "sk-leaky-0123456789"})
    with service.service_log.open("a") as log:
        log.write("oops sk-leaky-0123456789\n")
    assert service.leaked_secrets() == ["sk-… in orchestrator.stderr.log"]
    service.service_log.write_text("")  # keep the fixture's own teardown check green
