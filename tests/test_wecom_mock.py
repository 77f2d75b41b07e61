"""Tests for the real-HTTP WeCom mock, driven over real sockets with urllib."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Optional

import pytest

from pytest_tmuxagent.waiting import WaitTimeout
from pytest_tmuxagent.wecom_mock import WeComMock


@pytest.fixture
def wecom() -> Iterator[WeComMock]:
    with WeComMock(slow_seconds=0.3) as mock:
        yield mock


def call(url: str, payload: Optional[dict[str, Any]] = None, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
    """POST ``payload`` as JSON (or GET when None); return (HTTP status, JSON reply)."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def markdown(text: str) -> dict[str, Any]:
    return {"msgtype": "markdown", "markdown": {"content": text}}


def app_send(mock: WeComMock, text: str, token: Optional[str] = None) -> tuple[int, dict[str, Any]]:
    if token is None:
        token = call(f"{mock.url}/cgi-bin/gettoken?corpid=corp&corpsecret=s3cret")[1]["access_token"]
    body = {"touser": "@all", "msgtype": "text", "agentid": 1000002, "text": {"content": text}}
    return call(f"{mock.url}/cgi-bin/message/send?access_token={token}", body)


def test_webhook_markdown_and_text_are_delivered_and_recorded(wecom: WeComMock) -> None:
    assert wecom.url.startswith("http://127.0.0.1:") and wecom.port > 0
    assert call(wecom.webhook_url("k1"), markdown("## 命令卡顿 weather/bot")) == (200, {"errcode": 0, "errmsg": "ok"})
    assert call(wecom.webhook_url(), {"msgtype": "text", "text": {"content": "plain"}})[1]["errcode"] == 0
    assert wecom.messages() == ["## 命令卡顿 weather/bot", "plain"]
    first = wecom.requests[0]
    assert (first.method, first.path, first.query) == ("POST", "/cgi-bin/webhook/send", {"key": "k1"})
    assert first.headers["Content-Type"] == "application/json"
    assert json.loads(first.body) == first.json == markdown("## 命令卡顿 weather/bot")
    assert (first.status, first.errcode, first.fault) == (200, 0, None)
    assert abs(first.time - time.time()) < 60


def test_requests_is_a_copy(wecom: WeComMock) -> None:
    wecom.requests.append("junk")  # type: ignore[arg-type]
    assert wecom.requests == []


def test_gettoken_and_app_send_with_token_expiry(wecom: WeComMock) -> None:
    status, reply = call(f"{wecom.url}/cgi-bin/gettoken?corpid=corp&corpsecret=s3cret")
    assert status == 200 and reply["errcode"] == 0 and reply["expires_in"] == 7200
    old = reply["access_token"]
    assert old == wecom.access_token
    assert app_send(wecom, "first", token=old)[1]["errcode"] == 0

    wecom.expire_tokens()
    assert wecom.access_token != old
    assert app_send(wecom, "stale", token=old)[1] == {"errcode": 42001, "errmsg": "access_token expired"}
    assert app_send(wecom, "refreshed")[1]["errcode"] == 0
    assert wecom.messages() == ["first", "refreshed"]


def test_gettoken_requires_credentials_and_unknown_paths_are_404(wecom: WeComMock) -> None:
    assert call(f"{wecom.url}/cgi-bin/gettoken?corpid=corp")[1]["errcode"] == 41002
    assert call(f"{wecom.url}/cgi-bin/nope", markdown("x"))[0] == 404
    assert wecom.messages() == []


def test_invalid_message_bodies_are_rejected(wecom: WeComMock) -> None:
    assert call(wecom.webhook_url(), {"msgtype": "image", "image": {}})[1]["errcode"] == 40008
    assert call(wecom.webhook_url(), markdown(""))[1]["errcode"] == 40008
    assert call(f"{wecom.url}/cgi-bin/webhook/send", markdown("no key"))[1]["errcode"] == 93000
    assert wecom.messages() == [] and len(wecom.requests) == 3


def test_fail_next_http_500_then_recovers(wecom: WeComMock) -> None:
    wecom.fail_next("http_500")
    assert call(wecom.webhook_url(), markdown("lost"))[0] == 500
    assert call(wecom.webhook_url(), markdown("kept"))[0] == 200
    assert wecom.messages() == ["kept"]
    assert [r.fault for r in wecom.requests] == ["http_500", None]


def test_fail_next_rate_limit_counts_down(wecom: WeComMock) -> None:
    wecom.fail_next("rate_limit", times=2)
    codes = [call(wecom.webhook_url(), markdown(f"m{i}"))[1]["errcode"] for i in range(3)]
    assert codes == [45009, 45009, 0]
    assert wecom.messages() == ["m2"]


