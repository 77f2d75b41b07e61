from __future__ import annotations

import json
from pathlib import Path

from orchestrator.dashboard.state import build_state
from orchestrator.events import EventBus, InputRequested, RunningProgress
from orchestrator.model import CommandResult
from orchestrator.redact import redact, redact_obj, register_from_env
from orchestrator.state.session_writer import SessionStateWriter
from orchestrator.state.snapshot import StateSnapshot
from orchestrator.state.store import StateStore


def test_known_values_and_secret_shapes_are_masked() -> None:
    register_from_env({"WECOM_APP_SECRET": "s3cr3t-app-value", "WECOM_WEBHOOK": "https://h/x?key=hook-KEY-42"})
    text = (
        "secret s3cr3t-app-value, hook hook-KEY-42, url https://h/cgi-bin/gettoken?corpid=ww1&corpsecret=zzz "
        "token access_token=tok-99 key sk-abcdef123456 Bearer eyJhbGciOi.abc"
    )
    out = redact(text)
    for secret in ("s3cr3t-app-value", "hook-KEY-42", "zzz", "tok-99", "sk-abcdef123456", "eyJhbGciOi.abc"):
        assert secret not in out
    assert "corpid=ww1" in out


def test_nested_structures_are_redacted() -> None:
    assert redact_obj({"a": ["OPENAI_API_KEY=sk-zzzzzzzzzz"], "n": 3}) == {"a": ["OPENAI_API_KEY=***"], "n": 3}


def test_secrets_typed_into_commands_are_masked() -> None:
    cases = {
        "export OPENAI_API_KEY=sk-abcdefghijkl1234": "sk-abcdefghijkl1234",
        'curl -H "Authorization: Bearer abc.DEF+ghi/jkl==" https://api.example': "abc.DEF+ghi/jkl==",
        "curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZA==' x": "dXNlcjpwYXNzd29yZA==",
        "export GITHUB_TOKEN=ghp_0123456789abcdefghijABCDEFGHIJ": "ghp_0123456789abcdefghij",
        'export AWS_SECRET_ACCESS_KEY="wJalr XUtnFEMI"': "wJalr",
        "mysql --password=hunter2hunter -u root": "hunter2hunter",
        "git clone https://bob:p4ssw0rd-x@github.com/o/r": "p4ssw0rd-x",
    }
    for text, secret in cases.items():
        out = redact(text)
        assert secret not in out, (text, out)
        assert "***" in out, out
    assert redact("export PATH=/usr/bin:$PATH && make test") == "export PATH=/usr/bin:$PATH && make test"


def test_secret_shapes_in_output_tails_are_masked() -> None:
    tail = "\n".join(
        [
            "connecting with password=hunter22 to db",
            'config: {"api_key": "AbC123xyz987", "name": "bot"}',
            '{"client_secret":"s3cr3t\\"quoted"}',
            "> Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig",
            "DB_PASSWORD: correct-horse",
        ]
    )
    out = redact(tail)
    for secret in ("hunter22", "AbC123xyz987", "s3cr3t", "quoted", "eyJhbGciOiJIUzI1NiJ9", "correct-horse"):
        assert secret not in out, out
    assert '"api_key": "***"' in out and '"name": "bot"' in out  # the JSON keeps its shape
    assert out.count("\n") == tail.count("\n")


def test_names_that_only_look_secret_are_kept() -> None:
    text = "tmux-agent dashboard --token-file /run/tok MAX_TOKENS=100 PWD=/x TOKEN_FILE=/a sort key"
    assert redact(text) == text
    assert redact("--api-key abcdef SECRET_KEY_BASE=abc") == "--api-key *** SECRET_KEY_BASE=***"


def test_long_hostile_text_is_redacted_in_linear_time() -> None:
    import time

    started = time.monotonic()
    for text in ("a." * 50000, "a-b_" * 25000, '"a":"' * 20000, "--a-a-a-a" * 10000, "a=" * 50000):
        redact(text)
    assert time.monotonic() - started < 5


# the display paths: what `status`, `status --json` and the dashboard read --------------------
SECRET_COMMAND = 'export OPENAI_API_KEY=sk-live-0123456789 && curl -H "Authorization: Bearer tok.abc123xyz" x'


def _store(tmp_path: Path) -> StateStore:
    store = StateStore(tmp_path / "state.db")
    store.ensure_session("bot", "s:bot")
    return store


def test_the_queue_keeps_the_exact_text_but_metadata_shows_it_masked(tmp_path: Path) -> None:
    store = _store(tmp_path)
    bus = EventBus(raise_errors=True)
    SessionStateWriter(store).subscribe(bus)
    command_id = store.enqueue("bot", SECRET_COMMAND)
    store.mark_running(command_id, "2026-11-01T08:00:00.000000Z")
    row = store.command(command_id)
    assert row is not None and row.command == SECRET_COMMAND  # what gets typed stays exact
    bus.publish(RunningProgress("bot", row, 'got {"api_key": "AbC123xyz987"} password=hunter22'))
    running = store.metadata("bot")["running"]
    assert "sk-live" not in running["command"] and "tok.abc123xyz" not in running["command"]
    assert running["command"].startswith("export OPENAI_API_KEY=***")
    bus.publish(InputRequested("bot", row, "Password for root: "))
    assert "sk-live" not in store.metadata("bot")["running"]["command"]

    store.finish(
        command_id,
        CommandResult(0, "succeeded", row.started_at or "", "2026-11-01T08:00:01.000000Z", 1.0, "token: abc12345"),
    )
    last = store.metadata("bot")["last_command_result"]
    assert "sk-live" not in last["command"] and "tok.abc123xyz" not in last["command"]
    assert store.command(command_id).command == SECRET_COMMAND  # type: ignore[union-attr]
    store.close()


def test_the_dashboard_state_masks_commands_and_tails_even_from_old_rows(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.enqueue("bot", SECRET_COMMAND)  # queued: shown on the card
    store.update_metadata(  # written raw by an older version
        "bot",
        {
            "last_command_result": {"command_id": 1, "command": SECRET_COMMAND, "output_tail": "password=hunter22"},
            "running": {"command": SECRET_COMMAND},
        },
    )
    state = build_state(StateSnapshot(store.path), tmp_path / "none.jsonl")
    text = json.dumps(state)
    for secret in ("sk-live-0123456789", "tok.abc123xyz", "hunter22"):
        assert secret not in text
    [session] = state["sessions"]
    assert session["queued"][0]["command"].startswith("export OPENAI_API_KEY=***")
    store.close()
