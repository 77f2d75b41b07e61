"""Every scenario test says which playbook capability it proves (issue 18), and a failure's
words come from the most specific source: `if_fails`, a clause on the failing statement, the
`capability` marker, the registry entry, the scenario's title."""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from pytest_tmuxagent.capabilities import (
    CAPABILITY_EVIDENCE,
    FAILURE_EVIDENCE,
    IF_FAILS_EVIDENCE,
    Capability,
    Clause,
    capability_of,
    function_name,
    what_broke,
)
from pytest_tmuxagent.evidence import EvidenceItem
from pytest_tmuxagent.playbook_capabilities import PLAYBOOK_CAPABILITIES
from pytest_tmuxagent.registry import builtin

ROOT = Path(__file__).resolve().parents[1]

# Runs inside the collecting pytest: each collected scenario test with its scenario letters and
# its `capability` marker's phrase (None without one).
DUMP_PLUGIN = """
import json, os

def pytest_collection_finish(session):
    from pytest_tmuxagent.registry import scenarios
    markers = {s.marker: s.letter for s in scenarios(session.config).values()}
    rows = []
    for item in session.items:
        letters = sorted({markers[m.name] for m in item.iter_markers() if m.name in markers})
        marker = item.get_closest_marker("capability")
        rows.append({"nodeid": item.nodeid, "letters": letters, "marker": marker.args[0] if marker else None})
    with open(os.environ["CAPDUMP_OUT"], "w") as out:
        json.dump(rows, out)
"""


def collected_scenario_tests(tmp_path: Path) -> list[dict[str, object]]:
    (tmp_path / "capdump.py").write_text(DUMP_PLUGIN)
    out = tmp_path / "collected.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "CAPDUMP_OUT": str(out),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "capdump",
            "-p",
            "no:cacheprovider",
            "tmuxagent_scenarios",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows: list[dict[str, object]] = json.loads(out.read_text())
    return rows


def test_every_scenario_test_names_the_capability_it_proves(tmp_path: Path) -> None:
    rows = collected_scenario_tests(tmp_path)
    assert len(rows) > 100  # the whole shipped playbook was collected
    missing, unmarked, used = [], [], set()
    for row in rows:
        letters = row["letters"]
        assert isinstance(letters, list)
        if not letters:
            unmarked.append(row["nodeid"])
            continue
        name = str(row["nodeid"]).split("::", 1)[1]
        for letter in letters:
            entry = capability_of(letter, name)
            if entry is not None:
                used.add(id(entry))
            elif not row["marker"]:
                missing.append(f"{row['nodeid']} (scenario {letter.upper()})")
    assert unmarked == [], f"scenario tests without a scenario marker: {unmarked}"
    assert missing == [], (
        "scenario tests that name no capability — add an entry to pytest_tmuxagent/playbook_capabilities.py "
        f"or mark them @pytest.mark.capability('…'): {missing}"
    )
    stale = [e.tests for entries in PLAYBOOK_CAPABILITIES.values() for e in entries if id(e) not in used]
    assert stale == [], f"capability entries that no collected test matches (renamed?): {stale}"


def test_the_capability_table_covers_exactly_the_built_in_scenarios() -> None:
    assert list(PLAYBOOK_CAPABILITIES) == list(builtin())
    for letter, entries in PLAYBOOK_CAPABILITIES.items():
        names = [p for e in entries for p in e.tests]
        assert len(names) == len(set(names)), f"scenario {letter}: a test named twice"
        assert all(e.proves for e in entries)


STALL = "test_stalled_command_is_healed_alerted_and_cooled_down"


def failing(statement: str) -> list[EvidenceItem]:
    return [EvidenceItem(FAILURE_EVIDENCE, "failing statement (call)", statement)]


def test_the_failing_statement_picks_the_clause_in_the_playbooks_words() -> None:
    said = what_broke("b", STALL, failing("[alert] = wecom_mock.wait_for_messages(1, timeout=10)"), "WaitTimeout: …")
    assert said == "B: stall detected but 命令卡顿 not delivered"
    stall_count = failing('assert service.metadata(SESSION)["stall_count"] == 2')
    assert what_broke("b", STALL, stall_count, "") == "B: stall detected but orchestrator_stall_count not increased"
    # the statement is the surer sign: a message quoting a log line with 命令卡顿 does not win over it
    after = failing("nxt = service.wait_result(after, timeout=20)")
    said = what_broke("b", STALL, after, "WaitTimeout: command 2 did not finish; log: 命令卡顿 sent")
    assert said == "B: cooldown over but the next command did not run (冷却解除后命令能继续执行)"
    streak = failing("assert len(wecom_mock.messages()) == 1  # one alert per streak, not one per failure")
    said = what_broke("e", "test_failure_streak_alerts_once_blocks_and_resumes[3]", streak, "")
    assert said == "E: 命令连续失败 sent twice for one streak"


