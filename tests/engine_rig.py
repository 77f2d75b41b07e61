"""The supervisor's in-process rig: a fake pane port and driver, the manual clock, a real SQLite
store, the real audit trail, metrics recorder, stall guard and failure streak wired as the
composition root wires them (decision assist left out: it has its own tests). The engine's tests
(`test_engine*.py`), replay's and the doorbell's build on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.adapters.panes import PaneDirectory
from orchestrator.cli.compose import subscribe_observers
from orchestrator.clock import ManualClock
from orchestrator.config import OrchestratorSettings, SessionConfig
from orchestrator.engine.supervisor import Supervisor
from orchestrator.events import (
    CommandDispatched,
    CommandFinished,
    DispatchFailed,
    EventBus,
    StallDetected,
    StallGaveUp,
    StallRetried,
)
from orchestrator.guards.stall import StallGuard
from orchestrator.guards.streak import FailureStreak
from orchestrator.ports import ApprovalPolicy, Ticker
from orchestrator.state.audit import AuditLog
from orchestrator.state.audit_read import read_events
from orchestrator.state.store import StateStore

from .engine_fakes import EventLog, FakeDriver, FakePanes, RecordingNotify, session, settings

S = "weather/bot"


@dataclass
class Rig:
    sup: Supervisor
    store: StateStore
    driver: FakeDriver
    panes: FakePanes
    clock: ManualClock
    notify: RecordingNotify
    metrics: OrchestratorMetrics
    audit_path: Path
    log: EventLog

    def send(self, command: str, name: str = S) -> int:
        return self.store.enqueue(name, command)

    def status(self, command_id: int) -> str:
        row = self.store.command(command_id)
        assert row is not None
        return row.status

    def audit(self) -> list[str]:
        return [e["event"] for e in read_events(self.audit_path).events]

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.sup.step()


def make_rig(
    tmp_path: Path,
    sessions: list[SessionConfig] | None = None,
    cfg: OrchestratorSettings | None = None,
    started: frozenset[int] = frozenset(),
    missing: frozenset[str] = frozenset(),
    typed: frozenset[int] = frozenset(),
    approvals: ApprovalPolicy | None = None,
    late_tickers: tuple[Ticker, ...] = (),
) -> Rig:
    """`started`: commands whose start record the (restarted) pane already holds; `missing`:
    targets whose pane does not exist yet."""
    sessions = sessions or [session()]
    cfg = cfg or settings()
    clock = ManualClock()
    store = StateStore(tmp_path / "state.db", clock=clock)
    audit_path = tmp_path / "audit.jsonl"
    audit = AuditLog(audit_path, clock=clock)
    metrics = OrchestratorMetrics()
    notify = RecordingNotify()
    panes = FakePanes({s.target: f"%{i}" for i, s in enumerate(sessions)})
    panes.alive -= {panes.targets[t] for t in missing}
    driver = FakeDriver(panes, clock)
    driver._started.update(started)
    driver.typed.update(typed)
    bus = EventBus(raise_errors=True)
    stall = StallGuard(cfg, store=store, audit=audit, notify=notify, clock=clock, sessions=sessions)
    streak = FailureStreak(
        [s.name for s in sessions],
        cfg.failure_alert_threshold,
        store=store,
        audit=audit,
        metrics=metrics,
        notify=notify,
    )
    subscribe_observers(bus, audit=audit, store=store, metrics=metrics, notify=notify)  # as the service does
    stall.subscribe(bus)
    streak.subscribe(bus)
    log = EventLog(bus, CommandDispatched, CommandFinished, DispatchFailed, StallDetected, StallRetried, StallGaveUp)
    sup = Supervisor(
        sessions,
        cfg,
        store=store,
        driver=driver,
        panes=panes,
        locator=PaneDirectory(panes, sessions),
        bus=bus,
        stall=stall,
        approvals=approvals,
        gates=(stall, streak),
        tickers=(stall,),
        late_tickers=(streak, *late_tickers),
        clock=clock,
    )
    sup.start()
    return Rig(sup, store, driver, panes, clock, notify, metrics, audit_path, log)
