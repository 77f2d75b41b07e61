"""Bugs found while typing the config, state, notify, dashboard and CLI modules strictly;
one small test pins each fix."""

from __future__ import annotations

import argparse
import http.client
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.adapters.wecom import ChannelError
from orchestrator.cli.doctor import codex_timeout
from orchestrator.cli.main import cmd_send
from orchestrator.cli.replay_main import main as replay_main
from orchestrator.clock import ManualClock
from orchestrator.config import NotificationSettings, load_config
from orchestrator.dashboard.server import DashboardApp, DashboardServer
from orchestrator.dashboard.state import build_state
from orchestrator.envfile import EnvSource
from orchestrator.errors import ConfigError
from orchestrator.notify.notifier import MAX_BACKOFF_SECONDS, Notifier
from orchestrator.state import audit as audit_module
from orchestrator.state.audit import AuditLog
from orchestrator.state.audit_read import read_events
from orchestrator.state.outbox import Outbox
from orchestrator.state.replay import replay
from orchestrator.state.replay_report import render_text
from orchestrator.state.snapshot import StateSnapshot
from orchestrator.state.store import StateStore

BOT = "weather/bot"


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "agent-config.yaml"
    config.write_text(
        "state_db: state.db\nlog_dir: logs\nsessions:\n  - name: weather/bot\n    target: 'weather:bot'\n"
    )
    (tmp_path / ".tmuxagent").mkdir()
    (tmp_path / ".tmuxagent" / "orchestrator.toml").write_text(f'env_file = "{tmp_path / "dot.env"}"\n')
    return config


def test_a_non_string_yaml_key_is_a_config_error_not_a_type_error(tmp_path: Path) -> None:
    config = tmp_path / "agent-config.yaml"
    config.write_text("sessions:\n  - name: a\n    target: b\n    3: x\n")
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert "key 'sessions[0].3': unknown key" in str(err.value)


def test_a_short_audit_write_inside_a_utf8_character_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    real_write = os.write
    calls: list[int] = []

    def short_write(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:  # stop in the middle of the 3-byte "命"
            return real_write(fd, data[: data.index("命".encode()) + 1])
        return real_write(fd, data)

    monkeypatch.setattr(audit_module.os, "write", short_write)
    log.record("metadata_set", BOT, detail="命令")
    assert log.flush()
    [event] = read_events(log.path, validate=True).events
    assert event["detail"] == "命令"


def test_a_result_line_without_status_does_not_break_the_report() -> None:
    events = [
        {"ts": "2024-01-01T00:00:00.000000Z", "event": "command_result", "session": BOT, "command_id": 1},
        {
            "ts": "2024-01-01T00:00:01.000000Z",
            "event": "command_result",
            "session": BOT,
            "command_id": 2,
            "status": "failed",
        },
    ]
    summary = replay(events).as_dict()
    assert summary["commands"]["results"] == {"unknown": 1, "failed": 1}
    assert "commands: failed 1, unknown 1" in render_text(summary, [], "log")


def test_backoff_after_very_many_attempts_does_not_overflow(tmp_path: Path) -> None:
    clock = ManualClock()
    store = StateStore(tmp_path / "state.db", clock=clock)
    outbox = Outbox(store)

    class Failing:
        name = "webhook"

        def send(self, title: str, markdown: str) -> None:
            raise ChannelError("webhook", "http", "HTTP 500")

    notifier = Notifier(
        outbox=outbox,
        env=EnvSource(None, base={}),
        settings=NotificationSettings(),  # float retry_backoff_seconds, as read from TOML
        metrics=OrchestratorMetrics(),
        audit=AuditLog(tmp_path / "audit.jsonl", clock=clock),
        clock=clock,
        channel_factory=lambda env, *, timeout, previous: [Failing()],
    )
    message_id = notifier.notify(kind="stall", session=BOT, title="t", body="b", dedupe_key="k")
    with store.transaction() as db:  # a WeCom outage long enough for ~1100 retries
        db.execute("UPDATE outbox SET attempts=1100 WHERE id=?", (message_id,))
    notifier.flush_once()
    [message] = outbox.pending()
    assert message.attempts == 1101
    assert message.next_attempt_at == pytest.approx(clock.now() + MAX_BACKOFF_SECONDS)
    store.close()


def test_an_infinite_metadata_number_does_not_break_the_dashboard(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.ensure_session(BOT, "weather:bot")
    store.update_metadata(BOT, {"failure_streak": float("inf"), "stall_count": float("-inf")})  # JSON Infinity
    [session] = build_state(StateSnapshot(store.path), tmp_path / "none.jsonl")["sessions"]
    assert (session["failure_streak"], session["stall_count"]) == (0, 0)
    store.close()


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[tuple[DashboardServer, DashboardServer]]:
    store = StateStore(tmp_path / "state.db")
    store.ensure_session(BOT, "weather:bot")
    servers = []
    for token in (None, "s3cret-token-1"):
        app = DashboardApp(db=store.path, audit_log=tmp_path / "a.jsonl", token=token, interval=0.05)
        server = DashboardServer(app, "127.0.0.1", 0)
        threading.Thread(target=server.serve, daemon=True).start()
        servers.append(server)
    yield servers[0], servers[1]
    for server in servers:
        server.stop()
    store.close()


def _get(server: DashboardServer, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_the_token_query_cannot_inject_headers_or_a_wrong_cookie(
    dashboard: tuple[DashboardServer, DashboardServer],
) -> None:
    open_server, guarded = dashboard
    evil = "/?token=x%0d%0aX-Injected:%201"
    response = _get(open_server, evil)
    assert response.status == 303 and response.getheader("X-Injected") is None
    assert response.getheader("Set-Cookie") is None
    response = _get(guarded, evil, {"Authorization": "Bearer s3cret-token-1"})
    assert response.status == 303 and response.getheader("X-Injected") is None
    assert response.getheader("Set-Cookie") is None  # the valid cookie is not overwritten with junk
    response = _get(guarded, "/?token=s3cret-token-1")
    assert response.getheader("Set-Cookie", "").startswith("tmuxagent_token=s3cret-token-1;")


def test_replay_verify_db_on_a_file_that_is_not_a_db_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    log.record("orchestrator_started")
    bad = tmp_path / "state.db"
    bad.write_text("not a SQLite database, only text " * 10)
    assert replay_main(["--log", str(log.path), "--verify-db", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "key '--verify-db'" in err and "file is not a database" in err and "Traceback" not in err


def test_send_keeps_the_commands_own_double_dash(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    # what argparse.REMAINDER hands over on Pythons that keep the separator
    args = argparse.Namespace(
        config=str(config),
        orchestrator_config=None,
        session=BOT,
        command=["--", "git", "diff", "--", "a.py"],
        no_check=True,
    )
    assert cmd_send(args) == 0
    store = StateStore(tmp_path / "state.db")
    assert [row.command for row in store.queued(BOT)] == ["git diff -- a.py"]
    store.close()


@pytest.mark.parametrize(("raw", "expected"), [("7.5", 7.5), ("soon", 30.0), ("0", 30.0), ("", 30.0)])
def test_doctor_reads_codex_timeout_like_the_orchestrator(tmp_path: Path, raw: str, expected: float) -> None:
    config = write_config(tmp_path)
    (tmp_path / ".tmuxagent" / "orchestrator.toml").write_text("[codex]\ntimeout_seconds = 30\n")
    assert codex_timeout(load_config(config), {"CODEX_TIMEOUT_SECONDS": raw}) == expected
