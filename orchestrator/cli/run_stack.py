"""`tmux-agent run`: the playbook's service stack — orchestrator and dashboard — in
one foreground command. Ctrl-C (or SIGTERM) stops both; if either dies, the other
is stopped too and its exit code is returned.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from orchestrator.config import load_config
from orchestrator.state.lock import locked_by

STOP_TIMEOUT_SECONDS = 10.0


def stack_argv(args: argparse.Namespace) -> list[list[str]]:
    config = load_config(args.config, args.orchestrator_config)  # bad input exits 2 before anything starts
    busy = locked_by(config.state_db)
    if busy is not None:  # another orchestrator supervises this DB: say so before starting either process
        raise busy
    orchestrator = [
        sys.executable,
        "-m",
        "orchestrator.cli.service_main",
        "--config",
        str(config.config_path),
        "--orchestrator-config",
        str(config.orchestrator_path),
    ]
    if args.metrics_port is not None:
        orchestrator += ["--metrics-port", str(args.metrics_port)]
    dashboard = [
        sys.executable,
        "-m",
        "orchestrator.dashboard",
        "--db",
        str(config.state_db),
        "--host",
        args.dashboard_host,
        "--port",
        str(args.dashboard_port),
        "--log",
        str(config.audit_log),
    ]
    return [orchestrator, dashboard]


def cmd_run(args: argparse.Namespace) -> int:
    commands = stack_argv(args)
    procs = [subprocess.Popen(argv) for argv in commands]
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def watch(proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        done.set()

    for proc in procs:
        threading.Thread(target=watch, args=(proc,), daemon=True).start()
    print(
        f"tmux-agent run: orchestrator pid {procs[0].pid}, dashboard pid {procs[1].pid} on "
        f"http://{args.dashboard_host}:{args.dashboard_port}/ — Ctrl-C stops both",
        flush=True,
    )
    done.wait()
    first_dead = next((p for p in procs if p.poll() is not None), None)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if first_dead is not None:
        code = first_dead.returncode or 0
        if code != 0:  # its own error line is just above on stderr; say what that did to the stack
            which = "orchestrator" if first_dead is procs[0] else "dashboard"
            other = "dashboard" if first_dead is procs[0] else "orchestrator"
            print(
                f"tmux-agent run: the {which} (pid {first_dead.pid}) exited {code}; stopped the {other}",
                file=sys.stderr,
                flush=True,
            )
        return code
    return 0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config_flags: Callable[[argparse.ArgumentParser], None],
) -> None:
    parser = sub.add_parser("run", help="orchestrator + dashboard in the foreground; Ctrl-C stops both")
    add_config_flags(parser)
    parser.add_argument("--metrics-port", type=int, default=None)
    parser.add_argument("--dashboard-host", default="127.0.0.1")
    parser.add_argument("--dashboard-port", type=int, default=8702)
    parser.set_defaults(func=cmd_run)
