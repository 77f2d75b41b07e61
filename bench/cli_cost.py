"""What one `tmux-agent` call costs: wall time, CPU (user + sys of the CLI process and every child it
waited for, e.g. the tmux client of send's pane check) and how many modules it imported.

Each subcommand runs against a real config, state DB and tmux pane (a private server), the way a
person or a script calls it. `--before PATH` runs the same calls with another checkout first on
`PYTHONPATH` (e.g. `git worktree add /tmp/cli-before <commit>`), so both columns come from one run
on one machine. A benchmark: it prints numbers, it asserts nothing.

    .venv/bin/python bench/cli_cost.py [--runs 15] [--before /tmp/cli-before] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from common import exit_on_signals, log, temp_dir, tmux_server

from orchestrator.cli.common import HEAVY_MODULES as HEAVY
from pytest_tmuxagent.service import OrchestratorService

SESSION = "bench/cli"
# the console script's own body: what `tmux-agent ARGS` runs
ENTRY = "import sys; from orchestrator.cli.main import main; sys.exit(main())"


@dataclass(frozen=True)
class Call:
    label: str
    argv: tuple[str, ...]
    setup: tuple[tuple[str, str], ...] = ()  # metadata (key, JSON) set before the runs
    entry: str = ENTRY  # what `python -c` runs


def calls(config: str) -> list[Call]:
    c = ("--config", config)
    return [
        Call("(python -c pass)", (), entry="pass"),  # the interpreter's own start: the floor on this machine
        Call("--help", ("--help",)),
        Call("send", ("send", *c, SESSION, "--", "true")),
        Call("send --no-check", ("send", *c, "--no-check", SESSION, "--", "true")),
        Call("status", ("status", *c)),
        Call("status --json", ("status", *c, "--json")),
        Call("meta set", ("meta", "set", *c, SESSION, "x-bench", '"v"')),
        Call("unblock", ("unblock", *c, SESSION)),
        Call("reply", ("reply", *c, SESSION, "--", "yes"), (("state", '"waiting_input"'),)),
        Call(
            "approve",
            ("approve", *c, SESSION),
            (
                ("state", '"waiting_approval"'),
                ("pending_approval", '{"key": "k1", "tool": "Bash", "command": "ls", "reason": "bench"}'),
            ),
        ),
    ]


@dataclass
class Cost:
    label: str
    tree: str
    wall_ms: float
    cpu_ms: float
    modules: int
    heavy: list[str]
    exit_code: int


def run_once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """(wall ms, CPU ms of the process and its reaped children, exit code) of one call."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall * 1000, cpu * 1000, done.returncode


def imported(argv: list[str], env: dict[str, str], cwd: Path) -> list[str]:
    """The top-level names of the modules one call imports (from `-X importtime`)."""
    done = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]], env=env, cwd=cwd, capture_output=True, text=True, check=False
    )
    names = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    return [name for name in names if name and name != "package"]


def measure(call: Call, tree: str, pythonpath: str | None, runs: int, cwd: Path) -> Cost:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WECOM_", "OPENAI_"))}
    # bytecode cached as in any install (the warm-up run writes it), kept out of the checkouts
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cwd / "pycache" / tree)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    argv = [sys.executable, "-c", call.entry, *call.argv]
    for key, value in call.setup:
        meta = [sys.executable, "-c", ENTRY, "meta", "set", *call.argv[1:3], SESSION, key, value]
        subprocess.run(meta, env=env, cwd=cwd, check=True, capture_output=True)
    run_once(argv, env, cwd)  # warm the page cache and the DB file
    samples = [run_once(argv, env, cwd) for _ in range(runs)]
    names = imported(argv, env, cwd)
    heavy = sorted({n.split(".")[0] for n in names} & set(HEAVY))
    return Cost(
        call.label,
        tree,
        round(statistics.median(s[0] for s in samples), 1),
        round(statistics.median(s[1] for s in samples), 1),
        len(names),
        heavy,
        samples[-1][2],
    )


def print_table(costs: list[Cost], trees: list[str]) -> None:
    by = {(c.label, c.tree): c for c in costs}
    labels = list(dict.fromkeys(c.label for c in costs))
    head = f"{'subcommand':<16}" + "".join(f" | {t + ' CPU ms':>14} {'wall ms':>8} {'imports':>7}" for t in trees)
    print(head)
    print("-" * len(head))
    for label in labels:
        cells = []
        for tree in trees:
            c = by[(label, tree)]
            cells.append(f" | {c.cpu_ms:>14.1f} {c.wall_ms:>8.1f} {c.modules:>7d}")
        print(f"{label:<16}" + "".join(cells))
    print()
    for tree in trees:
        for label in labels:
            c = by[(label, tree)]
            extra = f" exit={c.exit_code}" if c.exit_code else ""
            if c.heavy or extra:
                print(f"{tree:>6} {label:<16} heavy: {', '.join(c.heavy) or '-'}{extra}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per subcommand (median taken); at least 10")
    parser.add_argument("--before", default=None, help="another checkout to measure first (put on PYTHONPATH)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", action="append", default=[], help="just this subcommand (as labelled); repeatable")
    args = parser.parse_args()
    exit_on_signals()
    runs = max(10, args.runs)
    trees: list[tuple[str, str | None]] = [("after", None)]
    if args.before:
        trees.insert(0, ("before", str(Path(args.before).resolve())))
    with ExitStack() as stack:
        root = temp_dir(stack, "tmuxagent-cli-cost-")
        tmux = tmux_server(stack, "tmuxagent-cli-", root)
        service = OrchestratorService(root=root, tmux=tmux, panes=[tmux.agent_pane(SESSION)])
        costs: list[Cost] = []
        for call in [c for c in calls(str(service.config_path)) if not args.only or c.label in args.only]:
            for tree, path in trees:
                log(f"{tree}: tmux-agent {call.label} × {runs}")
                costs.append(measure(call, tree, path, runs, root))
    if args.json:
        print(json.dumps([asdict(c) for c in costs], indent=2))
    else:
        print_table(costs, [t for t, _ in trees])
    return 0


if __name__ == "__main__":
    sys.exit(main())
