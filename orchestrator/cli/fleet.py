"""What one host of a PostgreSQL fleet adds to the orchestrator service: its claim on its
sessions (refused when a live host already supervises one), its heartbeat and the watch on the
other hosts (`HostWatch`), and the `LISTEN` that wakes its loop the moment a command for one of
its sessions is queued from any machine.

Nothing here runs on SQLite: one machine, one file, one orchestrator (its lock says so).
"""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass

from orchestrator.clock import Clock
from orchestrator.config import Config
from orchestrator.guards.host_watch import FleetGauges, HostWatch
from orchestrator.ports import Notify
from orchestrator.state.audit import AuditLog
from orchestrator.state.pg_fleet import PgFleet
from orchestrator.state.pg_listen import PgListener
from orchestrator.state.pg_store import PgStateStore
from orchestrator.state.port import Store
from orchestrator.state.wake import WAKE

log = logging.getLogger("orchestrator.fleet")


@dataclass
class FleetHost:
    fleet: PgFleet
    watch: HostWatch
    listener: PgListener | None = None

    def listen(self, sessions: set[str], signals: queue.Queue[int]) -> None:
        """Wake the loop (`signals`, the engine's queue) for each command queued for `sessions`;
        a listener that reconnected wakes it once too (anything may have been queued meanwhile)."""

        def wake(session: str | None) -> None:
            if session is None or session in sessions:
                signals.put(WAKE)

        self.listener = self.fleet.store.listen(wake)

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()


def join_fleet(
    config: Config,
    store: Store,
    *,
    audit: AuditLog,
    notify: Notify,
    clock: Clock,
    gauges: FleetGauges | None = None,
) -> FleetHost | None:
    """This host's part of the fleet, or None on SQLite. Claims the host's sessions first: one
    that a live host supervises is one line and exit 2, before anything is dispatched."""
    if not isinstance(store, PgStateStore):
        return None
    fleet = PgFleet(store, config.host)
    down_after = config.settings.host_down_seconds
    taken = fleet.claim_sessions(
        [(s.name, s.target) for s in config.sessions], down_after, config_file=str(config.config_path)
    )
    for name in taken:
        log.warning("session %s taken over by host %s (its last host's heartbeat is old)", name, config.host)
        audit.record("session_taken_over", name, host=config.host)
    watch = HostWatch(fleet, clock=clock, down_after_s=down_after, audit=audit, notify=notify, gauges=gauges)
    watch.tick()  # the first heartbeat (after the claim: a refused host leaves no heartbeat to go stale)
    return FleetHost(fleet, watch)
