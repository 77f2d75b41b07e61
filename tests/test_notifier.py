"""The notifier in-process: outbox first, dedupe, rate limit, backoff, degradation
said once, and the environment re-read without a restart. Channels here are
small recording doubles of WeCom (the HTTP clients have their own tests)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.adapters.wecom import ChannelError
from orchestrator.clock import ManualClock
from orchestrator.config import NotificationSettings
from orchestrator.envfile import EnvSource, parse_env_text
from orchestrator.notify.notifier import NO_CHANNEL, Notifier
from orchestrator.state.audit import AuditLog
from orchestrator.state.audit_read import read_events
from orchestrator.state.outbox import Outbox
from orchestrator.state.store import StateStore


@dataclass
class RecordingChannel:
    name: str = "webhook"
    fail_with: ChannelError | None = None
    rate_key: str = ""  # empty: the notifier counts by name
    sent: list[str] = field(default_factory=list)

    def send(self, title: str, markdown: str) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(title)


@dataclass
class Rig:
    notifier: Notifier
    channel: RecordingChannel
    clock: ManualClock
    env_file: Path
    audit_path: Path

    def events(self) -> list[str]:
        return [e["event"] for e in read_events(self.audit_path).events]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    clock = ManualClock()
    channel = RecordingChannel()
    env_file = tmp_path / ".env"
    env_file.write_text("WECOM_WEBHOOK=https://example.invalid/send?key=key-one-1234\n")
    store = StateStore(tmp_path / "state.db", clock=clock)
    audit = AuditLog(tmp_path / "audit.jsonl", clock=clock)

    def channels(env, timeout, previous):
        return [channel] if env.get("WECOM_WEBHOOK") else []

    settings = NotificationSettings(
        dedupe_seconds=60, retry_backoff_seconds=2, rate_limit_per_minute=3, rate_limit_backoff_seconds=5
    )
    notifier = Notifier(
        outbox=Outbox(store),
        env=EnvSource(env_file, base={}),
        settings=settings,
        metrics=OrchestratorMetrics(),
        audit=audit,
        clock=clock,
        channel_factory=channels,
    )
    return Rig(notifier, channel, clock, env_file, tmp_path / "audit.jsonl")


def alert(rig: Rig, key: str) -> int | None:
    return rig.notifier.notify(kind="stall", session="weather/bot", title=f"命令卡顿 · {key}", body="b", dedupe_key=key)


def test_sends_what_the_outbox_holds(rig: Rig) -> None:
    alert(rig, "one")
    rig.notifier.flush_once()
    assert rig.channel.sent == ["命令卡顿 · one"]
    assert rig.notifier.outbox.pending() == []


def test_the_same_alert_within_its_window_is_suppressed(rig: Rig) -> None:
    assert alert(rig, "same") is not None
    assert alert(rig, "same") is None
    rig.clock.advance(61)
    assert alert(rig, "same") is not None


def test_rate_limit_holds_messages_without_counting_a_failure(rig: Rig) -> None:
    for i in range(5):
        alert(rig, f"k{i}")
    rig.notifier.flush_once()
    assert len(rig.channel.sent) == 3 and len(rig.notifier.outbox.pending()) == 2
    assert rig.notifier.degraded_reason is None
    rig.clock.advance(60)
    rig.notifier.flush_once()
    assert len(rig.channel.sent) == 5


def test_failure_backs_off_degrades_once_and_recovers(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.channel.fail_with = ChannelError("webhook", "http", "HTTP 500")
    alert(rig, "a")
    alert(rig, "b")
    with caplog.at_level(logging.WARNING):
        rig.notifier.flush_once()
        rig.notifier.flush_once()  # inside the backoff: not retried, not said again
    assert sum("notifications degraded" in r.message for r in caplog.records) == 1
    assert [m.attempts for m in rig.notifier.outbox.pending()] == [1, 1]
    rig.channel.fail_with = None
    rig.clock.advance(2.5)
    rig.notifier.flush_once()
    # HTTP 500s never reached WeCom's API: they do not use up the robot's 3 a minute.
    assert rig.channel.sent == ["命令卡顿 · a", "命令卡顿 · b"]
    assert rig.events().count("notifications_degraded") == 1 and "notifications_recovered" in rig.events()


def test_rate_limited_errcode_waits_the_configured_backoff(rig: Rig) -> None:
    rig.channel.fail_with = ChannelError("webhook", "rate_limited", "45009", errcode=45009, retry_after=60)
    alert(rig, "x")
    rig.notifier.flush_once()
    [message] = rig.notifier.outbox.pending()
    assert message.next_attempt_at == pytest.approx(rig.clock.now() + 5)


def test_removing_and_restoring_the_variable_takes_effect_without_restart(rig: Rig) -> None:
    rig.env_file.write_text("# WECOM_WEBHOOK removed\n")
    alert(rig, "kept")
    rig.notifier.flush_once()
    assert rig.notifier.degraded_reason == NO_CHANNEL and rig.channel.sent == []
    rig.env_file.write_text("WECOM_WEBHOOK=https://example.invalid/send?key=key-two-5678\n")
    rig.notifier.flush_once()
    assert rig.channel.sent == ["命令卡顿 · kept"] and rig.notifier.degraded_reason is None


def test_env_text_is_read_like_a_shell_would() -> None:
    text = "# comment\nexport A=1\nB='two words'\nC=\"x=y\"  # trailing\nbad line\nD=\n"
    assert parse_env_text(text) == {"A": "1", "B": "two words", "C": "x=y", "D": ""}


def refused(errcode: int, channel: str = "webhook") -> ChannelError:
    return ChannelError(channel, "refused", f"errcode {errcode}: refused", errcode=errcode)


def test_a_refused_message_ends_dead_without_degrading_or_blocking_the_others(rig: Rig) -> None:
    rig.channel.fail_with = refused(40058)
    alert(rig, "too-long")
    rig.notifier.flush_once()
    rig.channel.fail_with = None
    alert(rig, "next")
    rig.notifier.flush_once()
    assert rig.channel.sent == ["命令卡顿 · next"]
    [dead] = rig.notifier.outbox.dead()
    assert dead.title == "命令卡顿 · too-long" and "40058" in (dead.last_error or "")
    assert rig.notifier.outbox.pending() == [] and rig.notifier.degraded_reason is None
    registry = rig.notifier.metrics.registry
    assert registry.get_sample_value("orchestrator_notifications_degraded") == 0
    assert registry.get_sample_value("orchestrator_notifications_pending") == 0
    assert "notification_dead" in rig.events() and "notifications_degraded" not in rig.events()


def test_a_message_one_channel_refuses_waits_for_the_other(rig: Rig) -> None:
    app = RecordingChannel(name="app", fail_with=ChannelError("app", "timeout", "no reply within 5s"))
    rig.channel.fail_with = refused(40058)
    rig.notifier.channel_factory = lambda env, timeout, previous: [rig.channel, app]
    alert(rig, "x")
    rig.notifier.flush_once()
    assert rig.notifier.outbox.dead() == [] and len(rig.notifier.outbox.pending()) == 1
    assert rig.notifier.degraded_reason is None  # the webhook works for other messages
    app.fail_with = None
    rig.clock.advance(2.5)
    rig.notifier.flush_once()
    assert app.sent == ["命令卡顿 · x"] and rig.notifier.outbox.pending() == []


def test_a_message_every_channel_refuses_for_good_is_dead_once(rig: Rig) -> None:
    app = RecordingChannel(name="app", fail_with=refused(81013, "app"))
    rig.channel.fail_with = refused(93000)
    rig.notifier.channel_factory = lambda env, timeout, previous: [rig.channel, app]
    alert(rig, "x")
    rig.notifier.flush_once()
    [dead] = rig.notifier.outbox.dead()
    assert "webhook errcode 93000" in (dead.last_error or "") and "app errcode 81013" in (dead.last_error or "")
    assert rig.notifier.degraded_reason is not None  # both refused their configuration: nothing can deliver
    registry = rig.notifier.metrics.registry
    for channel, errcode in (("webhook", "93000"), ("app", "81013")):
        labels = {"channel": channel, "errcode": errcode}
        assert registry.get_sample_value("orchestrator_notifications_dead_total", labels) == 1


def test_two_channels_of_one_robot_share_its_rate_limit(rig: Rig) -> None:
    """The limit is WeCom's per robot: a rebuilt channel object (or a second one) with the same
    key does not get a fresh budget, and attempts WeCom answered with an errcode count too."""
    twin = RecordingChannel(name="webhook")
    rig.channel.rate_key = twin.rate_key = "webhook:same-robot"
    rig.channel.fail_with = ChannelError("webhook", "errcode", "errcode 12345: new", errcode=12345)
    alert(rig, "a")
    rig.notifier.flush_once()  # 1 attempt, refused
    rig.notifier.channel_factory = lambda env, timeout, previous: [twin]
    for key in ("b", "c", "d"):
        alert(rig, key)
    rig.clock.advance(2.5)
    rig.notifier.flush_once()
    assert len(twin.sent) == 2  # 3 a minute, one already used by the refused attempt


def test_a_message_refused_for_its_content_is_not_revived_by_a_new_configuration(rig: Rig) -> None:
    rig.channel.fail_with = refused(40058)
    alert(rig, "too-long")
    rig.notifier.flush_once()
    rig.channel.fail_with = None
    rig.env_file.write_text("WECOM_WEBHOOK=https://example.invalid/send?key=key-two-5678\n")
    rig.notifier.channel_factory = lambda env, timeout, previous: [RecordingChannel(name="webhook")]
    rig.notifier.flush_once()
    assert len(rig.notifier.outbox.dead()) == 1 and rig.channel.sent == []


def test_an_old_state_db_gains_the_dead_scope_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the outbox as an earlier version created it
        db.execute(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, dedupe_key TEXT NOT NULL, kind TEXT NOT NULL,"
            " session TEXT, title TEXT NOT NULL, body TEXT NOT NULL, created_at REAL NOT NULL,"
            " status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,"
            " next_attempt_at REAL NOT NULL DEFAULT 0, last_error TEXT, channel TEXT, sent_at REAL)"
        )
        db.execute("INSERT INTO outbox(dedupe_key, kind, title, body, created_at) VALUES ('k', 'stall', 't', 'b', 1)")
    store = StateStore(path)
    outbox = Outbox(store)
    [message] = outbox.pending()
    outbox.mark_dead(message.id, "webhook errcode 93000", "channel")
    assert [m.dead_scope for m in outbox.dead()] == ["channel"]
    assert outbox.revive(since=0) == 1 and len(outbox.pending()) == 1
    store.close()


def test_the_rate_limit_window_survives_a_restart(rig: Rig) -> None:
    """WeCom counts a robot's requests per minute whoever sent them: an orchestrator restarted
    inside that minute must not start a fresh count and send past the limit."""
    for i in range(5):
        alert(rig, f"k{i}")
    rig.notifier.flush_once()
    assert len(rig.channel.sent) == 3  # the limit (3 a minute here) is used up
    old = rig.notifier
    restarted = Notifier(
        outbox=Outbox(old.outbox.store),
        env=old.env,
        settings=old.settings,
        metrics=OrchestratorMetrics(),
        audit=old.audit,
        clock=rig.clock,
        channel_factory=old.channel_factory,
    )
    rig.clock.advance(30)
    restarted.flush_once()
    assert len(rig.channel.sent) == 3  # still inside the minute of the first three
    rig.clock.advance(31)
    restarted.flush_once()
    assert len(rig.channel.sent) == 5
