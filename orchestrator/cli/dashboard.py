"""`tmux-agent dashboard` and `python -m orchestrator.dashboard`: serve the web dashboard.

Where the data comes from, first match wins:
  state DB:  --db or --dsn (a fleet's PostgreSQL), else the state_db or state_dsn of --config
             (or of ./agent-config.yaml when it exists), else ~/.tmux_agent/state.db
  audit log: --audit-log, else the log_dir of that config, else <DB folder>/logs/orchestrator-actions.jsonl
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cli.common import run_cli
from orchestrator.config import DEFAULT_CONFIG_NAME, load_config
from orchestrator.errors import UserError

if TYPE_CHECKING:  # the server (prometheus, http.server) loads only when the dashboard runs
    from orchestrator.dashboard.server import DashboardServer

DEFAULT_PORT = 8702
DEFAULT_DB = Path("~/.tmux_agent/state.db")
TOKEN_ENV = "TMUX_AGENT_DASHBOARD_TOKEN"
TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~-]{8,}$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=None, help=f"agent-config.yaml (default ./{DEFAULT_CONFIG_NAME} if present)"
    )
    parser.add_argument("--orchestrator-config", default=None, help="orchestrator.toml beside --config by default")
    parser.add_argument("--db", default=None, help="the state DB to show")
    parser.add_argument(
        "--dsn",
        default=None,
        help="a fleet's PostgreSQL database to show (a libpq DSN; default: the config's state_dsn)",
    )
    parser.add_argument(
        "--audit-log", "--log", dest="audit_log", default=None, help="orchestrator-actions.jsonl for recent events"
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    parser.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help=f"require the token in this file (first line; chmod 600); else ${TOKEN_ENV}. "
        "Needed when --host is not loopback",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="require this token — visible to every local user in ps and /proc/PID/cmdline: "
        f"prefer --token-file or ${TOKEN_ENV}",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this Host name (a DNS name or reverse proxy in front); repeatable. "
        "The bound address and localhost are always answered, any other name gets 421",
    )
    parser.add_argument(
        "--allow-no-token",
        action="store_true",
        help="serve a non-loopback --host without a token (anyone who can reach it sees commands)",
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between state refreshes (live updates)")
    parser.add_argument("--events", type=int, default=40, help="recent audit events shown")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `dashboard` subcommand to `tmux-agent`."""
    parser = subparsers.add_parser(
        "dashboard",
        help="the web dashboard (port 8702)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def _paths(args: argparse.Namespace) -> tuple[Path, Path, str | None]:
    """The state DB file, the audit log, and the fleet's DSN when the state is on PostgreSQL."""
    if args.db and args.dsn:
        raise UserError("--db and --dsn both name a state DB", key="--dsn", fix="pass one of them")
    config = None
    default_config = Path(DEFAULT_CONFIG_NAME)
    if args.config or (not args.db and not args.dsn and default_config.is_file()):
        config = load_config(args.config or default_config, args.orchestrator_config)  # names the file on a problem
    db = Path(args.db).expanduser() if args.db else (config.state_db if config else DEFAULT_DB.expanduser())
    dsn = args.dsn or (config.state_dsn if config and not args.db else None)
    if args.audit_log:
        audit = Path(args.audit_log).expanduser()
    else:
        audit = config.audit_log if config else db.parent / "logs" / "orchestrator-actions.jsonl"
    return db, audit, dsn


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_token_file(raw: str) -> str:
    path = Path(raw).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise UserError(
            f"cannot read {path} ({reason})",
            key="--token-file",
            fix="write the token into the file (e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))' "
            f"> {path}; chmod 600 {path})",
        ) from None
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise UserError(f"{path} is empty", key="--token-file", fix="put the token on its first line")
    if mode & 0o077:
        print(
            f"tmux-agent dashboard: warning: the token file {path} is readable by others; chmod 600 {path}",
            file=sys.stderr,
            flush=True,
        )
    return token


def _token(args: argparse.Namespace) -> str | None:
    """The token from --token-file, else --token (warned: argv is public), else the environment."""
    source = "--token"
    if args.token_file is not None and args.token is not None:
        raise UserError("pass --token-file or --token, not both", key="--token-file", fix="drop --token")
    if args.token_file is not None:
        token: str | None = _read_token_file(args.token_file)
        source = f"--token-file {Path(args.token_file).expanduser()}"
    elif args.token is not None:
        token = args.token
        print(
            "tmux-agent dashboard: warning: --token is visible to every local user (ps, /proc/PID/cmdline); "
            f"use --token-file PATH or ${TOKEN_ENV} instead",
            file=sys.stderr,
            flush=True,
        )
    else:
        token = os.environ.get(TOKEN_ENV)
        source = f"${TOKEN_ENV}"
    if token and not TOKEN_CHARS.match(token):
        raise UserError(
            f"the token ({source}) must be 8+ characters of A-Z a-z 0-9 . _ ~ -",
            key="--token-file" if args.token_file is not None else "--token",
            fix="generate one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'",
        )
    if not token and not _is_loopback(args.host) and not args.allow_no_token:
        raise UserError(
            f"refusing to serve {args.host} without a token",
            key="--host",
            fix=f"pass --token-file PATH (or set {TOKEN_ENV}), bind 127.0.0.1, or pass --allow-no-token",
        )
    return token or None


def _check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise UserError(f"port {port} is out of range", key="--port", fix="use 0 to 65535 (0 = any free port)")


def build_server(args: argparse.Namespace) -> DashboardServer:
    from orchestrator.dashboard.server import DashboardApp, DashboardServer

    _check_port(args.port)
    db, audit, dsn = _paths(args)
    if args.interval <= 0:
        raise UserError("must be greater than 0", key="--interval", fix="pass e.g. --interval 1")
    app = DashboardApp(
        db=db,
        audit_log=audit,
        token=_token(args),
        interval=args.interval,
        event_limit=max(1, args.events),
        allowed_hosts=tuple(args.allow_host),
        dsn=dsn,
    )
    try:
        return DashboardServer(app, args.host, args.port)
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise UserError(
                f"cannot listen on {args.host}:{args.port} ({exc.strerror})",
                key="--port",
                fix="pick a free port with --port N (0 = any) or stop the other process",
            ) from None
        raise


def run(args: argparse.Namespace) -> int:
    server = build_server(args)

    def stop(*_: object) -> None:  # runs in the serving thread: shut down from another one
        server.app.hub.stop()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(
        f"dashboard: serving {server.url} (db {server.app.snapshot.where}, audit log {server.app.audit_log})",
        flush=True,
    )
    try:
        server.serve()
    finally:
        server.app.hub.stop()
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.dashboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_cli("tmux-agent dashboard", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
