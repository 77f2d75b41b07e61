"""The fleet's watch, one per orchestrator on a shared (PostgreSQL) state database: it writes
this host's heartbeat, and it notices the hosts whose heartbeat has stopped.

A host whose heartbeat is older than `host_down_seconds` is `host_down`: one `主机失联 · HOST`
notification and one `host_down` audit line per episode, from whichever live orchestrator
claims the episode first in the database (the claim is one conditional UPDATE, so two hosts
noticing at once send it once). The episode ends when that host beats again (`host_back`, in its
own audit log). A ticker on the engine's thread: a host whose loop is stuck stops beating too,
which is what its peers should hear.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from orchestrator.clock import Clock
from orchestrator.ports import Notify
from orchestrator.state.audit import AuditLog
from orchestrator.state.db_faults import StateDBError

log = logging.getLogger("orchestrator.fleet")

HOST_DOWN_TITLE = "主机失联"


class HostSeen(Protocol):
    """One host's row (`orchestrator.state.pg_fleet.HostRow`)."""

    @property
    def name(self) -> str: ...
    @property
    def age_s(self) -> float: ...
    @property
    def down_since(self) -> datetime | None: ...


class FleetRecords(Protocol):
    """The fleet's records (`orchestrator.state.pg_fleet.PgFleet` is one)."""

    host: str

    def beat(self) -> bool: ...

    def claim_down(self, older_than_s: float) -> list[str]: ...

    def hosts(self) -> Sequence[HostSeen]: ...


class FleetGauges(Protocol):
    """Where the fleet's heartbeats go (`OrchestratorMetrics.report_hosts`)."""

    def report_hosts(self, hosts: Mapping[str, tuple[float, bool]]) -> None: ...


class HostWatch:
    def __init__(
        self,
        fleet: FleetRecords,
        *,
        clock: Clock,
        down_after_s: float,
        audit: AuditLog,
        notify: Notify,
        gauges: FleetGauges | None = None,
    ) -> None:
        self.fleet = fleet
        self.clock = clock
        self.down_after_s = down_after_s
        # a few beats within the age that means down, so one late round does not raise an alarm
        self.beat_every_s = min(2.0, down_after_s / 4)
        self.audit = audit
        self.notify = notify
        self.gauges = gauges
        self._next = float("-inf")

    def tick(self) -> None:
        now = self.clock.monotonic()
        if now < self._next:
            return
        self._next = now + self.beat_every_s
        try:
            if self.fleet.beat():
                log.info("host %s beats again: its host_down episode is over", self.fleet.host)
                self.audit.record("host_back", None, host=self.fleet.host)
            for host in self.fleet.claim_down(self.down_after_s):
                self._host_down(host)
            if self.gauges is not None:
                self.gauges.report_hosts({h.name: (h.age_s, h.down_since is not None) for h in self.fleet.hosts()})
        except StateDBError as exc:  # counted by the store; the next tick tries again
            log.warning("fleet heartbeat not written: %s", exc)

    def _host_down(self, host: str) -> None:
        log.warning("host %s has not beaten for over %.0f s: host_down", host, self.down_after_s)
        self.audit.record("host_down", None, host=host, detail=f"no heartbeat for over {self.down_after_s:g} s")
        self.notify.notify(
            kind="host_down",
            session=None,
            title=f"{HOST_DOWN_TITLE} · {host}",
            body=(
                f"主机 {host} 的 orchestrator 已超过 {self.down_after_s:g} 秒没有心跳（由 {self.fleet.host} 发现）。"
                f"它的会话显示为 host_down；重启该主机上的 tmux-agent-orchestrator 后会继续执行它的队列。"
            ),
            dedupe_key=f"host_down:{host}:{self.clock.now():.0f}",
        )
