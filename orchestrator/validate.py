"""`tmux-agent validate`: run the playbook's scenarios through pytest with the plugin.

The scenarios live in the source checkout's `scenarios/` folder (the package is
installed editable from it); the exit code is pytest's, so it works as a CI gate.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .errors import UserError


def scenarios_dir() -> Path:
    here = Path(__file__).resolve().parent.parent / "scenarios"
    if not here.is_dir():
        raise UserError("scenarios/ not found beside the installed package", key="validate",
                        fix="install from a source checkout with `pip install -e '.[dev]'`")
    return here


def pytest_argv(args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, "-m", "pytest", str(scenarios_dir()), "-p", "no:cacheprovider", "-q", "-rA"]
    exprs = [args.markexpr] if args.markexpr else []
    if args.scenario:
        exprs.append(" or ".join(f"scenario_{s.strip().lower()}" for s in args.scenario))
    if exprs:
        argv += ["-m", " and ".join(f"({e})" for e in exprs)]
    if args.workers:
        argv += ["-n", str(args.workers)]
    if args.live:
        argv.append("--tmuxagent-live")
    if args.report:
        argv += ["--tmuxagent-report", args.report]
    if args.allure:
        argv += ["--alluredir", args.allure]
    return argv


def run_validation(args: argparse.Namespace) -> int:
    argv = pytest_argv(args)
    print("tmux-agent validate:", " ".join(argv[2:]), flush=True)
    return subprocess.call(argv, cwd=str(scenarios_dir().parent), env=os.environ.copy())