def test_token_expired_fault_applies_only_to_app_send(wecom: WeComMock) -> None:
    wecom.fail_next("token_expired")
    assert call(wecom.webhook_url(), markdown("webhook unaffected"))[1]["errcode"] == 0
    assert app_send(wecom, "app")[1]["errcode"] == 42001
    assert app_send(wecom, "app again")[1]["errcode"] == 0
    assert wecom.messages() == ["webhook unaffected", "app again"]


def test_set_mode_persists_until_reset(wecom: WeComMock) -> None:
    wecom.set_mode("rate_limit")
    assert [call(wecom.webhook_url(), markdown("x"))[1]["errcode"] for _ in range(3)] == [45009] * 3
    assert call(f"{wecom.url}/cgi-bin/gettoken?corpid=c&corpsecret=s")[1]["errcode"] == 0
    wecom.reset()
    assert call(wecom.webhook_url(), markdown("after reset"))[1]["errcode"] == 0
    assert wecom.messages() == ["after reset"]


def test_slow_mode_delays_replies(wecom: WeComMock) -> None:
    wecom.set_mode("slow")
    with pytest.raises(OSError):  # socket.timeout / URLError(timeout) on the client side
        call(wecom.webhook_url(), markdown("client gave up"), timeout=0.05)
    start = time.monotonic()
    assert call(wecom.webhook_url(), markdown("patient"), timeout=5)[1]["errcode"] == 0
    assert time.monotonic() - start >= wecom.slow_seconds
    assert "patient" in wecom.messages()


def test_refuse_mode_refuses_connections_then_reset_reopens_same_port(wecom: WeComMock) -> None:
    url, port = wecom.webhook_url(), wecom.port
    wecom.set_mode("refuse")
    with pytest.raises(urllib.error.URLError) as info:
        call(url, markdown("refused"))
    assert isinstance(info.value.reason, ConnectionRefusedError)
    wecom.reset()
    assert wecom.port == port
    assert call(url, markdown("back"))[1]["errcode"] == 0
    assert wecom.messages() == ["back"]


def test_stop_while_refusing_releases_the_port() -> None:
    mock = WeComMock().start()
    port = mock.port
    mock.set_mode("refuse")
    mock.stop()
    with socket.socket() as sock:  # would fail with EADDRINUSE if the placeholder leaked
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_bad_fault_kinds_are_rejected(wecom: WeComMock) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        wecom.fail_next("explode")
    with pytest.raises(ValueError, match="set_mode"):
        wecom.fail_next("refuse")


def test_wait_for_messages_waits_for_concurrent_senders(wecom: WeComMock) -> None:
    senders = [threading.Thread(target=call, args=(wecom.webhook_url(), markdown(f"n{i}"))) for i in range(8)]
    for t in senders:
        t.start()
    assert sorted(wecom.wait_for_messages(8, timeout=5)) == sorted(f"n{i}" for i in range(8))
    for t in senders:
        t.join()
    with pytest.raises(WaitTimeout, match="9 delivered WeCom message"):
        wecom.wait_for_messages(9, timeout=0.05)


def test_expectations_and_check_assertions(wecom: WeComMock) -> None:
    wecom.expect_message("命令连续失败")
    wecom.expect_message("下一步建议")
    call(wecom.webhook_url(), markdown("## 命令连续失败 weather/bot x3"))
    with pytest.raises(AssertionError) as info:
        wecom.check_assertions()
    report = str(info.value)
    assert "contains '下一步建议'" in report and "contains '命令连续失败'" not in report

    call(wecom.webhook_url(), markdown("## 下一步建议 weather/bot"))
    wecom.check_assertions()

    call(f"{wecom.url}/cgi-bin/wrong", markdown("x"))
    with pytest.raises(AssertionError, match="unexpected request POST /cgi-bin/wrong"):
        wecom.check_assertions()


def test_clear_forgets_requests_and_expectations(wecom: WeComMock) -> None:
    wecom.expect_message("never sent")
    call(wecom.webhook_url(), markdown("x"))
    wecom.clear()
    assert wecom.requests == [] and wecom.messages() == []
    wecom.check_assertions()


def test_context_manager_stops_listening() -> None:
    with WeComMock() as mock:
        url = mock.webhook_url()
        assert call(url, markdown("hi"))[0] == 200
    with pytest.raises(urllib.error.URLError):
        call(url, markdown("after stop"), timeout=1)
