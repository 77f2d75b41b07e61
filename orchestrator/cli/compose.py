"""The one composition root: build an orchestrator from its config and its adapters.

Everything the engine works with is made here and handed in through constructors; the order of
`subscribe` calls below is the order subscribers see each event: the audit trail first (so the
log reads cause before effect), then metrics, the guards, and decision assist last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.adapters.children import reap_orphans
from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.adapters.metrics_recorder import MetricsRecorder
from orchestrator.adapters.panes import PaneDirectory
from orchestrator.assist.approval_policy import ToolApprovalPolicy
from orchestrator.assist.coordinator import Assist
from orchestrator.clock import Clock, SystemClock
from orchestrator.config import Config
from orchestrator.drivers.agent import AgentDriver
from orchestrator.drivers.shell import ShellDriver
from orchestrator.engine.supervisor import Supervisor
from orchestrator.events import EventBus
from orchestrator.guards.attention import AttentionGuard
from orchestrator.guards.stall import StallGuard
from orchestrator.guards.streak import FailureStreak
from orchestrator.ports import Driver, Notify, PaneIO, Ticker
from orchestrator.state.audit import AuditLog
from orchestrator.state.audit_trail import AuditTrail
from orchestrator.state.port import Store
from orchestrator.state.session_writer import SessionStateWriter


@dataclass
class Orchestrator:
    """The assembled service: the engine and the parts a caller may want to look at."""

    supervisor: Supervisor
    bus: EventBus
    stall: StallGuard
    streak: FailureStreak
    assist: Assist
    panes: PaneDirectory

    def close(self) -> None:
        self.assist.close()
        self.supervisor.close()


def subscribe_observers(
    bus: EventBus, *, audit: AuditLog, store: Store, metrics: OrchestratorMetrics, notify: Notify
) -> None:
    """What every dispatch, result and state change is written to, in this order: the audit
    trail, the session's state in the DB, the metrics, and the alerts that need a person (the
    guards and decision assist subscribe themselves)."""
    AuditTrail(audit).subscribe(bus)
    SessionStateWriter(store).subscribe(bus)
    MetricsRecorder(metrics).subscribe(bus)
    AttentionGuard(notify).subscribe(bus)


def build_orchestrator(
    config: Config,
    *,
    store: Store,
    tmux: PaneIO,
    audit: AuditLog,
    metrics: OrchestratorMetrics,
    notify: Notify,
    clock: Clock | None = None,
    dry_run: bool = False,
    bus: EventBus | None = None,
    fleet_tickers: Sequence[Ticker] = (),
) -> Orchestrator:
    """The engine and everything it hands results to. `fleet_tickers`: what a host of a
    PostgreSQL fleet adds (its heartbeat and the watch on the other hosts, see cli/fleet.py)."""
    clock = clock or SystemClock()
    bus = bus or EventBus()
    reap_orphans()  # AI subprocesses a killed orchestrator left behind (logged when there were any)
    settings = config.settings
    names = [s.name for s in config.sessions]
    panes = PaneDirectory(tmux, config.sessions)
    stall = StallGuard(settings, store=store, audit=audit, notify=notify, clock=clock, sessions=config.sessions)
    streak = FailureStreak(
        names, settings.failure_alert_threshold, store=store, audit=audit, metrics=metrics, notify=notify
    )
    assist = Assist(
        settings=settings,
        sessions=config.sessions,
        store=store,
        audit=audit,
        metrics=metrics,
        clock=clock,
        notify=notify,
        panes=panes,
    )
    subscribe_observers(bus, audit=audit, store=store, metrics=metrics, notify=notify)
    stall.subscribe(bus)
    streak.subscribe(bus)
    assist.subscribe(bus)
    driver = ShellDriver(tmux, config.runtime_dir, config.state_db, table=panes.table)  # one list-panes for both
    agents: dict[str, Driver] = {  # one watcher thread for every session: the shell driver's
        s.name: AgentDriver(
            s, tmux, config.tmux, config.runtime_dir, config.state_db, driver.completions, watcher=driver.watcher
        )
        for s in config.sessions
        if s.kind == "agent"
    }
    supervisor = Supervisor(
        config.sessions,
        settings,
        store=store,
        driver=driver,
        drivers=agents,
        panes=tmux,
        locator=panes,
        bus=bus,
        stall=stall,
        approvals=ToolApprovalPolicy(settings.approvals),
        gates=(stall, streak),
        tickers=(stall,),
        late_tickers=(streak, assist, *fleet_tickers),
        background=(assist,),
        clock=clock,
        dry_run=dry_run,
    )
    return Orchestrator(supervisor, bus, stall, streak, assist, panes)
