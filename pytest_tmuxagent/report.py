"""The real-world test report: one Markdown file for the whole run, and its
machine-readable twin (`render_json`, written beside it as `<name>.json`).

Built on the controller from test reports (xdist workers send their evidence
along with each report), so it is correct under `-n 2`. Each scenario also says on which
kinds of session its tests proved it (`KINDS`: shell, claude, codex): a test's kinds are the
agent providers it asked for, or `shell` when it used no agent fixture. A failed test's row
starts with what it broke in the playbook's words (capabilities.py). The test records and
scenario summaries live in summaries.py, the acceptance criteria in criteria.py; both are
re-exported here.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from orchestrator.redact import redact

from .capabilities import HIDDEN_KINDS
from .criteria import Criterion, acceptance_line, criteria, decided_by_tests, scenarios_pass
from .evidence import FIGURES
from .summaries import KINDS, MISSING_TOOL, ScenarioSummary, TestRecord, figures, missing_tool, summarize

__all__ = [
    "KINDS",
    "MISSING_TOOL",
    "Criterion",
    "ScenarioSummary",
    "TestRecord",
    "agents_cell",
    "stores_cell",
    "commit_under_test",
    "criteria",
    "decided_by_tests",
    "figures",
    "missing_tool",
    "json_path",
    "render",
    "render_json",
    "acceptance_line",
    "RunInfo",
    "verdict",
    "scenarios_pass",
    "summarize",
]

PACKAGES = ("tmuxagent", "libtmux", "prometheus-client", "pytest", "pytest-xdist", "allure-pytest", "openai")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def tmux_version() -> str:
    tmux = shutil.which("tmux")
    if not tmux:
        return "not found"
    return subprocess.run([tmux, "-V"], capture_output=True, text=True).stdout.strip()


def commit_under_test(folder: Path | None = None) -> str:
    """`git rev-parse HEAD` (short) of the folder, `+ uncommitted changes` when dirty; or why not known."""
    git = shutil.which("git")
    if git is None:
        return "unknown (git not installed)"
    where = str(folder or Path.cwd())
    try:
        head = subprocess.run([git, "-C", where, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(
            [git, "-C", where, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown (git failed)"
    return head.stdout.strip() + (" + uncommitted changes" if dirty else "")


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.2f} s"


_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d[ T][\d:.,]+Z?\s*")
_SCRIPT_LINE = re.compile(r"^\S*\s*\.\s+\S*/cmd-[\w.-]+\.sh\s*$")


def warnings_of(tests: Iterable[TestRecord]) -> Counter[str]:
    """Warning lines of the orchestrator logs the tests recorded, without their timestamps, counted."""
    seen: Counter[str] = Counter()
    for test in tests:
        for item in test.items("log"):
            for line in item.text.splitlines():
                if "WARNING" in line:
                    seen[_TIMESTAMP.sub("", line).strip()] += 1
    return seen


def clean_pane(text: str) -> list[str]:
    """A pane tail as the person saw it: no internal `. …/cmd-….sh` lines, no trailing blanks."""
    lines = [line.rstrip() for line in text.splitlines() if not _SCRIPT_LINE.match(line.strip())]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def _cell(text: str) -> str:
    """A table cell: redacted, one line, pipes escaped; never cut."""
    return " ".join(redact(text).replace("|", "\\|").split())


def agents_cell(summary: ScenarioSummary) -> str:
    """`shell ✓ · claude ✓ (1 skipped) · codex ✗ (1 failed)`; a kind without tests is `– not run`."""
    return _outcomes_cell(summary.agents, summary.kind_counts)


def stores_cell(summary: ScenarioSummary) -> str:
    """`sqlite ✓ · postgresql ✓`: the state stores the scenario's tests ran on, and how they did."""
    return _outcomes_cell(summary.stores, summary.store_counts)


