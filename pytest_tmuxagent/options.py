"""The plugin's command-line options and their ini twins.

Every setting a project would want to fix for good has an ini key of the same name (dashes
become underscores): `--tmuxagent-live` ↔ `tmuxagent_live`, `--tmuxagent-gate` ↔
`tmuxagent_gate`, `--tmuxagent-config` ↔ `tmuxagent_config`, `--tmuxagent-report` ↔
`tmuxagent_report`. A command-line option always wins over the ini value; the flags have a
`--no-…` form to switch off what the ini switched on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_REPORT",
    "DEFAULT_SOAK",
    "add_options",
    "artifacts_dir",
    "config_file",
    "gate",
    "live",
    "progress",
    "report_path",
    "soak",
]

DEFAULT_CONFIG = "agent-config.yaml"
DEFAULT_REPORT = Path("reports") / "orchestrator_real_world_test_report.md"
DEFAULT_SOAK = "20s"  # the normal run's short soak; `tmux-agent validate --soak` alone means 10m


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("tmuxagent", "tmuxagent playbook scenarios")
    group.addoption(
        "--tmuxagent-live",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run scenarios against the real panes, codex and WeCom of your config (ini: tmuxagent_live)",
    )
    group.addoption(
        "--tmuxagent-config",
        default=None,
        help=f"live mode: your agent-config.yaml, its orchestrator.toml and env file "
        f"(ini: tmuxagent_config; default {DEFAULT_CONFIG})",
    )
    group.addoption(
        "--tmuxagent-report",
        default=None,
        help=f"where to write the real-world test report, Markdown (ini: tmuxagent_report; default {DEFAULT_REPORT})",
    )
    group.addoption(
        "--tmuxagent-gate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fail the run when any playbook acceptance criterion is not met (ini: tmuxagent_gate)",
    )
    group.addoption(
        "--tmuxagent-progress", action="store_true", default=False, help="print a line per finished scenario test"
    )
    group.addoption(
        "--tmuxagent-soak",
        default=None,
        metavar="DURATION",
        help=f"how long the Prometheus soak-and-export test runs: 20s, 10m, 1h "
        f"(ini: tmuxagent_soak; default {DEFAULT_SOAK})",
    )
    parser.addini("tmuxagent_soak", "duration of the Prometheus soak-and-export test", default=DEFAULT_SOAK)
    parser.addini("tmuxagent_live", "run scenarios in live mode (like --tmuxagent-live)", type="bool", default=False)
    parser.addini("tmuxagent_gate", "fail the run on an unmet acceptance criterion", type="bool", default=False)
    parser.addini("tmuxagent_config", "live mode: path of your agent-config.yaml", default=DEFAULT_CONFIG)
    parser.addini("tmuxagent_report", "path of the real-world test report", default="")


def _flag(config: pytest.Config, option: str, ini: str) -> bool:
    given = config.getoption(option)
    return bool(config.getini(ini)) if given is None else bool(given)


def live(config: pytest.Config) -> bool:
    """`--tmuxagent-live` / `--no-tmuxagent-live`, else the `tmuxagent_live` ini value."""
    return _flag(config, "--tmuxagent-live", "tmuxagent_live")


def gate(config: pytest.Config) -> bool:
    """`--tmuxagent-gate` / `--no-tmuxagent-gate`, else the `tmuxagent_gate` ini value."""
    return _flag(config, "--tmuxagent-gate", "tmuxagent_gate")


def progress(config: pytest.Config) -> bool:
    return bool(config.getoption("--tmuxagent-progress"))


def config_file(config: pytest.Config) -> Path:
    """Live mode's agent-config.yaml: the option, else the ini value (relative to the ini file's folder)."""
    given = config.getoption("--tmuxagent-config")
    if given:
        return Path(given)
    value = str(config.getini("tmuxagent_config") or DEFAULT_CONFIG)
    path = Path(value)
    if path.is_absolute() or config.inipath is None or value == DEFAULT_CONFIG:
        return path
    return config.inipath.parent / path


def report_path(config: pytest.Config) -> Path:
    """The report's path: the option, else the ini value, else reports/…; relative ones under the rootdir."""
    given = config.getoption("--tmuxagent-report") or config.getini("tmuxagent_report")
    path = Path(str(given)) if given else DEFAULT_REPORT
    return path if path.is_absolute() else Path(config.rootpath) / path


def soak(config: pytest.Config) -> str:
    """The soak duration text: `--tmuxagent-soak`, else the ini value, else DEFAULT_SOAK."""
    return str(config.getoption("--tmuxagent-soak") or config.getini("tmuxagent_soak") or DEFAULT_SOAK)


def artifacts_dir(config: pytest.Config) -> Path:
    """Where files linked from the report go (screenshots, soak CSV and PNG): `<report stem>_files/`
    beside the report, so two reports never share (or overwrite) each other's images."""
    report = report_path(config)
    return report.parent / f"{report.stem}_files"
