"""Unit tests of the WeCom channels against `responses` (in-process, no sockets, no sleeps)."""

from __future__ import annotations

import json
import traceback
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from orchestrator.adapters.wecom import AppChannel, ChannelError, WebhookChannel, channels_from_env, describe
from orchestrator.clock import ManualClock

BASE = "https://qyapi.weixin.qq.com"
SEND = f"{BASE}/cgi-bin/message/send"
TOKEN = f"{BASE}/cgi-bin/gettoken"


def unique(prefix: str) -> str:
    """Fresh secret values per test, so masking is proven by registration, not by earlier tests."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def key() -> str:
    return unique("key")


@pytest.fixture
def webhook(key: str) -> WebhookChannel:
    return WebhookChannel(f"{BASE}/cgi-bin/webhook/send?key={key}", timeout=2.0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def secret() -> str:
    return unique("corpsecret")


@pytest.fixture
def app(secret: str, clock: ManualClock) -> AppChannel:
    return AppChannel("corp1", "1000002", secret, timeout=2.0, clock=clock)


def ok() -> dict[str, object]:
    return {"errcode": 0, "errmsg": "ok"}


def add_token(rsps: responses.RequestsMock, token: str, expires_in: int = 7200) -> None:
    rsps.get(TOKEN, json={"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": expires_in})


def calls_to(rsps: responses.RequestsMock, path: str) -> list[responses.Call]:
    return [c for c in rsps.calls if urlsplit(c.request.url).path == path]


def query(call: responses.Call) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


def fail(channel: WebhookChannel | AppChannel) -> ChannelError:
    with pytest.raises(ChannelError) as info:
        channel.send("命令卡顿 weather/bot", "body")
    return info.value


# -- webhook -----------------------------------------------------------------------------


def test_webhook_posts_markdown_v2_with_title_heading(rsps, webhook: WebhookChannel, key: str) -> None:
    rsps.post(f"{BASE}/cgi-bin/webhook/send", json=ok())
    webhook.send("命令卡顿 weather/bot", "- exit code: 1\n- tail: `boom`")
    (call,) = rsps.calls
    assert query(call) == {"key": [key]}
    assert call.request.headers["Content-Type"] == "application/json"
    assert json.loads(call.request.body) == {
        "msgtype": "markdown_v2",
        "markdown_v2": {"content": "## 命令卡顿 weather/bot\n- exit code: 1\n- tail: `boom`"},
    }
    assert webhook.name == "webhook"


def test_errcode_on_http_200_is_a_failure(rsps, webhook: WebhookChannel, key: str) -> None:
    rsps.post(f"{BASE}/cgi-bin/webhook/send", json={"errcode": 93000, "errmsg": f"invalid webhook url {key}"})
    err = fail(webhook)
    assert (err.channel, err.kind, err.errcode, err.retry_after) == ("webhook", "refused", 93000, None)
    assert err.refusal is not None and err.refusal.scope == "channel" and "WECOM_WEBHOOK" in err.refusal.fix
    assert "93000" in str(err) and key not in str(err)


def test_an_errcode_outside_the_table_may_work_later(rsps, webhook: WebhookChannel) -> None:
    rsps.post(f"{BASE}/cgi-bin/webhook/send", json={"errcode": 12345, "errmsg": "something new"})
    err = fail(webhook)
    assert (err.kind, err.errcode, err.refusal) == ("errcode", 12345, None)


def test_rate_limit_45009_is_rate_limited_with_retry_after(rsps, webhook: WebhookChannel) -> None:
    rsps.post(f"{BASE}/cgi-bin/webhook/send", json={"errcode": 45009, "errmsg": "api freq out of limit"})
    err = fail(webhook)
    assert (err.kind, err.errcode, err.retry_after) == ("rate_limited", 45009, 60.0)


@pytest.mark.parametrize(
    "reply, kind",
    [
        ({"status": 500, "body": "internal error"}, "http"),
        ({"status": 404, "json": {"errcode": 404, "errmsg": "nope"}}, "http"),
        ({"status": 200, "body": "<html>gateway</html>"}, "bad_reply"),
        ({"status": 200, "json": {"hello": "world"}}, "bad_reply"),
        ({"body": requests.ConnectionError("connection refused")}, "network"),
        ({"body": requests.ConnectTimeout("connect timed out")}, "timeout"),
        ({"body": requests.ReadTimeout("read timed out")}, "timeout"),
    ],
)
def test_transport_and_reply_failures_map_to_kinds(rsps, webhook: WebhookChannel, reply, kind: str) -> None:
    rsps.post(f"{BASE}/cgi-bin/webhook/send", **reply)
    err = fail(webhook)
    assert (err.channel, err.kind) == ("webhook", kind)


def test_unreachable_host_is_network_error(webhook: WebhookChannel) -> None:
    with responses.RequestsMock():  # nothing registered: responses refuses the connection
        assert fail(webhook).kind == "network"


def test_api_base_replaces_scheme_host_and_port_only(rsps, key: str) -> None:
    channel = WebhookChannel(f"{BASE}/cgi-bin/webhook/send?key={key}", 2.0, api_base="http://127.0.0.1:8765/")
    rsps.post("http://127.0.0.1:8765/cgi-bin/webhook/send", json=ok())
    channel.send("t", "m")
    assert rsps.calls[0].request.url == f"http://127.0.0.1:8765/cgi-bin/webhook/send?key={key}"


# -- app ---------------------------------------------------------------------------------


def test_app_token_fetched_once_and_cached_across_sends(rsps, app: AppChannel, secret: str) -> None:
    add_token(rsps, "tok-A")
    rsps.post(SEND, json=ok())
    app.send("下一步建议 weather/bot", "1. run tests")
    app.send("命令卡顿 weather/bot", "x")
    (gettoken,) = calls_to(rsps, "/cgi-bin/gettoken")
    assert query(gettoken) == {"corpid": ["corp1"], "corpsecret": [secret]}
    sends = calls_to(rsps, "/cgi-bin/message/send")
    assert [query(c)["access_token"] for c in sends] == [["tok-A"], ["tok-A"]]
    assert json.loads(sends[0].request.body) == {
        "touser": "@all",  # nothing configured: every member the app can see
        "msgtype": "markdown",
        "agentid": 1000002,
        "markdown": {"content": "## 下一步建议 weather/bot\n1. run tests"},
    }
    assert app.name == "app"


def test_expired_token_42001_refetches_once_and_retries(rsps, app: AppChannel) -> None:
    add_token(rsps, "tok-old")
    add_token(rsps, "tok-new")
    rsps.post(SEND, json={"errcode": 42001, "errmsg": "access_token expired"})
    rsps.post(SEND, json=ok())
    app.send("t", "m")
    assert [urlsplit(c.request.url).path.rsplit("/", 1)[1] for c in rsps.calls] == [
        "gettoken",
        "send",
        "gettoken",
        "send",
    ]
    assert [query(c)["access_token"] for c in calls_to(rsps, "/cgi-bin/message/send")] == [["tok-old"], ["tok-new"]]
    rsps.post(SEND, json=ok())
    app.send("t", "m")  # the fresh token is cached
    assert len(calls_to(rsps, "/cgi-bin/gettoken")) == 2


def test_token_error_after_the_retry_is_reported_not_looped(rsps, app: AppChannel) -> None:
    add_token(rsps, "tok-1")
    rsps.post(SEND, json={"errcode": 40014, "errmsg": "invalid access_token"})
    err = fail(app)
    assert (err.kind, err.errcode) == ("token", 40014)
    assert len(calls_to(rsps, "/cgi-bin/gettoken")) == 2
    assert len(calls_to(rsps, "/cgi-bin/message/send")) == 2


def test_token_refreshed_after_clock_passes_expiry(rsps, app: AppChannel, clock: ManualClock) -> None:
    add_token(rsps, "tok-1", expires_in=7200)
    add_token(rsps, "tok-2", expires_in=7200)
    rsps.post(SEND, json=ok())
    app.send("t", "m")
    clock.advance(7200 - 60 - 1)  # still inside the safety margin
    app.send("t", "m")
    clock.advance(2)
    app.send("t", "m")
    assert [query(c)["access_token"][0] for c in calls_to(rsps, "/cgi-bin/message/send")] == ["tok-1", "tok-1", "tok-2"]


def test_gettoken_refusal_is_final_and_app_errcodes_are_checked(rsps, app: AppChannel, secret: str) -> None:
    rsps.get(TOKEN, json={"errcode": 40001, "errmsg": f"invalid credential corpsecret={secret}"})
    err = fail(app)
    assert (err.channel, err.kind, err.errcode) == ("app", "refused", 40001)
    assert err.refusal is not None and "WECOM_APP_SECRET" in err.refusal.fix
    assert secret not in str(err)
    rsps.replace(responses.GET, TOKEN, json={"errcode": -1, "errmsg": "system busy"})
    assert (fail(app).kind, fail(app).refusal) == ("token", None)  # -1 may work later
    rsps.replace(responses.GET, TOKEN, json={"errcode": 0, "access_token": "tok-9", "expires_in": 7200})
    rsps.post(SEND, json={"errcode": 45009, "errmsg": "api freq out of limit"})
    err = fail(app)
    assert (err.kind, err.retry_after) == ("rate_limited", 60.0)


def test_app_honours_api_base(rsps, secret: str) -> None:
    app = AppChannel("corp1", "7", secret, 2.0, api_base="http://127.0.0.1:9999", clock=ManualClock())
    rsps.get("http://127.0.0.1:9999/cgi-bin/gettoken", json={"errcode": 0, "access_token": "t0k", "expires_in": 7200})
    rsps.post("http://127.0.0.1:9999/cgi-bin/message/send", json=ok())
    app.send("t", "m")
    assert all(c.request.url.startswith("http://127.0.0.1:9999/cgi-bin/") for c in rsps.calls)


# -- secrets -----------------------------------------------------------------------------


def test_no_secret_in_any_error_message_or_repr(rsps, key: str, secret: str) -> None:
    token = unique("tok")
    hook = WebhookChannel(f"{BASE}/cgi-bin/webhook/send?key={key}", 2.0)
    app = AppChannel("corp1", "1000002", secret, 2.0, clock=ManualClock())
    errors: list[ChannelError] = []
    # Replies echo every secret known at that point (a token cannot be masked before it is issued).
    echo = f"url={BASE}/x?key={key} corpsecret {secret} bare {key}"
    for reply in (
        {"status": 500, "body": echo},
        {"status": 200, "body": echo},
        {"json": {"errcode": 93000, "errmsg": echo}},
        {"body": requests.ConnectionError(f"cannot connect to {BASE}/x?key={key}")},
    ):
        rsps.upsert(responses.POST, f"{BASE}/cgi-bin/webhook/send", **reply)
        errors.append(fail(hook))
    rsps.get(TOKEN, json={"errcode": 40001, "errmsg": echo})
    errors.append(fail(app))
    rsps.replace(responses.GET, TOKEN, json={"errcode": 0, "access_token": token, "expires_in": 7200})
    echo += f" token {token}"
    for reply in (
        {"json": {"errcode": 40014, "errmsg": echo}},
        {"status": 502, "body": echo},
        {"body": requests.ConnectionError(f"refused: {SEND}?access_token={token}")},
    ):
        rsps.upsert(responses.POST, SEND, **reply)
        errors.append(fail(app))
    with responses.RequestsMock():  # unregistered: responses' own error quotes the full URL
        errors.append(fail(hook))
    assert len(errors) == 9
    for err in errors:
        logged = "".join(traceback.format_exception(err))  # what log.exception would print
        for text in (str(err), repr(err), repr(err.args), err.message, logged):
            for leaked in (key, secret, token):
                assert leaked not in text, (leaked, text)
    for channel in (hook, app):
        assert key not in repr(channel) and secret not in repr(channel)


# -- configuration -----------------------------------------------------------------------


def test_channels_from_env_selection(key: str, secret: str) -> None:
    hook_url = f"{BASE}/cgi-bin/webhook/send?key={key}"
    app_env = {"WECOM_CORP_ID": "corp1", "WECOM_AGENT_ID": "1000002", "WECOM_APP_SECRET": secret}
    assert channels_from_env({}) == [] and describe([]) == "none"
    assert describe(channels_from_env({"WECOM_WEBHOOK": "  "})) == "none"
    assert describe(channels_from_env({"WECOM_WEBHOOK": hook_url})) == "webhook"
    assert describe(channels_from_env(app_env)) == "app"
    assert describe(channels_from_env({**app_env, "WECOM_APP_SECRET": ""})) == "none"
    both = channels_from_env({**app_env, "WECOM_WEBHOOK": hook_url}, timeout=3.0)
    assert describe(both) == "webhook, app"
    assert [c.timeout for c in both] == [3.0, 3.0]
    rebased = channels_from_env({**app_env, "WECOM_API_BASE": "http://127.0.0.1:1234"})
    assert rebased[0].api_base == "http://127.0.0.1:1234"


def test_channels_from_env_skips_malformed_values_without_leaking(key: str, secret: str, caplog) -> None:
    env = {
        "WECOM_WEBHOOK": f"not-a-url-{key}",
        "WECOM_CORP_ID": "c",
        "WECOM_AGENT_ID": "x1",
        "WECOM_APP_SECRET": secret,
    }
    assert channels_from_env(env) == []
    assert "WECOM_WEBHOOK" in caplog.text and "WECOM_AGENT_ID" in caplog.text
    assert key not in caplog.text and secret not in caplog.text


def test_channels_from_env_reuses_equal_channels_and_their_token(rsps, key: str, secret: str) -> None:
    env = {
        "WECOM_WEBHOOK": f"{BASE}/cgi-bin/webhook/send?key={key}",
        "WECOM_CORP_ID": "corp1",
        "WECOM_AGENT_ID": "1000002",
        "WECOM_APP_SECRET": secret,
    }
    clock = ManualClock()
    first = channels_from_env(env, clock=clock)
    again = channels_from_env(dict(env), previous=first, clock=clock)
    assert [a is b for a, b in zip(first, again, strict=True)] == [True, True]
    add_token(rsps, "tok-keep")
    rsps.post(SEND, json=ok())
    first[1].send("t", "m")
    again = channels_from_env(dict(env), previous=again, clock=clock)
    again[1].send("t", "m")
    assert len(calls_to(rsps, "/cgi-bin/gettoken")) == 1
    changed = channels_from_env({**env, "WECOM_APP_SECRET": secret + "2"}, previous=again, clock=clock)
    assert changed[0] is first[0] and changed[1] is not first[1]
    only_app = channels_from_env({k: v for k, v in env.items() if k != "WECOM_WEBHOOK"}, previous=again)
    assert only_app == [first[1]]


def test_rate_key_names_the_robot_without_its_key(key: str, secret: str) -> None:
    url = f"{BASE}/cgi-bin/webhook/send?key={key}"
    one, same = WebhookChannel(url, 2.0), WebhookChannel(url, 9.0, api_base="http://127.0.0.1:1")
    other = WebhookChannel(f"{BASE}/cgi-bin/webhook/send?key={key}x", 2.0)
    assert one.rate_key == same.rate_key != other.rate_key
    assert key not in one.rate_key and one.rate_key.startswith("webhook:")
    app = AppChannel("corp1", "1000002", secret, 2.0, clock=ManualClock())
    assert app.rate_key == "app:corp1:1000002" and secret not in app.rate_key


def test_app_body_carries_only_the_recipients_set(rsps, secret: str) -> None:
    add_token(rsps, "tok")
    rsps.post(SEND, json=ok())
    [app] = channels_from_env(
        {"WECOM_CORP_ID": "corp1", "WECOM_AGENT_ID": "7", "WECOM_APP_SECRET": secret, "WECOM_TOTAG": "1|2"}
    )
    app.send("t", "m")
    body = json.loads(calls_to(rsps, "/cgi-bin/message/send")[0].request.body)
    assert (body["totag"], "touser" in body, "toparty" in body) == ("1|2", False, False)
