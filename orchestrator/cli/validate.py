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
import json
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
REPORT = Path("reports") / "orchestrator_real_world_test_report.md"  # under the folder validate runs in
SOAK_DEFAULT = "10m"  # `--soak` without a value: the playbook's 10-minute export


def report_file(args: argparse.Namespace) -> Path:
    """Where validate's report goes: `--report`, else reports/… under the current folder —
    always passed to pytest, so an ini `tmuxagent_report` (the test command's) never moves it."""
    return Path(args.report).absolute() if getattr(args, "report", None) else Path.cwd() / REPORT


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
        "-o",
        "console_output_style=classic",  # no [NN%] column beside the scenario lines
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
    argv += ["--tmuxagent-report", str(report_file(args))]
    soak = getattr(args, "soak", None)
    if soak:
        from pytest_tmuxagent.soak import parse_duration

        try:
            parse_duration(soak)
        except ValueError as exc:
            raise UserError(str(exc), key="--soak", fix="pass a duration like 20s, 10m or 1h") from None
        argv += ["--tmuxagent-soak", soak]
    if args.allure:
        argv += ["--alluredir", str(Path(args.allure).absolute())]
    return argv


def generate_allure_html(results: Path) -> Path | None:
    """With the `allure` command (npm package `allure`, Allure Report 3) installed, render the
    HTML too, and say how to open it (a `file://` page cannot load its data: use `allure open`)."""
    allure = shutil.which("allure")
    if allure is None:
        print(
            f"tmux-agent validate: allure results in {results}; `allure` is not installed "
            "(npm package `allure`: npm install -g allure@3) — no HTML",
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
    print(
        f"tmux-agent validate: open it with `allure open {output}` (served over HTTP; file:// does not load)",
        flush=True,
    )
    return output


def acceptance_summary(report: Path) -> str | None:
    """The final line, from the report's JSON twin: `acceptance: 5/5 criteria met — report: …`."""
    from pytest_tmuxagent.report import Criterion, acceptance_line, json_path

    try:
        data = json.loads(json_path(report).read_text(encoding="utf-8"))
        rows = [Criterion.from_json(c) for c in data["criteria"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        shown: Path | str = report.relative_to(Path.cwd())
    except ValueError:
        shown = report
    return acceptance_line(rows, shown)


def run_validation(args: argparse.Namespace) -> int:
    argv = pytest_argv(args)
    report = report_file(args)
    before = json_mtime(report)
    print("tmux-agent validate:", " ".join(argv[2:]), flush=True)
    code = subprocess.call(argv, cwd=os.getcwd(), env=os.environ.copy())
    if args.allure:
        generate_allure_html(Path(args.allure).absolute())
    line = acceptance_summary(report) if json_mtime(report) != before else None
    print(line or f"acceptance: not decided — pytest wrote no report (exit {code}); see the output above", flush=True)
    return code


def json_mtime(report: Path) -> float | None:
    from pytest_tmuxagent.report import json_path

    try:
        return json_path(report).stat().st_mtime
    except OSError:
        return None
