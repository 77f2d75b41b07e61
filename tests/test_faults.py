"""The fault suite, black-box: the real `tmux-agent-orchestrator` subprocess over real tmux servers
on private sockets, real bash panes, the real WeCom mock over HTTP and the real SQLite state DB.
Each case injects one fault the way it happens in production and checks that no accepted command,
notification or audit event is lost or doubled (issue 13, "the fault suite as tests").

Cases here (the others of the issue live beside the code they test):

1. the tmux server killed mid-command, with the next command queued behind it;
2. a pane closed mid-command (tmux `kill-pane`, or its shell SIGKILLed), next command queued;
3. SIGKILL of the orchestrator mid-command with 5 queued commands, the running command ending
   while the orchestrator is down or after it is back — the plain "SIGKILL with queued work"
   case is `tests/test_service_lifecycle.py::test_sigkill_with_queued_commands_then_restart_loses_none`;
4. WeCom down (connection refused), HTTP 500, errcode 45009 and slower than the request timeout,
   with a restart of the orchestrator while notifications are degraded, then healthy again;
5. 1,000 queued commands.

Timing: nothing sleeps to synchronise. `wait_until` waits for a fact with a deadline, `holds_for`
watches an invariant over a window sized from the configured timeouts, and every test carries a
`timeout` mark (pytest-timeout) as its outer bound.
"""

from __future__ import annotations

import collections
import os
import signal
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from orchestrator.model import TERMINAL_STATUSES
from pytest_tmuxagent import (
    AgentPane,
    AgentPaneFactory,
    Evidence,
    OrchestratorService,
    OrchestratorServiceFactory,
    TmuxTestServer,
    WeComMock,
    wait_until,
)
from tests.test_shell_panes import (
    STALL,
    at_prompt,
    enqueue,
    holds_for,
    pane_pid,
    results_per_command,
    screen,
    session_meta,
    status_of,
)

S = "weather/bot"


def results_landed(service: Any, expected: dict[int, int]) -> None:
    """Exactly `expected` command_result audit lines per command. The audit line follows the DB
    commit of the result, so the last one may land a moment after `wait_result` returned: wait for
    the count to reach it, then check nothing more came."""
    wait_until(lambda: len(results_per_command(service)) >= len(expected), timeout=10, message="the audit lines")
    assert results_per_command(service) == expected


# helpers ---------------------------------------------------------------------------------------
def headers(pane: AgentPane, command_id: int) -> int:
    """How often the pane shows the header of command `command_id` (once per run of it)."""
    return sum(line.startswith(f"▶ #{command_id} ") for line in screen(pane))


def wait_started(service: OrchestratorService, pane: AgentPane, command_id: int) -> None:
    """The command runs in the pane's shell: its row says running and its header is on screen."""
    wait_until(lambda: status_of(service, command_id)[0] == "running", timeout=15, message=f"#{command_id} running")
    wait_until(lambda: headers(pane, command_id) == 1, timeout=15, message=f"#{command_id} started in {pane.target}")


def result_detail(service: OrchestratorService, command_id: int) -> str:
    """The detail of the command's one command_result audit line, which follows the result's DB
    commit and so may land a moment after `wait_result` returned (waited for, then exactly one)."""

    def lines() -> list[dict[str, Any]]:
        return [e for e in service.audit_events(event="command_result") if e["command_id"] == command_id]

    wait_until(lambda: lines() or None, timeout=10, message=f"the command_result audit line of #{command_id}")
    [event] = lines()
    return str(event.get("detail") or "")


def dispatches(service: OrchestratorService, command_id: int) -> int:
    return sum(e["command_id"] == command_id for e in service.audit_events(event="command_dispatched"))


def alive(service: OrchestratorService) -> None:
    assert service.process is not None and service.process.poll() is None, service.log_text()[-2000:]


def db_rows(service: OrchestratorService, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(service.state_db, timeout=10)) as db:
        db.row_factory = sqlite3.Row
        return list(db.execute(sql, params))