def _outcomes_cell(statuses: Mapping[str, str], count: Callable[[str], dict[str, int]]) -> str:
    parts = []
    for kind, status in statuses.items():
        counts = count(kind)
        if status == "passed":
            parts.append(f"{kind} ✓" + (f" ({counts['skipped']} skipped)" if counts["skipped"] else ""))
        elif status == "failed":
            parts.append(f"{kind} ✗ ({counts['failed']} failed)")
        elif status == "skipped":
            parts.append(f"{kind} – skipped ({counts['skipped']})")
        else:
            parts.append(f"{kind} – not run")
    return " · ".join(parts)


MODES = {
    True: "live (your tmux, codex and WeCom)",
    False: "embedded default (private tmux socket, fake codex, local WeCom mock, temp SQLite)",
}


@dataclass
class RunInfo:
    """What the report says about the run itself."""

    live: bool = False
    workers: int = 0
    started: float = 0.0
    report: Path | None = None  # where the Markdown goes: images are linked relative to it
    commit: str = ""
    tests_run: int = 0
    scenario_tests_run: int = 0
    failures: int = 0
    other_failures: list[str] = field(default_factory=list)  # non-scenario tests that failed


def _anchor(letter: str) -> str:
    return f"scenario-{letter}"


def _link(path: str, report: Path | None) -> str:
    if report is None:
        return path
    try:
        return Path(os.path.relpath(Path(path).resolve(), report.parent.resolve())).as_posix()
    except ValueError:
        return path


def verdict(summaries: Mapping[str, ScenarioSummary], rows: Sequence[Criterion], run: RunInfo) -> tuple[str, str]:
    """(word, paragraph): PASSED / FAILED / NOT DECIDED / PARTIAL (a subset run: no ❌, nothing
    undecided, but some criteria's scenarios were not part of the run), and a paragraph a lead
    reads first."""
    unmet = [c for c in rows if c.standing == "not met"]
    undecided = [c for c in rows if c.standing == "not decided"]
    unrun = [c for c in rows if c.standing == "not run"]
    met = sum(c.met is True for c in rows)
    word = "FAILED" if unmet else "NOT DECIDED" if undecided else "PARTIAL" if unrun else "PASSED"
    mode = "live" if run.live else "embedded"
    parts = [
        f"**Verdict: {word}.** {met}/{len(rows)} acceptance criteria met"
        + (f", {len(unmet)} not met" if unmet else "")
        + (f", {len(undecided)} not decided" if undecided else "")
        + (f", {len(unrun)} not run" if unrun else "")
        + f" — commit `{run.commit or 'unknown'}`, {mode} mode, {run.tests_run} test(s) run"
        f" ({run.scenario_tests_run} scenario tests), {run.failures} failed."
    ]
    failed = [(s, t) for s in summaries.values() for t in s.tests if t.outcome == "failed"]
    if failed:
        shown = "; ".join(f"{s.what_broke(t)} (`{t.name}`: {t.reason})" for s, t in failed[:3])
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        parts.append(f"What failed: {shown}{more}.")
    if run.other_failures:
        named = ", ".join(f"`{n}`" for n in run.other_failures[:3])
        rest = f" (and {len(run.other_failures) - 3} more)" if len(run.other_failures) > 3 else ""
        parts.append(f"Outside the scenarios, {len(run.other_failures)} test(s) failed: {named}{rest}.")
    for c in unmet:
        parts.append(f"Not met: {c.short} ({c.decided_by}).")
    tools = list(dict.fromkeys(t for s in summaries.values() for t in s.missing_tools))
    if undecided:
        why = f": {', '.join(tools)} not installed" if tools else ""
        parts.append(
            "Not decided"
            + why
            + " — "
            + "; ".join(c.short for c in undecided)
            + ". See [what this run did not prove](#not-proven)."
        )
    if unrun:
        unrun_letters = ", ".join(s.letter.upper() for s in summaries.values() if not s.tests)
        parts.append(
            f"Not run (scenarios {unrun_letters} were not part of this run): "
            + "; ".join(c.short for c in unrun)
            + "."
            + (" Everything that ran passed." if not unmet and not undecided and not run.failures else "")
        )
    if word == "PASSED":
        parts.append("Every scenario's deciding facts are below; [what this run did not prove](#not-proven) too.")
    return word, " ".join(parts)


