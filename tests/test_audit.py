"""The audit log: schema-valid lines, a tolerant reader, nothing lost when the disk refuses."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from orchestrator.clock import ManualClock
from orchestrator.state.audit import AuditLog, audit_validator
from orchestrator.state.audit_read import read_events


def test_every_line_is_valid_against_the_shipped_schema(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl", clock=ManualClock())
    log.record("command_queued", "weather/bot", command_id=1, command="true", queue_depth=1)
    log.record(
        "command_result",
        "weather/bot",
        command_id=1,
        command="true",
        status="succeeded",
        exit_code=0,
        duration_s=0.01,
        output_tail="",
    )
    validator = audit_validator()
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        validator.validate(json.loads(line))


def test_an_invalid_event_is_refused_before_it_is_written(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    with pytest.raises(jsonschema.ValidationError):
        log.record("command_result", "weather/bot", command_id=1, command="true")  # no status/exit_code
    with pytest.raises(jsonschema.ValidationError):
        log.record("made_up_event", None)
    assert not (tmp_path / "a.jsonl").exists()


def test_reader_skips_a_truncated_last_line_and_reports_it(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    log.record("orchestrator_started", None)
    log.record("orchestrator_stopped", None)
    with path.open("a") as fh:
        fh.write('{"ts": "2026-01-01T00:00:00.000000Z", "event": "comm')
    result = read_events(path, validate=True)
    assert [e["event"] for e in result.events] == ["orchestrator_started", "orchestrator_stopped"]
    assert result.problems == [
        f"{path}:3: cut short at the end of the file (a write that did not finish: a crash or a full disk); skipped"
    ]


def test_reader_reports_a_malformed_middle_line_by_number(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"ts": "2026-01-01T00:00:00.0Z", "event": "orchestrator_started", "session": null}\n'
        "garbage\n"
        '{"ts": "2026-01-01T00:00:01.0Z", "event": "orchestrator_stopped", "session": null}\n'
    )
    result = read_events(path, validate=True)
    assert len(result.events) == 2
    assert result.problems == [f"{path}:2: not JSON (Expecting value at column 1); skipped"]


def test_disk_full_keeps_events_in_memory_until_the_disk_accepts_them(tmp_path: Path) -> None:
    errors: list[OSError] = []
    log = AuditLog(Path("/dev/full"), on_write_error=errors.append)
    log.record("orchestrator_started", None)
    log.record("dispatch_failed", "weather/bot", detail="pane_not_found: x")
    assert log.pending == 2 and errors and errors[0].errno == 28  # ENOSPC
    log.path = tmp_path / "a.jsonl"  # the disk has room again
    log.record("orchestrator_stopped", None)
    assert log.pending == 0
    assert [e["event"] for e in read_events(log.path).events] == [
        "orchestrator_started",
        "dispatch_failed",
        "orchestrator_stopped",
    ]


def test_secrets_are_redacted_in_audit_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    AuditLog(path).record(
        "command_queued",
        "weather/bot",
        command_id=2,
        command="curl 'https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc123secret' "
        "-H 'Authorization: Bearer sk-live-0123456789'",
    )
    text = path.read_text()
    assert "abc123secret" not in text and "sk-live-0123456789" not in text
    assert "key=***" in text
