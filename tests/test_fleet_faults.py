"""A fleet on PostgreSQL under faults (issue 17): the database server restarted mid-run, and one
host cut off from the database while it keeps running (a network partition, made by a
`SocketGate` on that host's connections). Nothing already queued is lost or run twice; the
hosts reconnect on their own; the cut-off host is `主机失联` once and runs its queue once the
link is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli.doctor_fleet import check_fleet_db
from orchestrator.config import load_config
from orchestrator.state.pg_store import PgStateStore
from pytest_tmuxagent.postgres import PostgresServer
from pytest_tmuxagent.service import OrchestratorService
from pytest_tmuxagent.socket_gate import SocketGate, gate_folder
from pytest_tmuxagent.waiting import wait_until

from .fleet_rig import HOSTS, events, laptop_config, running_fleet

PER_SESSION = 30


@pytest.fixture
def laptop(postgres_dsn: str) -> Iterator[PgStateStore]:
    store = PgStateStore(postgres_dsn)
    try:
        yield store
    finally:
        store.close()


def _statuses(store: PgStateStore) -> list[dict[str, Any]]:
    return store.query("SELECT id, session, status, attempts FROM commands ORDER BY id")


def _settled(store: PgStateStore) -> int:
    return sum(r["status"] not in ("queued", "running") for r in _statuses(store))


def _db_errors(service: OrchestratorService) -> float:
    assert service.metrics is not None
    scraped = service.metrics.scrape()
    return sum(s.value for s in scraped.samples("orchestrator_state_db_errors_total"))


def test_a_postgres_restart_mid_run_loses_no_command_and_runs_none_twice(
    tmp_path: Path,
    postgres_dsn: str,
    tmuxagent_postgres: PostgresServer,
    tmuxagent_settings: dict[str, Any],
    laptop: PgStateStore,
) -> None:
    with running_fleet(tmp_path, dict.fromkeys(HOSTS, postgres_dsn), tmuxagent_settings) as fleet:
        queued = [laptop.enqueue(f"{h}/job", f"sleep 0.05; echo {h}-{i}") for i in range(PER_SESSION) for h in HOSTS]
        wait_until(lambda: _settled(laptop) >= len(queued) // 4, timeout=60, message="the fleet started no work")
        tmuxagent_postgres.restart()  # every connection of every host (and of this test) is cut
        assert _settled(laptop) < len(queued), "the restart came after the run, not in it"
        wait_until(
            lambda: _settled(laptop) == len(queued), timeout=120, message="the fleet did not finish after the restart"
        )
        rows = _statuses(laptop)
        assert [r["id"] for r in rows] == queued
        assert {(r["status"], r["attempts"]) for r in rows} == {("succeeded", 1)}
        for service, host in zip(fleet, HOSTS, strict=True):
            assert service.process is not None and service.process.poll() is None, f"{host} died"
            dispatched = [e["command_id"] for e in events(service) if e["event"] == "command_dispatched"]
            mine = [r["id"] for r in rows if r["session"] == f"{host}/job"]
            missing = set(mine) - set(dispatched)
            told = [e for e in events(service) if e.get("command_id") in missing]
            assert sorted(dispatched) == mine, (told, service.log_text()[-3000:])
        assert sum(_db_errors(s) for s in fleet) >= 1  # the hosts met the restart and counted it
        # each host listens again: a command queued now is run at once
        again = laptop.enqueue("h2/job", "echo after")
        wait_until(lambda: laptop.command(again).status == "succeeded", timeout=15, message="h2 deaf after restart")  # type: ignore[union-attr]


def test_a_host_cut_off_from_the_database_is_host_down_once_and_runs_its_queue_when_back(
    tmp_path: Path,
    postgres_dsn: str,
    tmuxagent_postgres: PostgresServer,
    tmuxagent_settings: dict[str, Any],
    laptop: PgStateStore,
) -> None:
    folder = gate_folder()
    gate = SocketGate(folder / tmuxagent_postgres.socket_file.name, tmuxagent_postgres.socket_file).start()
    dsns = {"h1": postgres_dsn, "h2": tmuxagent_postgres.routed(postgres_dsn, folder), "h3": postgres_dsn}
    try:
        with running_fleet(tmp_path, dsns, tmuxagent_settings) as fleet:
            before = laptop.enqueue("h2/job", "echo before")
            wait_until(lambda: laptop.command(before).status == "succeeded", timeout=15, message="h2 idle")  # type: ignore[union-attr]
            gate.cut()
            during = laptop.enqueue("h2/job", "echo during-partition")

            def host_down() -> list[dict[str, Any]]:
                return laptop.query("SELECT title FROM outbox WHERE kind='host_down'")

            wait_until(host_down, timeout=20, message="no 主机失联 for the cut-off host")
            assert fleet[1].process is not None and fleet[1].process.poll() is None  # it runs, unheard
            assert laptop.command(during).status == "queued"  # type: ignore[union-attr]
            gate.heal()
            wait_until(
                lambda: laptop.command(during).status == "succeeded",  # type: ignore[union-attr]
                timeout=30,
                message="h2 did not run its queue once the link was back",
            )
            assert laptop.command(during).attempts == 1  # type: ignore[union-attr]
            assert host_down() == [{"title": "主机失联 · h2"}]
            # its next beat ends the episode (the queue may run first: the listener wakes the loop)
            wait_until(
                lambda: any(e["event"] == "host_back" for e in events(fleet[1])),
                timeout=10,
                message="h2 did not beat again (host_back)",
            )
            assert _db_errors(fleet[1]) >= 1  # h2 counted the refused writes
            assert laptop.query("SELECT down_since FROM hosts WHERE name='h2'") == [{"down_since": None}]
    finally:
        gate.close()


def test_doctor_names_an_unreachable_fleet_database_in_one_failed_line(tmp_path: Path) -> None:
    config = laptop_config(tmp_path, "host=/nonexistent-socket-folder dbname=fleet connect_timeout=2", sessions=[])
    checked = check_fleet_db(load_config(config), "host=/nonexistent-socket-folder dbname=fleet connect_timeout=2")
    assert not checked.ok and "postgresql://" in checked.seen and "pg_hba.conf" in checked.line()
    assert len(checked.line().splitlines()) == 1
