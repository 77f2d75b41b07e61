"""`tmux-agent validate`: run the playbook's scenarios A–G through pytest with the
plugin, write the real-world report, and exit non-zero when an acceptance
criterion is not met — usable as a CI gate.

The scenarios ship in the distribution as the `tmuxagent_scenarios` package, so a plain
(non-editable) `pip install` runs them: pytest gets `--pyargs tmuxagent_scenarios`, from the
directory validate is started in (the report goes to its `reports/` folder unless `--report`
or the `tmuxagent_report` ini key says otherwise). `--scenarios-dir` runs another folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

from orchestrator.errors import UserError
from pytest_tmuxagent.registry import builtin

PLAYBOOK = "tmuxagent_scenarios"
SCENARIO_LETTERS = "".join(builtin())


def scenarios_dir(given: str | None = None) -> Path:
    """The folder the scenarios run from: `--scenarios-dir`, else the installed playbook package."""
    if given:
        here = Path(given).absolute()
        if not here.is_dir():
            raise UserError(f"scenario folder {here} not found", key="--scenarios-dir", fix="pass an existing folder")
        return here
    spec = importlib.util.find_spec(PLAYBOOK)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"the playbook package {PLAYBOOK} is not installed",
            key="validate",
            fix="reinstall tmuxagent (`pip install tmuxagent`, or `pip install -e .` in a checkout)",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _targets(given: str | None) -> list[str]:
    if given:
        return [str(scenarios_dir(given))]
    scenarios_dir()  # a clear error when the package is missing
    return ["--pyargs", PLAYBOOK]


def _scenario_expr(letters: list[str]) -> str:
    registry = builtin()
    bad = [x for x in letters if x.strip().lower() not in registry]
    if bad:
        raise UserError(
            f"unknown scenario '{bad[0]}'",
            key="--scenario",
            fix=f"use a letter from {SCENARIO_LETTERS[0]} to {SCENARIO_LETTERS[-1]}",
        )
    return " or ".join(registry[x.strip().lower()].marker for x in letters)


def pytest_argv(args: argparse.Namespace) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "tmuxagent",
        *_targets(args.scenarios_dir),
        "-p",
        "no:cacheprovider",
        "-q",
        "--tmuxagent-progress",
    ]
    exprs = [args.markexpr] if args.markexpr else []
    if args.scenario:
        exprs.append(_scenario_expr(args.scenario))
    if exprs:
        argv += ["-m", " and ".join(f"({e})" for e in exprs)]
    else:
        argv.append("--tmuxagent-gate")  # the whole playbook: every acceptance criterion must be met
    workers = args.workers or ("2" if importlib.util.find_spec("xdist") else None)
    if workers and workers != "0":
        argv += ["-n", str(workers)]
    if args.live:
        argv.append("--tmuxagent-live")
    if args.report:
        argv += ["--tmuxagent-report", str(Path(args.report).absolute())]
    if args.allure:
        argv += ["--alluredir", str(Path(args.allure).absolute())]
    return argv


def generate_allure_html(results: Path) -> Path | None:
    """With the `allure` command (npm package, Allure Report 3) installed, render the HTML too."""
    allure = shutil.which("allure")
    if allure is None:
        print(
            f"tmux-agent validate: `allure` not installed (npm install -g allure); allure-results are in {results}",
            flush=True,
        )
        return None
    output = results.with_name(results.name + "-html")
    config = resources.files("pytest_tmuxagent").joinpath("allurerc.json")  # groups the tree by scenario
    done = subprocess.run(
        [allure, "generate", str(results), "--output", str(output), "--config", str(config)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        print(f"tmux-agent validate: allure generate failed: {done.stderr.strip()[-500:]}", flush=True)
        return None
    print(f"tmux-agent validate: Allure HTML report in {output}", flush=True)
    return output


def run_validation(args: argparse.Namespace) -> int:
    argv = pytest_argv(args)
    print("tmux-agent validate:", " ".join(argv[2:]), flush=True)
    code = subprocess.call(argv, cwd=os.getcwd(), env=os.environ.copy())
    if args.allure:
        generate_allure_html(Path(args.allure).absolute())
    return code