def not_proven(summaries: Mapping[str, ScenarioSummary], run: RunInfo) -> list[str]:
    """The honest list: what an embedded run cannot show, what did not run, and why."""
    out = []
    kinds = {k for s in summaries.values() for t in s.tests if t.outcome == "passed" for k in t.kinds}
    if not run.live:
        out += [
            "- **codex**: decision assist and decomposition talked to the bundled *fake* `codex` (scripted "
            "replies, garbage and hangs), not the real codex CLI or the OpenAI API.",
            "- **WeCom**: notifications went to a local WeCom *mock* on 127.0.0.1, not to qyapi.weixin.qq.com; "
            "delivery delays are loopback figures.",
            "- **tmux**: every pane was on a private tmux socket the tests created, not your own sessions; "
            "`--live` (`tmux-agent validate --live`) was not given.",
        ]
        if kinds & {"claude", "codex"}:
            out.append(
                "- **agents**: Claude Code / codex TUIs were the real programs but talked to a local scripted "
                "model server, not Anthropic's or OpenAI's API."
            )
    else:
        out.append("- live mode: the tests that need scripted answers (fake codex failure kinds) skipped.")
    reasons: Counter[str] = Counter(
        t.reason or "(no reason given)" for s in summaries.values() for t in s.tests if t.outcome == "skipped"
    )
    for reason, count in reasons.most_common():
        out.append(f"- skipped ×{count}: {_cell(reason)}")
    unrun = [f"{s.letter.upper()}" for s in summaries.values() if not s.tests]
    if unrun:
        out.append(f"- scenarios not run in this run (deselected): {', '.join(unrun)}.")
    if run.scenario_tests_run == run.tests_run:
        out.append(
            f'- the unit and integration suite (`tests/`) was not part of this run: "0 failures" is over the '
            f"{run.tests_run} test(s) that ran; `python -m pytest -n 2` runs the full suite."
        )
    return out


