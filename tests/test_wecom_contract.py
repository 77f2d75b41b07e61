"""The product against WeCom's published contract, through real HTTP: the strict WeCom mock
(byte limits, 20 a minute per robot, known keys and secrets, recipients, `markdown_v2`) and a
real forward proxy. Each test fails if the product sends what WeCom would refuse."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.adapters.wecom import AppChannel, Channel, ChannelError, WebhookChannel, channels_from_env
from orchestrator.adapters.wecom_limits import APP_MARKDOWN_LIMIT, WEBHOOK_LIMITS, fit, lines_cut_mark, utf8_len
from orchestrator.clock import ManualClock
from orchestrator.config import NotificationSettings
from orchestrator.envfile import EnvSource
from orchestrator.notify.notifier import Notifier, alert_markdown
from orchestrator.state.audit import AuditLog
from orchestrator.state.audit_read import read_events
from orchestrator.state.outbox import Outbox
from orchestrator.state.store import StateStore
from pytest_tmuxagent.proxy_servers import HttpProxy
from pytest_tmuxagent.wecom_mock import WeComMock

SESSION = "weather/bot"
TITLE = "命令失败 · weather/bot"
SESSION_LINE = f"> 会话 session: **{SESSION}**"


PHRASE = "构建失败：找不到模块，请检查依赖是否已经安装完成，然后重新运行构建脚本"


def chinese_tail(lines: int = 60) -> str:
    """A failing build's output in Chinese, the size of the issue's alert (2,340 characters,
    6,295 bytes): 60 lines of 38 characters, 104 bytes each, so 2,339 characters, 6,299 bytes."""
    return "\n".join(f"{i:02d} {PHRASE[:33]}!!" for i in range(lines))


def long_alert() -> str:
    return alert_markdown(SESSION, [("退出码 exit code", "1"), ("命令 command", "`make build`")], chinese_tail())


@pytest.fixture
def mock() -> Iterator[WeComMock]:
    with WeComMock() as server:
        yield server


def sent_contents(mock: WeComMock) -> list[tuple[str, str]]:
    """(msgtype, content) of every request the mock accepted, decoded from the raw body bytes."""
    out = []
    for rec in mock.requests:
        if rec.message is None:
            continue
        body = json.loads(rec.body.decode("utf-8"))  # raises on invalid UTF-8
        out.append((body["msgtype"], body[body["msgtype"]]["content"]))
    return out


# -- cutting to the byte limit -----------------------------------------------------------------


def test_a_long_chinese_alert_arrives_on_both_channels_within_their_limits(mock: WeComMock) -> None:
    body = long_alert()
    tail = chinese_tail()
    assert (len(tail), utf8_len(tail)) == (2339, 6299)
    env = {**mock.env("webhook"), **mock.env("app")}
    channels = channels_from_env(env)
    for channel in channels:
        channel.send(TITLE, body)
    assert [v.line() for v in mock.violations] == []
    delivered = sent_contents(mock)
    assert [msgtype for msgtype, _ in delivered] == ["markdown_v2", "markdown"]
    for (msgtype, content), limit in zip(delivered, (WEBHOOK_LIMITS["markdown_v2"], APP_MARKDOWN_LIMIT), strict=True):
        size = utf8_len(content)
        assert size <= limit, (msgtype, size)
        assert size > limit - 200, (msgtype, size)  # cut to the limit, not far below it
        assert content.startswith(f"## {TITLE}\n{SESSION_LINE}\n"), content[:120]
        assert "> 退出码 exit code: 1" in content
        assert "lines cut" in content
        assert tail.rsplit("\n", 1)[1] in content  # the newest line (the error) survives
        assert content.endswith("\n```")  # the code block is still closed


def test_fit_drops_the_oldest_lines_of_the_last_fenced_block_with_a_count() -> None:
    head = f"## {TITLE}\n{SESSION_LINE}\n最后输出 last output:\n```\n"
    lines = [f"行{i}" for i in range(100)]  # 4 or 5 bytes each
    content = head + "\n".join(lines) + "\n```"
    limit = utf8_len(head) + 200
    cut = fit(content, limit)
    assert utf8_len(cut) <= limit
    kept = cut[len(head) : -len("\n```")].split("\n")
    dropped = int(kept[0].split()[1])
    assert kept[0] == lines_cut_mark(dropped)
    assert kept[1:] == lines[dropped:]  # exactly the newest lines, in order
    assert utf8_len(fit(content, limit + 5)) > utf8_len(cut) - 1  # more room never keeps less


def test_fit_leaves_a_message_of_exactly_the_limit_alone() -> None:
    content = f"## {TITLE}\n```\n" + "错" * 1000 + "\n```"
    assert fit(content, utf8_len(content)) == content
    assert fit(content, utf8_len(content) - 1) != content


@pytest.mark.parametrize("limit", range(60, 140))
def test_fit_never_splits_a_character(limit: int) -> None:
    emoji_line = "🚀错" * 80  # 4- and 3-byte characters, one line, no newline to cut at
    for content in (f"## t\n```\n{emoji_line}\n```", f"## {emoji_line}"):
        cut = fit(content, limit)
        assert utf8_len(cut) <= limit
        cut.encode("utf-8").decode("utf-8")  # still valid
        assert cut.startswith("## ")


def test_one_huge_output_line_keeps_its_newest_end() -> None:
    content = f"## {TITLE}\n{SESSION_LINE}\n```\n" + "旧" * 3000 + "新的结尾 error: boom\n```"
    cut = fit(content, 2048)
    assert utf8_len(cut) <= 2048
    assert SESSION_LINE in cut and cut.endswith("新的结尾 error: boom\n```")
    assert "\n…旧" in cut  # the cut start is marked


def test_without_a_code_block_the_text_is_cut_with_a_mark() -> None:
    cut = fit("## 标题\n" + "很长的说明。" * 1000, 2048)
    assert utf8_len(cut) <= 2048 and cut.startswith("## 标题\n")
    assert cut.endswith("message cut to fit WeCom's size limit")


# -- recipients, rate limit, refusals ------------------------------------------------------------


def test_app_recipients_come_from_the_environment(mock: WeComMock) -> None:
    env = {**mock.env("app"), "WECOM_TOUSER": "zhangsan | lisi", "WECOM_TOPARTY": "2,3", "WECOM_TOTAG": ""}
    [app] = channels_from_env(env)
    assert isinstance(app, AppChannel)
    app.send(TITLE, "> hello")
    [send] = [r for r in mock.requests if r.path == "/cgi-bin/message/send"]
    assert {k: send.json.get(k) for k in ("touser", "toparty", "totag")} == {
        "touser": "zhangsan|lisi",
        "toparty": "2|3",
        "totag": None,
    }
    assert mock.violations == []


@pytest.fixture
def notifier(tmp_path: Path, mock: WeComMock) -> Iterator[Notifier]:
    store = StateStore(tmp_path / "state.db", clock=ManualClock())
    notifier = Notifier(
        outbox=Outbox(store),
        env=EnvSource(None, base=mock.env("webhook")),
        settings=NotificationSettings(dedupe_seconds=0),
        metrics=OrchestratorMetrics(),
        audit=AuditLog(tmp_path / "audit.jsonl", clock=store.clock),
        clock=store.clock,
    )
    yield notifier
    store.close()


def queue(notifier: Notifier, count: int, body: str = "> b") -> None:
    for i in range(count):
        notifier.notify(kind="stall", session=SESSION, title=f"命令卡顿 · {i}", body=body, dedupe_key=f"k{i}")


def test_the_notifier_keeps_to_20_requests_a_minute_per_robot(notifier: Notifier, mock: WeComMock) -> None:
    queue(notifier, 25)
    notifier.flush_once()
    notifier.flush_once()  # a second round inside the same minute sends nothing more
    assert len(mock.messages()) == 20 and len(notifier.outbox.pending()) == 5
    assert mock.violations == []  # no 45009: the product never asked for a 21st


def test_an_invalid_webhook_key_ends_the_message_dead_with_the_fix(
    notifier: Notifier, mock: WeComMock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mock.expect_violation(93000)
    notifier.env = EnvSource(None, base={**mock.env("webhook"), "WECOM_WEBHOOK": mock.webhook_url("no-such-robot")})
    queue(notifier, 1, long_alert())
    with caplog.at_level(logging.ERROR, logger="orchestrator.notify"):
        notifier.flush_once()
        notifier.clock.advance(3600)
        notifier.flush_once()  # nothing left to retry
    assert len([r for r in mock.requests if r.errcode == 93000]) == 1
    [dead] = notifier.outbox.dead()
    assert dead.status == "dead" and notifier.outbox.pending() == [] and notifier.outbox.due() == []
    assert "93000" in (dead.last_error or "") and "WECOM_WEBHOOK" in (dead.last_error or "")
    [line] = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert "errcode 93000" in line and "fix:" in line and "no-such-robot" not in line
    registry = notifier.metrics.registry
    assert registry.get_sample_value(
        "orchestrator_notifications_dead_total", {"channel": "webhook", "errcode": "93000"}
    ) == pytest.approx(1)
    events = [e["event"] for e in read_events(tmp_path / "audit.jsonl").events]
    assert "notification_dead" in events
    # a wrong key is the channel's configuration: no channel can deliver, so that is degraded
    assert registry.get_sample_value("orchestrator_notifications_degraded") == 1


# -- proxies -----------------------------------------------------------------------------------


def test_a_channel_sends_through_the_proxy_the_env_mapping_names(mock: WeComMock) -> None:
    with HttpProxy() as proxy:
        env = {**mock.env("webhook"), "HTTP_PROXY": proxy.url}
        [hook] = channels_from_env(env)
        hook.send(TITLE, "> via the proxy")
        assert proxy.targets() == [f"127.0.0.1:{mock.port}"]
        assert len(mock.messages()) == 1
        [direct] = channels_from_env({**env, "NO_PROXY": "127.0.0.1"}, previous=[hook])
        assert direct is not hook  # the proxy is part of the configuration
        direct.send(TITLE, "> direct")
        assert len(proxy.targets()) == 1 and len(mock.messages()) == 2


def test_the_proxy_and_recipients_are_part_of_the_channel_identity(mock: WeComMock) -> None:
    env = {**mock.env("webhook"), **mock.env("app"), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": ""}
    first: list[Channel] = channels_from_env(env)
    assert channels_from_env(dict(env), previous=first) == first
    moved = channels_from_env({**env, "HTTP_PROXY": "http://127.0.0.1:8"}, previous=first)
    assert [a is b for a, b in zip(first, moved, strict=True)] == [False, False]
    retargeted = channels_from_env({**env, "WECOM_TOUSER": "zhangsan"}, previous=first)
    assert [a is b for a, b in zip(first, retargeted, strict=True)] == [True, False]
    assert isinstance(first[0], WebhookChannel)


def test_fixing_the_key_delivers_what_died_of_it(notifier: Notifier, mock: WeComMock) -> None:
    mock.expect_violation(93000)
    good = mock.env("webhook")
    notifier.env = EnvSource(None, base={**good, "WECOM_WEBHOOK": mock.webhook_url("no-such-robot")})
    queue(notifier, 2)
    notifier.flush_once()
    assert len(notifier.outbox.dead()) == 2 and mock.messages() == []
    notifier.flush_once()  # the same configuration: nothing is tried again
    assert len([r for r in mock.requests if r.errcode == 93000]) == 2
    notifier.env = EnvSource(None, base=good)  # the user fixes WECOM_WEBHOOK
    notifier.flush_once()
    assert sorted(m.split("\n")[0] for m in mock.messages()) == ["## 命令卡顿 · 0", "## 命令卡顿 · 1"]
    assert notifier.outbox.dead() == [] and notifier.outbox.pending() == []
    assert notifier.degraded_reason is None


def test_a_proxy_the_client_cannot_use_is_one_clear_error_with_the_fix(mock: WeComMock) -> None:
    [hook] = channels_from_env({**mock.env("webhook"), "ALL_PROXY": "ftp://user:pa55word@127.0.0.1:21"})
    with pytest.raises(ChannelError) as info:
        hook.send(TITLE, "> x")
    err = info.value
    assert err.kind == "network" and err.refusal is None  # the user can fix it: retried, not dead
    assert "ftp://" in str(err) and "use one of" in str(err) and "pa55word" not in str(err)
    assert mock.requests == []
