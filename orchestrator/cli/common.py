"""What every CLI shares: the config flags, logging with redaction, and turning a
UserError into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import UserError
from orchestrator.redact import redact

if TYPE_CHECKING:
    from orchestrator.config import Config

# What a quick subcommand (--help, send, status, meta set, unblock, reply, approve, deny) never
# imports: each costs more than the rest of such a call. tests/test_cli_fast.py holds them to it.
HEAVY_MODULES = (
    "libtmux",
    "openai",
    "httpx",
    "httpx2",
    "requests",
    "prometheus_client",
    "matplotlib",
    "pytest",
    "playwright",
    "jsonschema",
)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="agent-config.yaml", help="agent-config.yaml path")
    parser.add_argument(
        "--orchestrator-config",
        default=None,
        help="orchestrator.toml path (default: .tmuxagent/orchestrator.toml beside --config)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    from orchestrator.config import load_config  # YAML and the schemas: only for a subcommand that reads them

    return load_config(args.config, args.orchestrator_config)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(log_file: Path | None = None, verbose: bool = False) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    formatter = RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    root.addHandler(stream)
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            root.warning("cannot write log file %s: %s", log_file, exc.strerror)
        else:
            handler.setFormatter(formatter)
            root.addHandler(handler)


def run_cli(prog: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except UserError as exc:
        print(f"{prog}: error: {redact(exc.render())}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