def render(
    summaries: Mapping[str, ScenarioSummary],
    rows: Iterable[Criterion],
    *,
    live: bool = False,
    workers: int = 0,
    started: float = 0.0,
    run: RunInfo | None = None,
) -> str:
    """The report's Markdown: verdict, scenario table, figures, the Prometheus export, criteria,
    what was not proven, environment, warnings, then the evidence by scenario."""
    rows = list(rows)
    if run is None:
        tests = [t for s in summaries.values() for t in s.tests]
        run = RunInfo(
            live=live,
            workers=workers,
            started=started,
            tests_run=len(tests),
            scenario_tests_run=len(tests),
            failures=sum(t.outcome == "failed" for t in tests),
        )
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    word, paragraph = verdict(summaries, rows, run)
    out = ["# Orchestrator real-world test report", "", paragraph, ""]
    out += [
        f"Generated {now} by the `tmuxagent` pytest plugin · mode: {MODES[run.live]} · "
        f"commit `{run.commit or 'unknown'}`.",
        "",
        "## Scenarios",
        "",
        "| scenario | result | tests | duration | agents | evidence |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for letter, summary in summaries.items():
        why = summary.decision
        link = f" [→](#{_anchor(letter)})" if summary.tests else ""
        out.append(
            f"| {letter.upper()} {summary.title} | {summary.result} | {len(summary.tests)} | "
            f"{summary.duration:.1f} s | {agents_cell(summary)} | {_cell(why)}{link} |"
        )
    out += [
        "",
        "agents: the kinds of session a scenario's tests proved it on — `shell` (tests without an agent "
        "fixture), `claude` / `codex` (agent tests, by the provider they asked for); ✓ passed, "
        "✗ failed, – skipped or not run.",
        "",
        "## Figures",
        "",
    ]
    figure_rows = [
        f"| {letter.upper()} | {FIGURES.get(name, name)} | {f['n']:.0f} | {_seconds(f['p50'])} | "
        f"{_seconds(f['p95'])} | {_seconds(f['max'])} |"
        for letter, summary in summaries.items()
        for name, f in figures(summary).items()
    ]
    if figure_rows:
        out += ["| scenario | measured | n | p50 | p95 | max |", "| --- | --- | --- | --- | --- | --- |", *figure_rows]
        out += ["", "Measured by the scenario tests themselves, over their passed runs (wall clock, this machine)."]
    else:
        out.append("No scenario recorded a timing in this run.")
    out += _soak_section(summaries, run.report)
    out += ["", "## Acceptance criteria (验收标准)", "", "| criterion | met | decided by |", "| --- | --- | --- |"]
    for c in rows:
        out.append(f"| {c.text} | {c.mark} | {_cell(c.decided_by)} |")
    out += ["", '<a id="not-proven"></a>', "", "## What this run did not prove", "", *not_proven(summaries, run)]
    out += [
        "",
        "## Environment",
        "",
        "| item | value |",
        "| --- | --- |",
        f"| mode | {MODES[run.live]} |",
        f"| commit | {run.commit or 'unknown'} |",
        f"| tmux | {tmux_version()} |",
        f"| Python | {platform.python_version()} ({platform.system()} {platform.machine()}) |",
        f"| xdist workers | {run.workers or 'none'} |",
        f"| run time | {_dt.datetime.now().timestamp() - run.started:.1f} s |" if run.started else "| run time | – |",
    ]
    out += [f"| {name} | {_version(name)} |" for name in PACKAGES]
    warnings = warnings_of(t for s in summaries.values() for t in s.tests)
    out += ["", "## Warnings", ""]
    if warnings:
        out += ["Orchestrator log warnings, once each, with how often they appeared across the tests.", ""]
        out += ["| count | warning |", "| --- | --- |"]
        out += [f"| {n}× | {_cell(text)} |" for text, n in warnings.most_common()]
    else:
        out.append("No orchestrator warning was logged.")
    out += ["", "## Evidence by scenario", ""]
    for letter, summary in summaries.items():
        out += _scenario_section(letter, summary, run.report, warnings)
    return "\n".join(out) + "\n"


def _soak_section(summaries: Mapping[str, ScenarioSummary], report: Path | None) -> list[str]:
    tests = [t for s in summaries.values() for t in s.tests if t.items("export")]
    if not tests:
        return []
    out = ["", "## Prometheus export (回归测试 四.2)", ""]
    for test in tests:
        out += [f"From `{test.name}` ({test.outcome}):", ""]
        out += [f"- {d}" for d in test.decisions]
        files = test.items("export")
        out += ["", "| series | unit | CSV |", "| --- | --- | --- |"]
        out += [
            f"| {_cell(f.title.split(' [', 1)[0])} | {f.title.rsplit('[', 1)[-1].rstrip(']')} | "
            f"[{Path(f.text).name}]({_link(f.text, report)}) |"
            for f in files
        ]
        out += [""] + [f"![{_cell(i.title)}]({_link(i.text, report)})" for i in test.items("image")]
    return out


def _details(test: TestRecord, report: Path | None, warnings: Mapping[str, int]) -> list[str]:
    out: list[str] = []
    for item in test.evidence:
        if item.kind in ("decision", "figure", "export", *HIDDEN_KINDS):
            continue
        if item.kind == "image":
            out += [f"  - ![{_cell(item.title)}]({_link(item.text, report)})", ""]
            continue
        if item.kind == "pane":
            lines = clean_pane(item.text)
        elif item.kind == "log":
            lines = [x for x in item.text.splitlines() if _TIMESTAMP.sub("", x).strip() not in warnings]
        else:
            lines = item.text.strip().splitlines()
        if not lines:
            continue
        out += [f"  - {item.kind} — {redact(item.title)}", "", "    ```"]
        out += [f"    {line}" for line in redact("\n".join(lines[-15:])).splitlines()]
        out += ["    ```", ""]
    return out


def _scenario_section(
    letter: str, summary: ScenarioSummary, report: Path | None, warnings: Mapping[str, int]
) -> list[str]:
    out = [
        f'<a id="{_anchor(letter)}"></a>',
        "",
        f"### {letter.upper()} — {summary.title}: {summary.result} · agents: {agents_cell(summary)}",
        "",
        f"State stores: {stores_cell(summary)}.",
        "",
    ]
    if not summary.tests:
        return [*out, "Not run.", ""]
    # full details for failed tests and for the one test whose decision heads the table
    passed = [t for t in summary.tests if t.outcome == "passed"]
    headline = (
        next((t for t in passed if t.headline), None)
        or next((t for t in passed if t.decisions), None)
        or next(iter(passed), None)
    )
    for test in summary.tests:
        on = "" if test.kinds == ["shell"] else f" on {', '.join(test.kinds)}"
        on += "" if test.store == "sqlite" else f" (state on {test.store})"
        said = " ".join(test.decisions) or test.reason
        if test.outcome == "failed":
            said = f"{summary.what_broke(test)} — {test.reason}"
        out.append(
            f"- `{test.name}`{on} — **{test.outcome}** in {test.duration:.2f} s" + (f": {_cell(said)}" if said else "")
        )
        if test.outcome == "failed" or test is headline:
            out += _details(test, report, warnings)
        else:
            out += [f"  - ![{_cell(i.title)}]({_link(i.text, report)})" for i in test.items("image")]
    out.append("")
    return out


def render_json(
    summaries: Mapping[str, ScenarioSummary],
    rows: Iterable[Criterion],
    *,
    live: bool,
    failures: int,
    run: RunInfo | None = None,
) -> str:
    """The report for programs: the verdict, commit and mode; per scenario its result, deciding
    sentence, figures, `broke` (what each failed test broke, in the playbook's words) and `agents`
    (`{"shell": "passed", "claude": "failed", "codex": "not run"}`) with the counts behind them;
    the acceptance criteria (`met`: true, false or null; `standing`: met, not met, not decided or
    not run); each scenario test's outcome and kinds; the exported files. Reasons are redacted."""
    rows = list(rows)
    run = run or RunInfo(live=live, failures=failures)
    tests = {t.nodeid: t for s in summaries.values() for t in s.tests}
    word, _ = verdict(summaries, rows, run)
    document: dict[str, Any] = {
        "generated_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "verdict": word.lower(),
        "commit": run.commit or None,
        "mode": "live" if live else "embedded",
        "kinds": list(KINDS),
        "scenarios": {
            letter: {
                "title": summary.title,
                "result": summary.result.lower(),
                "tests": len(summary.tests),
                "duration_s": round(summary.duration, 3),
                "evidence": redact(summary.decision),
                "broke": [redact(summary.what_broke(t)) for t in summary.tests if t.outcome == "failed"],
                "figures": {k: {q: round(v, 6) for q, v in f.items()} for k, f in figures(summary).items()},
                "missing_tools": summary.missing_tools,
                "agents": summary.agents,
                "agent_tests": {kind: summary.kind_counts(kind) for kind in summary.agents},
                "stores": summary.stores,
            }
            for letter, summary in summaries.items()
        },
        "criteria": [{**c.to_json(), "decided_by": redact(c.decided_by)} for c in rows],
        "criteria_met": sum(c.met is True for c in rows),
        "criteria_total": len(rows),
        "failures": failures,
        "tests_run": run.tests_run or len(tests),
        "tests": [
            {
                "nodeid": t.nodeid,
                "scenarios": t.scenarios,
                "kinds": t.kinds,
                "store": t.store,
                "outcome": t.outcome,
                "duration_s": round(t.duration, 3),
                "reason": redact(t.reason),
                "decisions": t.decisions,
                **({"broke": redact(summaries[t.scenarios[0]].what_broke(t))} if t.outcome == "failed" else {}),
            }
            for t in tests.values()
        ],
        "exports": [
            {"title": e.title, "path": _link(e.text, run.report)}
            for t in tests.values()
            for e in t.evidence
            if e.kind in ("export", "image")
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def json_path(report: Path) -> Path:
    """Where the JSON twin of the Markdown report `report` goes: same folder and stem, `.json`."""
    twin = report.with_suffix(".json")
    return twin if twin != report else report.with_name(report.name + ".json")


def write_report(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