def lines_of(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# 5 — 1,000 queued commands (first in the file: the longest case, so an xdist worker starts it first) -
N_COMMANDS = 1000
DEADLINE_SECONDS = 360.0  # a safety bound, not a performance target: the throughput is printed


@pytest.mark.timeout(DEADLINE_SECONDS + 60)
def test_a_thousand_queued_commands_run_in_order_exactly_once(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory, tmuxagent_evidence: Evidence
) -> None:
    pane = agent_pane(S)
    at_prompt(pane)
    service = orchestrator_service([pane], start=False)
    ids = [enqueue(service, S, f"echo {n} >> order.log; echo {n}") for n in range(N_COMMANDS)]
    started = time.monotonic()
    service.start()

    def done() -> int | None:
        marks = ",".join("?" * len(TERMINAL_STATUSES))
        [count] = db_rows(
            service, f"SELECT COUNT(*) AS n FROM commands WHERE status IN ({marks})", (*TERMINAL_STATUSES,)
        )
        return N_COMMANDS if count["n"] == N_COMMANDS else None

    wait_until(done, timeout=DEADLINE_SECONDS, interval=0.5, message=f"{N_COMMANDS} commands done")
    elapsed = time.monotonic() - started
    rate = N_COMMANDS / elapsed
    print(f"\n{N_COMMANDS} commands in {elapsed:.1f}s: {rate:.1f} commands/s")
    tmuxagent_evidence.add("note", "throughput", f"{N_COMMANDS} commands in {elapsed:.1f}s ({rate:.1f}/s)")

    rows = db_rows(service, "SELECT id, status, exit_code, attempts, output_tail, started_at FROM commands ORDER BY id")
    assert [r["id"] for r in rows] == ids
    assert {(r["status"], r["exit_code"], r["attempts"]) for r in rows} == {("succeeded", 0, 1)}
    assert [r["output_tail"] for r in rows] == [str(n) for n in range(N_COMMANDS)]
    assert [r["started_at"] for r in rows] == sorted(r["started_at"] for r in rows)
    assert lines_of(pane.workdir / "order.log") == [str(n) for n in range(N_COMMANDS)]
    wait_until(lambda: len(results_per_command(service)) == N_COMMANDS, timeout=10, message="every command_result")
    assert set(results_per_command(service).values()) == {1}
    dispatched = collections.Counter(e["command_id"] for e in service.audit_events(event="command_dispatched"))
    assert dispatched == {i: 1 for i in ids}


# 1 — the tmux server killed mid-command ----------------------------------------------------------
@pytest.mark.timeout(60)
def test_tmux_server_killed_mid_command_cancels_it_and_keeps_the_next_queued(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory, tmux_server: TmuxTestServer
) -> None:
    pane = agent_pane(S)
    at_prompt(pane)
    service = orchestrator_service([pane])
    long_id = service.send(S, "sleep 60")
    next_id = service.send(S, "echo back >> back.log")
    wait_started(service, pane, long_id)

    tmux_server.kill()
    row = service.wait_result(long_id)
    assert (row.status, row.exit_code) == ("cancelled", None)
    assert "tmux server gone" in result_detail(service, long_id)
    session_meta(service, S, "pane_missing")

    def next_waits() -> None:
        alive(service)
        assert status_of(service, next_id) == ("queued", 0)

    holds_for(STALL, next_waits)

    back = agent_pane(S, workdir=pane.workdir)  # a new server, the same target
    done = service.wait_result(next_id, timeout=20)
    assert (done.status, done.exit_code, done.attempts) == ("succeeded", 0, 1)
    assert lines_of(back.workdir / "back.log") == ["back"]
    results_landed(service, {long_id: 1, next_id: 1})
    session_meta(service, S, "idle")


@pytest.mark.timeout(60)
def test_a_closed_window_never_takes_a_command_into_another_window_of_its_session(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory
) -> None:
    """A person closes the `weather:bot` window while their `weather:logs` window stays open:
    the next command for weather/bot waits for its own pane (pane_missing), it is never typed
    into the window tmux would fall back to."""
    pane = agent_pane(S)
    logs = agent_pane("weather/logs")  # the same tmux session, not supervised
    at_prompt(pane)
    service = orchestrator_service([pane])
    assert service.wait_result(service.send(S, "true")).status == "succeeded"
    pane.kill()
    refused = service.cli("send", S, "--", "echo typed-here > where.txt", check=False)
    assert refused.returncode == 2 and "no tmux pane for target" in refused.stderr  # send checks it too
    next_id = enqueue(service, S, "echo typed-here > where.txt")  # queued before the window closed
    session_meta(service, S, "pane_missing")

    def stays_put() -> None:
        alive(service)
        assert status_of(service, next_id) == ("queued", 0)
        assert not (logs.workdir / "where.txt").exists() and headers(logs, next_id) == 0

    holds_for(STALL, stays_put)


# 2 — a pane closed mid-command -----------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["kill-pane", "shell-sigkill"])
def test_pane_closed_mid_command_cancels_it_and_keeps_the_next_queued(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory, how: str
) -> None:
    """The variant of test_service_lifecycle's `test_pane_closed_mid_command_is_recorded_and_survived`
    with a command queued behind the one that dies, and the session's own pane coming back."""
    pane = agent_pane(S)
    spare = agent_pane("spare/pane")  # keeps the tmux server up when the pane goes
    at_prompt(pane)
    service = orchestrator_service([pane, spare])
    long_id = service.send(S, "sleep 60")
    next_id = service.send(S, "echo back >> back.log")
    wait_started(service, pane, long_id)

    if how == "kill-pane":
        pane.kill()
    else:
        os.kill(pane_pid(pane), signal.SIGKILL)
    row = service.wait_result(long_id)
    assert (row.status, row.exit_code) == ("cancelled", None)
    assert "pane closed" in result_detail(service, long_id)
    session_meta(service, S, "pane_missing")
    spare_id = service.send("spare/pane", "true")
    assert service.wait_result(spare_id).status == "succeeded"  # the other session carries on
    assert status_of(service, next_id) == ("queued", 0)
    alive(service)

    back = agent_pane(S, workdir=pane.workdir)
    assert back.target == pane.target
    done = service.wait_result(next_id, timeout=20)
    assert (done.status, done.attempts) == ("succeeded", 1)
    assert lines_of(back.workdir / "back.log") == ["back"]
    results_landed(service, {long_id: 1, next_id: 1, spare_id: 1})


# 3 — SIGKILL of the orchestrator mid-command, 5 queued behind it ----------------------------------
@pytest.mark.timeout(90)
@pytest.mark.parametrize("ends", ["while_down", "after_restart"])
def test_sigkill_mid_command_with_five_queued_then_restart_runs_each_once(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory, ends: str
) -> None:
    """The running command is held on a gate file, so the SIGKILL lands while it runs, and it ends
    (exit 7) either while the orchestrator is down or after the restart. Either way it is not typed
    again, its exit code is the one recorded, and the five queued behind it run in order, once."""
    pane = agent_pane(S)
    at_prompt(pane)
    service = orchestrator_service([pane], settings={"stall_timeout_seconds": 60})  # the gate is quiet
    gate, ran = pane.workdir / "gate", pane.workdir / "ran.log"
    mid = service.send(S, "until [ -e gate ]; do sleep 0.05; done; echo mid-done >> ran.log; echo mid-out; (exit 7)")
    queued = [service.send(S, f"echo q-{i} >> ran.log") for i in range(5)]
    wait_started(service, pane, mid)
    service.kill()
    assert [status_of(service, i) for i in queued] == [("queued", 0)] * 5

    if ends == "while_down":
        gate.touch()
        wait_until(lambda: lines_of(ran) == ["mid-done"], timeout=10, message="the command ends while nobody watches")
        at_prompt(pane)
        assert status_of(service, mid) == ("running", 1)  # nobody recorded it yet
        service.start()
    else:
        service.start()
        wait_until(lambda: service.audit_events(event="command_recovered"), timeout=15)

        def waits() -> None:
            assert status_of(service, mid) == ("running", 1)
            assert [status_of(service, i) for i in queued] == [("queued", 0)] * 5
            assert lines_of(ran) == []

        holds_for(1.5, waits)  # longer than a liveness round and the never-started grace
        gate.touch()

    [recovered] = wait_until(lambda: service.audit_events(event="command_recovered"), timeout=15)
    assert recovered["command_id"] == mid and "re-queued" not in str(recovered.get("detail"))
    row = service.wait_result(mid, timeout=20)
    assert (row.status, row.exit_code, row.output_tail) == ("failed", 7, "mid-out")
    rows = [service.wait_result(i, timeout=20) for i in queued]
    assert [(r.status, r.attempts) for r in rows] == [("succeeded", 1)] * 5
    assert lines_of(ran) == ["mid-done"] + [f"q-{i}" for i in range(5)]
    results_landed(service, {i: 1 for i in [mid, *queued]})
    assert dispatches(service, mid) == 1  # typed once, before the kill; never again
    wait_until(lambda: headers(pane, queued[-1]) == 1, timeout=10)
    assert [headers(pane, i) for i in [mid, *queued]] == [1] * 6


# 4 — WeCom degraded, a restart while degraded, then healthy -----------------------------------------
NOTIFY_SETTINGS: dict[str, Any] = {
    "failure_alert_threshold": 1,  # every failed command raises one 命令连续失败 alert
    "notifications": {
        "retry_backoff_seconds": 0.05,
        "rate_limit_backoff_seconds": 0.3,
        "request_timeout_seconds": 0.5,
        "env_reload_seconds": 0.2,
    },
}
SLOW_SECONDS = 1.5  # the mock's "slow" reply: three request timeouts


def outbox(service: OrchestratorService) -> list[sqlite3.Row]:
    return db_rows(service, "SELECT id, status, attempts, last_error, body FROM outbox ORDER BY id")


def outbox_row(service: OrchestratorService, tag: str) -> sqlite3.Row | None:
    return next((r for r in outbox(service) if tag in r["body"]), None)


def raise_alert(service: OrchestratorService, tag: str) -> None:
    """A failed command: the failure-streak guard blocks the session and queues one alert."""
    row = service.wait_result(service.send(S, f"echo {tag}; (exit 1)"))
    assert (row.status, row.exit_code) == ("failed", 1)
    wait_until(lambda: outbox_row(service, tag), timeout=10, message=f"the alert for {tag} in the outbox")
    service.cli("unblock", S)


def failed_attempt(service: OrchestratorService, tag: str) -> sqlite3.Row:
    def failed() -> sqlite3.Row | None:
        row = outbox_row(service, tag)
        return row if row and row["status"] == "pending" and row["attempts"] >= 1 and row["last_error"] else None

    found: sqlite3.Row = wait_until(failed, timeout=15, message=f"a failed attempt at {tag}; {outbox(service)}")
    return found


def degraded(service: OrchestratorService) -> dict[str, Any] | None:
    health: dict[str, Any] = service.status()["notifications"]
    return health if health.get("state") == "degraded" else None


def deliveries(wecom_mock: WeComMock, tag: str) -> tuple[int, int]:
    """(deliveries of requests the mock answered cleanly, deliveries of requests it answered late)."""
    delivered = [r for r in wecom_mock.requests if r.message is not None and tag in r.message]
    return sum(r.fault is None for r in delivered), sum(r.fault == "slow" for r in delivered)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", ["refuse", "http_500", "rate_limit", "slow"])
def test_wecom_degraded_then_healthy_with_a_restart_delivers_every_alert_once(
    agent_pane: AgentPaneFactory,
    orchestrator_service: OrchestratorServiceFactory,
    wecom_mock: WeComMock,
    tmuxagent_evidence: Evidence,
    fault: str,
) -> None:
    """Two alerts are raised while WeCom is failing, the orchestrator is restarted (SIGTERM) while
    notifications are degraded, a third alert is raised after the restart, then WeCom heals: each
    alert reaches WeCom exactly once from a clean reply. With `slow`, a reply later than the
    request timeout counts as failed and is sent again, so WeCom (which had taken the late one)
    holds extra copies, one per timed-out attempt: delivery is at-least-once there, never lost."""
    wecom_mock.slow_seconds = SLOW_SECONDS
    wecom_mock.set_mode(fault)
    pane = agent_pane(S)
    service = orchestrator_service([pane], settings=NOTIFY_SETTINGS, env=wecom_mock.env("webhook"))
    tags = ["alert-one", "alert-two", "alert-three"]

    for tag in tags[:2]:
        raise_alert(service, tag)
    errors = [failed_attempt(service, tag)["last_error"] for tag in tags[:2]]
    expected = {"refuse": "network", "http_500": "HTTP 500", "rate_limit": "45009", "slow": "timeout"}[fault]
    assert all(expected in e for e in errors), errors
    health = wait_until(lambda: degraded(service), timeout=10, message="notifications degraded in status --json")
    assert health["pending"] >= 2 and expected in health["reason"], health
    assert [deliveries(wecom_mock, tag)[0] for tag in tags[:2]] == [0, 0]

    assert service.stop() == 0
    service.start()
    assert [r["status"] for r in outbox(service)] == ["pending", "pending"]  # kept over the restart
    raise_alert(service, tags[2])
    failed_attempt(service, tags[2])
    alive(service)

    wecom_mock.reset()
    wait_until(
        lambda: [r["status"] for r in outbox(service)] == ["sent"] * 3,
        timeout=30,
        message=f"every alert sent; outbox {[dict(r) for r in outbox(service)]}",
    )
    wait_until(lambda: all(r.status is not None for r in wecom_mock.requests), timeout=10, message="late replies")
    counts = {tag: deliveries(wecom_mock, tag) for tag in tags}
    tmuxagent_evidence.add("note", f"WeCom {fault}: (clean, late) deliveries per alert", repr(counts))
    assert [clean for clean, _ in counts.values()] == [1, 1, 1], counts
    if fault != "slow":
        assert [late for _, late in counts.values()] == [0, 0, 0], counts
    assert all(r["attempts"] >= 2 for r in outbox(service))  # one failure at least, then the success
    assert len(service.audit_events(event="notification_sent")) == 3
    assert len(service.audit_events(event="notification_queued")) == 3
    assert service.audit_events(event="notifications_recovered")
    wait_until(lambda: service.status()["notifications"].get("state") == "ok", timeout=10)
