"""A fleet on PostgreSQL, end to end: real orchestrator processes as hosts, each with its own
tmux server, one shared real PostgreSQL database (issue 17).

Commands queued at once from another process (the "laptop") each run exactly once, on the host
that supervises their session; a host killed with SIGKILL raises exactly one `主机失联`; a
session that a live host already supervises is refused to a second host with one line."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli.doctor_fleet import check_fleet_db
from orchestrator.config import load_config
from orchestrator.dashboard.state import build_state
from orchestrator.state.pg_snapshot import PgSnapshot
from orchestrator.state.pg_store import PgStateStore
from pytest_tmuxagent.dashboard import DashboardServerFactory
from pytest_tmuxagent.service import OrchestratorService, cli_path
from pytest_tmuxagent.waiting import wait_until

from .fleet_rig import (
    FLEET_SETTINGS,
    HOSTS,
    events,
    fleet_states,
    fleet_status,
    laptop_config,
    running_fleet,
    tmux_agent,
)

PER_SESSION = 100  # 300 commands in all


@pytest.fixture
def fleet(tmp_path: Path, postgres_dsn: str, tmuxagent_settings: dict[str, Any]) -> Iterator[list[OrchestratorService]]:
    with running_fleet(tmp_path, dict.fromkeys(HOSTS, postgres_dsn), tmuxagent_settings) as services:
        yield services


def _rows(store: PgStateStore) -> list[dict[str, Any]]:
    return store.query("SELECT id, session, status, attempts, exit_code FROM commands ORDER BY id")


def _settled(store: PgStateStore) -> bool:
    return all(r["status"] not in ("queued", "running") for r in _rows(store))


def test_commands_queued_at_once_from_another_process_run_once_each_on_their_own_host(
    fleet: list[OrchestratorService], postgres_dsn: str
) -> None:
    laptop = PgStateStore(postgres_dsn)
    try:
        # every host claimed its own session before this
        assert dict(laptop.query("SELECT name, host FROM sessions ORDER BY name")[0]) == {
            "name": "h1/job",
            "host": "h1",
        }
        assert {r["name"]: r["host"] for r in laptop.query("SELECT name, host FROM sessions")} == {
            f"{h}/job": h for h in HOSTS
        }
        for index in range(PER_SESSION):
            for host in HOSTS:
                laptop.enqueue(f"{host}/job", f"echo {host}-{index}")
        wait_until(
            lambda: _settled(laptop),
            timeout=120,
            message="the fleet did not finish its 300 commands",
        )
        rows = _rows(laptop)
        assert len(rows) == PER_SESSION * len(HOSTS)
        assert {(r["status"], r["attempts"], r["exit_code"]) for r in rows} == {("succeeded", 1, 0)}
        for service, host in zip(fleet, HOSTS, strict=True):
            dispatched = [e for e in events(service) if e["event"] == "command_dispatched"]
            assert len(dispatched) == PER_SESSION and {e["session"] for e in dispatched} == {f"{host}/job"}
    finally:
        laptop.close()


def test_a_killed_host_raises_one_host_down_and_resumes_its_queue_after_restart(
    fleet: list[OrchestratorService], postgres_dsn: str, tmp_path: Path
) -> None:
    laptop = PgStateStore(postgres_dsn)
    # a machine whose config names the fleet's database and no session: it sees them all
    elsewhere = laptop_config(tmp_path, postgres_dsn, sessions=[])
    try:
        fleet[1].kill()
        queued = laptop.enqueue("h2/job", "echo after-restart")

        def host_down_messages() -> list[dict[str, Any]]:
            return laptop.query("SELECT title FROM outbox WHERE kind='host_down'")

        wait_until(lambda: host_down_messages(), timeout=20, message="no 主机失联 for the killed host")
        wait_until(  # both live hosts had time to notice it too
            lambda: all(
                r["age_s"] < 1.0
                for r in laptop.query(
                    "SELECT EXTRACT(EPOCH FROM clock_timestamp() - heartbeat_at)::float8 AS age_s FROM hosts "
                    "WHERE name IN ('h1', 'h3')"
                )
            ),
            timeout=10,
            message="live hosts stopped beating",
        )
        assert host_down_messages() == [{"title": "主机失联 · h2"}]
        noticed = [e["host"] for s in (fleet[0], fleet[2]) for e in events(s) if e["event"] == "host_down"]
        assert noticed == ["h2"]
        assert laptop.command(queued).status == "queued"  # type: ignore[union-attr]
        states = fleet_states(elsewhere)
        assert {name: state for name, (state, _) in states.items()} == {
            "h1/job": "idle",
            "h2/job": "host_down",
            "h3/job": "idle",
        }
        assert states["h2/job"][1].startswith("host h2 has sent no heartbeat for ")
        snapshot = PgSnapshot(postgres_dsn)  # and the dashboard's view says the same
        try:
            cards = {s["name"]: s["state"] for s in build_state(snapshot, fleet[0].audit_log)["sessions"]}
        finally:
            snapshot.close()
        assert cards == {"h1/job": "idle", "h2/job": "host_down", "h3/job": "idle"}
        checked = check_fleet_db(load_config(elsewhere), postgres_dsn)  # `tmux-agent doctor`'s line
        assert checked.ok and checked.warn and "h2 DOWN" in checked.seen and "h1 up" in checked.seen
        assert "restart tmux-agent-orchestrator on h2" in checked.line()
        # every live host reports the silent one, and every series it serves names the server
        for service, host in ((fleet[0], "h1"), (fleet[2], "h3")):
            assert service.metrics is not None
            service.metrics.wait_until_value("orchestrator_fleet_host_down", 1, timeout=10, peer_host="h2")
            scraped = service.metrics.scrape()
            assert {s.labels.get("host") for s in scraped.all_samples} == {host}
            assert scraped.value("orchestrator_fleet_host_down", peer_host=host) == 0
        fleet[1].start()
        wait_until(
            lambda: laptop.command(queued).status == "succeeded",  # type: ignore[union-attr]
            timeout=20,
            message="the restarted host did not run its queue",
        )
        assert any(e["event"] == "host_back" for e in events(fleet[1]))
        assert laptop.query("SELECT down_since FROM hosts WHERE name='h2'") == [{"down_since": None}]
        assert fleet_states(elsewhere)["h2/job"][0] != "host_down"
        assert fleet[0].metrics is not None
        fleet[0].metrics.wait_until_value("orchestrator_fleet_host_down", 0, timeout=10, peer_host="h2")
    finally:
        laptop.close()


def test_a_session_a_live_host_supervises_is_refused_to_another_host(
    fleet: list[OrchestratorService], tmp_path: Path, postgres_dsn: str, tmuxagent_settings: dict[str, Any]
) -> None:
    intruder = OrchestratorService(
        root=tmp_path / "intruder",
        tmux=fleet[0].tmux,
        panes=fleet[0].panes,
        settings=FLEET_SETTINGS,
        base_settings=dict(tmuxagent_settings),
        state_dsn=postgres_dsn,
        host="h9",
    )
    done = subprocess.run(
        [cli_path("tmux-agent-orchestrator"), "--config", str(intruder.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "session h1/job is supervised by host h1" in lines[0], done.stderr
    assert str(intruder.config_path) in lines[0]


def test_send_and_status_from_a_machine_with_no_tmux_of_its_own_reach_the_owning_host(
    fleet: list[OrchestratorService], tmp_path: Path, postgres_dsn: str
) -> None:
    # its config names no session: `send` finds h3/job, and its host, in the fleet's database
    config = laptop_config(tmp_path, postgres_dsn, sessions=[])
    laptop = config.parent
    sent = tmux_agent(config, "send", "h3/job", "--", "echo", "from-laptop")
    assert sent.returncode == 0, sent.stderr
    command_id = int(sent.stdout.strip())
    store = PgStateStore(postgres_dsn)
    try:
        row = wait_until(
            lambda: (r := store.command(command_id)) and r.status == "succeeded" and r,
            timeout=20,
            message="h3 did not run the laptop's command",
        )
        assert "from-laptop" in (row.output_tail or "")
    finally:
        store.close()
    sessions = {s["name"]: s for s in fleet_status(config)}
    assert {name: s["host"] for name, s in sessions.items()} == {f"{h}/job": h for h in HOSTS}
    assert sessions["h3/job"]["metadata"]["last_command_result"]["command_id"] == command_id
    assert sessions["h3/job"]["target"] == fleet[2].panes[0].target
    # the other commands that answer a session reach it the same way
    unblocked = tmux_agent(config, "unblock", "h3/job")
    assert unblocked.returncode == 0 and unblocked.stdout.strip() == "h3/job unblocked", unblocked.stderr
    refused = tmux_agent(config, "reply", "h3/job", "--", "yes")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "h3/job is idle, not waiting_input" in refused.stderr  # h3's state, read from the fleet's database
    assert not (laptop / ".tmuxagent" / "fleet" / "laptop" / "state").exists()  # no SQLite file stood in for the fleet


def test_the_whole_fleet_in_one_dashboard_and_one_replay_of_every_hosts_log(
    fleet: list[OrchestratorService],
    tmp_path: Path,
    postgres_dsn: str,
    tmuxagent_dashboard_server: DashboardServerFactory,
) -> None:
    config = laptop_config(tmp_path, postgres_dsn, sessions=[])
    for host, command in (("h1", "true"), ("h2", "(exit 3)"), ("h3", "echo three")):
        sent = tmux_agent(config, "send", f"{host}/job", "--", command)
        assert sent.returncode == 0, sent.stderr
    store = PgStateStore(postgres_dsn)
    try:
        wait_until(lambda: len(_rows(store)) == 3 and _settled(store), timeout=20, message="the fleet idle")
    finally:
        store.close()
    dashboard = tmuxagent_dashboard_server(tmp_path / "no.db", fleet[0].audit_log, dsn=postgres_dsn)
    state = dashboard.json("/api/state")
    assert state["error"] is None and state["db"].startswith("postgresql://")
    shown = {s["name"]: (s["host"], s["last_command_result"]["status"]) for s in state["sessions"]}
    assert shown == {"h1/job": ("h1", "succeeded"), "h2/job": ("h2", "failed"), "h3/job": ("h3", "succeeded")}

    # the fleet's story: every host's log and the laptop's (its `command_queued` lines), as one
    logs = [str(s.audit_log) for s in fleet] + [str(load_config(config).audit_log)]

    def replay(*chosen: str) -> subprocess.CompletedProcess[str]:
        argv = [cli_path("tmux-agent-orchestrator-replay"), "--dsn", postgres_dsn, "--json"]
        return subprocess.run([*argv, *(a for log in chosen for a in ("--log", log))], capture_output=True, text=True)

    whole = replay(*logs)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    summary = json.loads(whole.stdout)
    assert summary["verify"]["ok"] is True and summary["log"] == logs
    assert summary["commands"]["results"] == {"succeeded": 2, "failed": 1}
    # one host's log left out: the DB holds what no log accounts for, and the check says so
    partial = replay(*logs[:1], *logs[2:])
    assert partial.returncode == 1 and "h2/job" in partial.stdout
