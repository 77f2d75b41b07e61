"""`tmux-agent doctor`: a self-check before anything runs. Each check prints one
line — ok, WARN or FAIL, what was seen, and the fix — and the exit code is 0 only when
no check fails (a warning does not fail; `scripts/diagnose_orchestrator.sh` calls it).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from orchestrator.cli.dashboard import DEFAULT_PORT as DASHBOARD_PORT
from orchestrator.cli.doctor_agents import AGENT_VERSION_TIMEOUT_SECONDS, check_agents, check_codex, codex_timeout
from orchestrator.cli.doctor_checks import (
    CheckResult,
    check_dashboard_port,
    check_db,
    check_log_dir,
    check_metrics_port,
    check_openai_key,
    check_optional_tools,
    check_wecom,
)
from orchestrator.config import Config, load_config
from orchestrator.envfile import EnvSource
from orchestrator.errors import UserError

DASHBOARD_HOST = "127.0.0.1"  # `tmux-agent run --dashboard-host` and `tmux-agent dashboard --host` default


def run_checks(args: argparse.Namespace) -> list[CheckResult]:
    # these import the proxies (requests) and the state store: only when doctor runs, not for --help
    from orchestrator.cli.doctor_network import check_network
    from orchestrator.cli.doctor_tmux import check_tmux, tmux_checks

    results = [check_tmux()]
    try:
        config = load_config(args.config, args.orchestrator_config)
    except UserError as exc:
        return results + [CheckResult("config", False, exc.render(), "fix the file named above")]
    results.append(
        CheckResult(
            "config", True, f"{config.config_path} + {config.orchestrator_path.name}: {len(config.sessions)} session(s)"
        )
    )
    env = EnvSource(config.settings.env_file).current()
    timeout = codex_timeout(config, env)
    metrics_port = config.settings.metrics_port if args.metrics_port is None else args.metrics_port
    checks: list[Callable[[], CheckResult | list[CheckResult]]] = [
        lambda: tmux_checks(config),
        lambda: check_codex(config, {**os.environ, **env}, timeout),
        lambda: check_agents(config, {**os.environ, **env}, min(timeout, AGENT_VERSION_TIMEOUT_SECONDS)),
        lambda: check_openai_key(env),
        lambda: check_wecom(env, args.send_test, min(timeout, 10.0)),
        lambda: check_metrics_port(config, metrics_port),
        lambda: check_dashboard_port(config, DASHBOARD_HOST, args.dashboard_port),
        lambda: _check_state(config),
        lambda: check_log_dir(config.log_dir),
        lambda: check_network(config.settings, env, min(timeout, 10.0)),
        check_optional_tools,
    ]
    for check in checks:
        outcome = check()
        results.extend(outcome if isinstance(outcome, list) else [outcome])
    return results


def _check_state(config: Config) -> CheckResult:
    if config.state_dsn:  # psycopg only for a fleet
        from orchestrator.cli.doctor_fleet import check_fleet_db

        return check_fleet_db(config, config.state_dsn)
    return check_db(config.state_db)


def cmd_doctor(args: argparse.Namespace) -> int:
    results = run_checks(args)
    for result in results:
        print(result.line(), flush=True)
    failed = [r.name for r in results if not r.ok]
    warned = [r.name for r in results if r.ok and r.warn]
    print(
        f"doctor: {len(results) - len(failed)}/{len(results)} checks passed"
        + (f"; failing: {', '.join(failed)}" if failed else "")
        + (f"; warnings: {', '.join(warned)}" if warned else "")
    )
    return 0 if not failed else 1


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config_flags: Callable[[argparse.ArgumentParser], None],
) -> None:
    parser = sub.add_parser(
        "doctor", help="self-check: tmux, panes, codex, agent binaries, env, config, ports, DB, log dir"
    )
    add_config_flags(parser)
    parser.add_argument("--send-test", action="store_true", help="send a real test message to WeCom")
    parser.add_argument("--metrics-port", type=int, default=None)
    parser.add_argument(
        "--dashboard-port", type=int, default=DASHBOARD_PORT, help=f"dashboard port to check (default {DASHBOARD_PORT})"
    )
    parser.set_defaults(func=cmd_doctor)