def test_a_fixture_teardown_failure_names_the_plugins_own_check() -> None:
    leak = "AssertionError: secrets reached a log or the audit file: ['WECOM_WEBHOOK in orchestrator.log']"
    assert what_broke("g", "test_failing_channel_keeps_the_alert_until_it_works[app-refuse]", [], leak) == (
        "G: a secret reached a log or the audit file"
    )


def test_without_a_matching_clause_the_capability_itself_is_named_broken() -> None:
    said = what_broke("b", STALL, failing("x = 1"), "AssertionError")
    assert (
        said
        == "B: 卡顿检测与自愈: a stalled `sleep 600` is interrupted, retried, alerted (命令卡顿) and cooled down — broken"
    )
    chatty = "test_a_long_command_that_keeps_printing_is_not_a_stall[progress-lines]"
    assert what_broke("b", chatty, [], "") == "B: a long command that keeps printing is not a stall — broken"


def test_if_fails_then_clause_then_marker_then_registry_then_title() -> None:
    table = {
        "h": (
            Capability(
                ("test_patrol",), "nightly patrol finds nothing", (Clause(r"alarms", "patrol raised an alarm"),)
            ),
        )
    }
    marker = [EvidenceItem(CAPABILITY_EVIDENCE, "marker", "the marker's phrase")]
    assert what_broke("h", "test_patrol", marker, "", table=table) == "H: the marker's phrase — broken"
    assert what_broke("h", "test_patrol", [], "", table=table) == "H: nightly patrol finds nothing — broken"
    with_clause = [*marker, *failing("assert alarms == []")]
    assert what_broke("h", "test_patrol", with_clause, "", table=table) == "H: patrol raised an alarm"
    said = [
        *with_clause,
        EvidenceItem(IF_FAILS_EVIDENCE, "if fails", "first"),
        EvidenceItem(IF_FAILS_EVIDENCE, "if fails", "the last one said"),
    ]
    assert what_broke("h", "test_patrol", said, "", table=table) == "H: the last one said"
    from pytest_tmuxagent.registry import Scenario

    unknown = what_broke("h", "test_other", [], "", Scenario("h", "夜间巡检", "nightly patrol"), table=table)
    assert unknown == "H: 夜间巡检 — nightly patrol — broken"


def test_function_names_drop_the_parametrize_id_and_the_class() -> None:
    assert function_name("test_command_feedback[bash-success]") == "test_command_feedback"
    assert function_name("TestX::test_y[a::b]") == "test_y"


@functools.cache
def scenario_functions() -> dict[str, tuple[str, ...]]:
    """Every function of the shipped scenario files (tests and their helpers) with the
    statements inside it, whitespace-normalised as the plugin records them."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tmuxagent_scenarios").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef):
                inner = [n for n in ast.walk(node) if isinstance(n, ast.stmt) and n is not node]
                texts = [" ".join((ast.get_source_segment(source, n) or "").split()) for n in inner]
                found.setdefault(node.name, []).extend(texts)
    return {name: tuple(texts) for name, texts in found.items()}


def statements_of(entry: Capability) -> list[str]:
    """The statements of the tests an entry covers, and of every helper (a clause may name the
    helper's failing line, e.g. `assert summary["problems"] == []` in `replay_verified`)."""
    return [
        text
        for name, texts in scenario_functions().items()
        if entry.covers(name) or not name.startswith("test_")
        for text in texts
    ]


def test_every_clause_matches_a_statement_of_its_tests() -> None:
    """A clause whose pattern no statement of its tests (or their helpers) contains is dead: it
    would never name a failure. Catches a quoting slip in a pattern, or a test rewritten since."""
    dead = []
    for letter, entries in PLAYBOOK_CAPABILITIES.items():
        for entry in entries:
            statements = statements_of(entry)
            for clause in entry.clauses:
                if not any(re.search(clause.pattern, s, re.IGNORECASE) for s in statements):
                    dead.append(f"{letter}: {clause.pattern!r} ({clause.broke})")
    assert dead == []


def test_the_real_stall_test_reads_as_the_playbook_says() -> None:
    """Scenario B's real statements, each taken as the failing one, give the issue's words."""
    statements = scenario_functions()[STALL]
    said = {s: what_broke("b", STALL, failing(s), "") for s in statements}
    alert = next(s for s in statements if s.startswith("[alert] = wecom_mock.wait_for_messages"))
    assert said[alert] == "B: stall detected but 命令卡顿 not delivered"
    counted = next(s for s in statements if "orchestrator_stall_count_total" in s)
    assert said[counted] == "B: stall detected but orchestrator_stall_count not increased"
    nxt = next(s for s in statements if s.startswith("nxt = service.wait_result(after"))
    assert said[nxt] == "B: cooldown over but the next command did not run (冷却解除后命令能继续执行)"
