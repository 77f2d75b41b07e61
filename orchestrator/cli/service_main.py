"""`tmux-agent-orchestrator`: the supervisor service."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from orchestrator.adapters.metrics import OrchestratorMetrics, serve
from orchestrator.adapters.tmux import TmuxAdapter
from orchestrator.adapters.tmux_controlled import ControlledTmux
from orchestrator.cli.common import add_config_flags, config_from_args, run_cli, setup_logging
from orchestrator.cli.compose import build_orchestrator
from orchestrator.clock import SystemClock
from orchestrator.config import Config
from orchestrator.envfile import EnvSource
from orchestrator.notify.notifier import Notifier
from orchestrator.state.audit import AuditLog
from orchestrator.state.db_faults import FAULT_KINDS
from orchestrator.state.lock import supervising
from orchestrator.state.open import open_store
from orchestrator.state.outbox import Outbox


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tmux-agent-orchestrator", description=__doc__)
    add_config_flags(parser)
    parser.add_argument("--metrics-port", type=int, default=None, help="override metrics_port (0 = any free port)")
    parser.add_argument("--dry-run", action="store_true", help="record what would be dispatched, send nothing")
    parser.add_argument("--once", action="store_true", help="drain the queues, then exit")
    parser.add_argument("--verbose", action="store_true")
    return parser


def _serve(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    # one orchestrator per state DB: a second one exits 2 here, before it logs, binds or writes anything
    with supervising(config.state_db):
        return _run(args, config)


def _run(args: argparse.Namespace, config: Config) -> int:
    setup_logging(config.log_dir / "orchestrator.log", args.verbose)
    metrics = OrchestratorMetrics(host=config.host)
    metrics.failure_alert_threshold.set(config.settings.failure_alert_threshold)
    clock = SystemClock()
    store = open_store(config, clock)
    try:
        store.check_integrity()  # a damaged file is one line and exit 2 here, not a crash later
    except BaseException:
        store.close()
        raise
    for kind in FAULT_KINDS:
        metrics.state_db_errors.labels(kind=kind)
    store.faults.listeners.append(lambda kind: metrics.state_db_errors.labels(kind=kind).inc())
    audit = AuditLog.for_service(config.audit_log, on_write_error=lambda exc: metrics.audit_write_errors.inc())
    notifier = Notifier(
        outbox=Outbox(store),
        env=EnvSource(config.settings.env_file),
        settings=config.settings.notifications,
        metrics=metrics,
        audit=audit,
    )
    fleet = None
    if config.state_dsn:  # psycopg only for a fleet: a SQLite install may not have the `postgres` extra
        from orchestrator.cli.fleet import join_fleet

        fleet = join_fleet(config, store, audit=audit, notify=notifier, clock=clock, gauges=metrics)
    # one `tmux -C` client for every call (a subprocess per call while it is down, or with
    # `tmux.control_mode: false`); it attaches to the first supervised target's session
    tmux = ControlledTmux(
        TmuxAdapter(config.tmux),
        [s.target for s in config.sessions],
        enabled=config.tmux.control_mode,
        stream_output=config.tmux.output_stream,
    )
    orchestrator = build_orchestrator(
        config,
        store=store,
        tmux=tmux,
        audit=audit,
        metrics=metrics,
        notify=notifier,
        clock=clock,
        dry_run=args.dry_run,
        fleet_tickers=(fleet.watch,) if fleet else (),
    )
    supervisor = orchestrator.supervisor
    if fleet:
        fleet.listen(set(supervisor.sessions), supervisor.completions)
    port = config.settings.metrics_port if args.metrics_port is None else args.metrics_port
    source = "--metrics-port" if args.metrics_port is not None else f"{config.orchestrator_path}: metrics_port"
    server = serve(metrics, config.settings.metrics_host, port, source=source)
    runtime = config.log_dir / "orchestrator-runtime.json"
    runtime.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "metrics_url": f"http://{config.settings.metrics_host}:{server.server_port}/metrics",
            }
        )
    )
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop())
    signal.signal(signal.SIGINT, lambda *_: supervisor.stop())
    try:
        supervisor.start()
        notifier.start()
        supervisor.run(once=args.once)
    finally:
        if fleet:
            fleet.close()
        notifier.stop()
        orchestrator.close()
        tmux.close()
        audit.close()
        server.shutdown()
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli("tmux-agent-orchestrator", lambda: _serve(argv))


if __name__ == "__main__":
    sys.exit(main())
