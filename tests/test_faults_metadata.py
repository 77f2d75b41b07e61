"""Issue 13, part 3: metadata with a schema.

`tmux-agent meta set` stores only what the shipped schema allows (or an `x-` key of the user's
own); a value written straight into the DB that does not fit is read as absent with one warning,
by `tmux-agent status` and by the orchestrator, never a traceback or a crash.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.clock import iso_utc
from orchestrator.config import OrchestratorSettings
from orchestrator.events import SessionAttached, StallDetected
from orchestrator.guards.stall import StallGuard
from orchestrator.guards.streak import FailureStreak
from orchestrator.metadata import metadata_keys, metadata_problem
from orchestrator.model import SESSION_STATES
from orchestrator.schema import load_schema
from orchestrator.state.audit import AuditLog
from orchestrator.state.store import StateStore
from pytest_tmuxagent.service import cli_path

PACKAGE = Path(__file__).resolve().parent.parent / "orchestrator"
SESSION = "weather/bot"
YAML = """\
tmux:
  socket_name: nowhere-{tag}
state_db: state.db
log_dir: logs
sessions:
  - name: weather/bot
    target: "weather:bot"
"""

# one value of each JSON type: every known key has at least one that does not fit it
GARBAGE: list[Any] = ["garbage", 12345, -3, True, [1, {"a": None}], {"x": 1}]


def write(tmp_path: Path) -> Path:
    config = tmp_path / "agent-config.yaml"
    config.write_text(YAML.format(tag=tmp_path.name))
    (tmp_path / ".tmuxagent").mkdir(exist_ok=True)
    (tmp_path / ".tmuxagent" / "orchestrator.toml").write_text(f'env_file = "{tmp_path / "test.env"}"\n')
    (tmp_path / "test.env").write_text("")
    return config


def cli(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([cli_path("tmux-agent"), *argv], capture_output=True, text=True, cwd=tmp_path, timeout=30)


def stored(tmp_path: Path) -> dict[str, Any]:
    with sqlite3.connect(tmp_path / "state.db") as db:
        row = db.execute("SELECT metadata FROM sessions WHERE name=?", (SESSION,)).fetchone()
    value = json.loads(row[0]) if row else {}
    assert isinstance(value, dict)
    return value


def poke(tmp_path: Path, metadata: dict[str, Any]) -> None:
    """Write metadata straight into the DB, around the CLI (as an old version or a hand edit would)."""
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("UPDATE sessions SET metadata=? WHERE name=?", (json.dumps(metadata), SESSION))


# the schema ---------------------------------------------------------------------------------------
def keys_read_by_the_product() -> set[str]:
    """Every literal key read from or written to a session's metadata in orchestrator/."""
    pattern = re.compile(
        r"(?:metadata|meta)(?:\([^)]*\))?\.get\(\s*\"([a-z_]+)\"|(?:metadata|meta)\[\"([a-z_]+)\"\]"
        r"|_metadata\([^,]+,\s*\{\s*\"([a-z_]+)\"|_metadata\([^,]+,\s*\"([a-z_]+)\""
    )
    keys: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path.parts[-2] == "dashboard" and path.name != "state.py":
            continue
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            keys.update(k for k in match.groups() if k)
    return keys


def test_the_schema_lists_every_key_the_product_reads() -> None:
    found = keys_read_by_the_product() - {"payload"}  # `payload` is an outbox row's, not a session's
    assert {"blockers", "failure_streak", "cooldown_until", "next_actions", "state"} <= found
    assert found <= set(metadata_keys()), sorted(found - set(metadata_keys()))


def test_the_schema_states_are_the_model_states() -> None:
    enum = load_schema("metadata.schema.json")["properties"]["state"]["enum"]
    assert [s for s in enum if s is not None] == list(SESSION_STATES)


def test_every_known_key_refuses_some_garbage_and_takes_null() -> None:
    for key in metadata_keys():
        assert metadata_problem(key, None) is None, key
        assert any(metadata_problem(key, value) for value in GARBAGE), key


# meta set -----------------------------------------------------------------------------------------
def test_meta_set_refuses_an_unknown_key(tmp_path: Path) -> None:
    write(tmp_path)
    result = cli(tmp_path, "meta", "set", SESSION, "blokers", '["x"]')
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "key 'blokers'" in lines[0] and "unknown metadata key" in lines[0]
    assert "blockers" in lines[0] and "x-blokers" in lines[0]


def test_meta_set_takes_a_namespaced_key(tmp_path: Path) -> None:
    write(tmp_path)
    result = cli(tmp_path, "meta", "set", SESSION, "x-owner", '{"team": "weather"}')
    assert result.returncode == 0, result.stderr
    assert stored(tmp_path)["x-owner"] == {"team": "weather"}


BAD_VALUES = {
    "failure_streak": ('"abc"', "integer"),
    "blocked": ('"no"', "boolean"),
    "cooldown_until": ('"tomorrow"', "ISO 8601"),
    "last_command_result": ('"done"', "object"),
    "next_actions": ('{"recommendations": ["x"]}', "recommendations[0]"),
    "state": ('"sleepy"', "waiting_input"),
    "blockers": ("5", "list"),
    "requirements_doc": ('""', "non-empty string"),
}


@pytest.mark.parametrize("key", BAD_VALUES)
def test_meta_set_refuses_a_value_that_does_not_fit(tmp_path: Path, key: str) -> None:
    write(tmp_path)
    value, needle = BAD_VALUES[key]
    result = cli(tmp_path, "meta", "set", SESSION, key, value)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"key '{key}'" in lines[0] and needle in lines[0] and "e.g." in lines[0], lines[0]
    assert key not in stored(tmp_path)


GOOD_VALUES = {
    "blockers": '["missing OPENAI_API_KEY"]',
    "requirements_doc": '"docs/plan.md"',
    "blocked": "false",
    "failure_streak": "0",
    "cooldown_until": json.dumps(iso_utc(2_000_000_000.0)),
    "next_actions": "null",
}


def test_meta_set_takes_values_that_fit(tmp_path: Path) -> None:
    write(tmp_path)
    for key, value in GOOD_VALUES.items():
        result = cli(tmp_path, "meta", "set", SESSION, key, value)
        assert result.returncode == 0, (key, result.stderr)
    assert stored(tmp_path)["blockers"] == ["missing OPENAI_API_KEY"]


# stored garbage: status -------------------------------------------------------------------------
@pytest.mark.parametrize("garbage", GARBAGE, ids=lambda v: type(v).__name__ + ("-neg" if v == -3 else ""))
def test_status_reads_stored_garbage_as_absent(tmp_path: Path, garbage: Any) -> None:
    write(tmp_path)
    assert cli(tmp_path, "meta", "set", SESSION, "x-created", "1").returncode == 0
    bad = {key: garbage for key in metadata_keys() if metadata_problem(key, garbage)}
    poke(tmp_path, bad)
    text = cli(tmp_path, "status")
    assert text.returncode == 0 and "Traceback" not in text.stderr, text.stderr
    assert "BLOCKED" not in text.stdout  # `blocked: "no"` or `1` is not a block
    warnings = text.stderr.strip().splitlines()
    assert all(line.startswith("tmux-agent: warning: ") for line in warnings), text.stderr
    for key in bad:  # one warning per key, naming the session, the key and the fix
        said = [line for line in warnings if f"metadata {json.dumps(garbage)[:20]}" in line and f": {key} " in line]
        assert len(said) == 1, (key, text.stderr)
        assert f"tmux-agent meta set {SESSION} {key}" in said[0]
    report = cli(tmp_path, "status", "--json")
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr
    session = json.loads(report.stdout)["sessions"][0]
    assert session["metadata"] == bad  # the whole stored object, as it is
    assert session["state"] is None and session["last_reply"] is None


# stored garbage: the orchestrator's guards ------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t


class _Notify:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def notify(self, **kwargs: Any) -> None:
        self.sent.append(str(kwargs.get("kind")))


@pytest.mark.parametrize("garbage", GARBAGE, ids=lambda v: type(v).__name__ + ("-neg" if v == -3 else ""))
def test_guards_read_stored_garbage_as_absent(tmp_path: Path, garbage: Any, caplog: pytest.LogCaptureFixture) -> None:
    name = f"guarded/{tmp_path.name}"  # warnings are once per (session, key) per process
    store = StateStore(tmp_path / "state.db")
    store.ensure_session(name, "weather:bot")
    bad = {key: garbage for key in ("blocked", "failure_streak", "cooldown_until", "stall_count")}
    bad = {k: v for k, v in bad.items() if metadata_problem(k, v)}
    store.update_metadata(name, bad)
    audit = AuditLog(tmp_path / "audit.jsonl")
    metrics = OrchestratorMetrics()
    streak = FailureStreak([name], 3, store=store, audit=audit, metrics=metrics, notify=_Notify())
    stall = StallGuard(OrchestratorSettings(), store=store, audit=audit, notify=_Notify(), clock=_Clock())
    for _ in range(3):
        streak.tick()
    assert streak.may_dispatch(name)
    stall._on_attached(SessionAttached(name, "%1"))
    assert stall.may_dispatch(name)
    stall._on_detected(StallDetected(name, None, 0.0, ""))  # type: ignore[arg-type]
    assert store.metadata(name)["stall_count"] == 1
    warned = [r.getMessage() for r in caplog.records if "treated as absent" in r.getMessage()]
    for key in ("failure_streak", "cooldown_until", "blocked"):
        if key in bad:
            assert sum(f": {key} " in m for m in warned) == 1, (key, warned)
    store.close()


# stored garbage: the real orchestrator -----------------------------------------------------------------
@pytest.mark.parametrize("garbage", GARBAGE, ids=lambda v: type(v).__name__ + ("-neg" if v == -3 else ""))
def test_orchestrator_runs_through_stored_garbage(agent_pane: Any, orchestrator_service: Any, garbage: Any) -> None:
    pane = agent_pane(SESSION)
    service = orchestrator_service([pane], start=False)
    first = service.send(SESSION, "true")
    bad = {key: garbage for key in metadata_keys() if metadata_problem(key, garbage)}
    with sqlite3.connect(service.state_db) as db:
        db.execute("UPDATE sessions SET metadata=? WHERE name=?", (json.dumps(bad), SESSION))
    second = service.send(SESSION, "false")
    service.start("--once", wait=False)
    assert service.process.wait(timeout=30) == 0, service.log_text()[-3000:]
    assert "Traceback" not in service.log_text(), service.log_text()[-3000:]
    assert [service.command(i).status for i in (first, second)] == ["succeeded", "failed"]
    for key in bad:
        assert service.log_text().count(f": {key} ") <= 1, (key, service.log_text()[-3000:])
