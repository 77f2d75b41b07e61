"""Tests for the real-HTTP WeCom mock, driven over real sockets with urllib: delivery, faults,
WeCom's contract (strict by default) and the session-end check of its violations."""

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

from pytest_tmuxagent.waiting import WaitTimeout, wait_until
from pytest_tmuxagent.wecom_contract import DEFAULT_APP_SECRET
from pytest_tmuxagent.wecom_mock import WeComLimits, WeComMock


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


def gettoken(mock: WeComMock, corpid: str = WeComMock.CORP_ID, secret: str = DEFAULT_APP_SECRET) -> dict[str, Any]:
    return call(f"{mock.url}/cgi-bin/gettoken?corpid={corpid}&corpsecret={secret}")[1]


def app_send(mock: WeComMock, text: str, token: Optional[str] = None, **fields: Any) -> tuple[int, dict[str, Any]]:
    if token is None:
        token = gettoken(mock)["access_token"]
    body = {"touser": "@all", "msgtype": "text", "agentid": 1000002, "text": {"content": text}, **fields}
    return call(f"{mock.url}/cgi-bin/message/send?access_token={token}", body)


def test_webhook_markdown_and_text_are_delivered_and_recorded(wecom: WeComMock) -> None:
    assert wecom.url.startswith("http://127.0.0.1:") and wecom.port > 0
    wecom.add_webhook_key("k1")
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
    status, reply = call(f"{wecom.url}/cgi-bin/gettoken?corpid=ww-test-corp&corpsecret={DEFAULT_APP_SECRET}")
    assert status == 200 and reply["errcode"] == 0 and reply["expires_in"] == 7200
    old = reply["access_token"]
    assert old == wecom.access_token
    assert app_send(wecom, "first", token=old)[1]["errcode"] == 0

    wecom.expire_tokens()
    assert wecom.access_token != old
    assert app_send(wecom, "stale", token=old)[1] == {"errcode": 42001, "errmsg": "access_token expired"}
    assert app_send(wecom, "refreshed")[1]["errcode"] == 0
    assert wecom.messages() == ["first", "refreshed"]
    assert wecom.violations == []  # an expired token is WeCom's normal answer, the client refreshes


def test_gettoken_requires_credentials_and_unknown_paths_are_404(wecom: WeComMock) -> None:
    for code in (41002, 41004, 404):
        wecom.expect_violation(code)
    assert call(f"{wecom.url}/cgi-bin/gettoken?corpsecret=x")[1]["errcode"] == 41002
    assert call(f"{wecom.url}/cgi-bin/gettoken?corpid=ww-test-corp")[1]["errcode"] == 41004
    assert call(f"{wecom.url}/cgi-bin/nope", markdown("x"))[0] == 404
    assert wecom.messages() == []
    assert [v.errcode for v in wecom.violations] == [41002, 41004, 404]


def test_a_bare_gettoken_is_a_probe_not_a_violation(wecom: WeComMock) -> None:
    status, reply = call(f"{wecom.url}/cgi-bin/gettoken")  # what `doctor` sends to see WeCom's JSON
    assert (status, reply["errcode"]) == (200, 41002) and "access_token" not in reply
    assert wecom.violations == []


def test_invalid_message_bodies_are_rejected(wecom: WeComMock) -> None:
    for code in (40008, 44004, 93000):
        wecom.expect_violation(code)
    assert call(wecom.webhook_url(), {"msgtype": "image", "image": {}})[1]["errcode"] == 40008
    assert call(wecom.webhook_url(), markdown(""))[1]["errcode"] == 44004
    assert call(f"{wecom.url}/cgi-bin/webhook/send", markdown("no key"))[1]["errcode"] == 93000
    assert wecom.messages() == [] and len(wecom.requests) == 3
    assert [r.violation is not None for r in wecom.requests] == [True, True, True]


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
    assert gettoken(wecom)["errcode"] == 0
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

    wecom.expect_violation(404)
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


# WeCom's contract ---------------------------------------------------------------------------

HAN = "字"  # 3 bytes in UTF-8: a limit in bytes is hit at a third of the characters


def body(msgtype: str, content: str) -> dict[str, Any]:
    return {"msgtype": msgtype, msgtype: {"content": content}}


def test_markdown_v2_is_delivered_and_read_back(wecom: WeComMock) -> None:
    assert call(wecom.webhook_url(), body("markdown_v2", "## 命令卡顿\n```\ntail\n```"))[1]["errcode"] == 0
    assert wecom.messages() == ["## 命令卡顿\n```\ntail\n```"]
    wecom.expect_message("命令卡顿")
    wecom.check_assertions()


@pytest.mark.parametrize(("msgtype", "limit"), [("text", 2048), ("markdown", 4096), ("markdown_v2", 4096)])
def test_webhook_limits_are_utf8_bytes(wecom: WeComMock, msgtype: str, limit: int) -> None:
    wecom.expect_violation(40058)
    at_limit = HAN * (limit // 3) + "x" * (limit % 3)
    assert len(at_limit.encode()) == limit
    assert call(wecom.webhook_url(), body(msgtype, at_limit))[1]["errcode"] == 0
    over = HAN * (limit // 3 + 1)  # far fewer characters than the limit, more bytes
    reply = call(wecom.webhook_url(), body(msgtype, over))[1]
    assert reply["errcode"] == 40058 and f"{len(over.encode())} bytes" in reply["errmsg"]
    assert wecom.messages() == [at_limit]
    [violation] = wecom.violations
    assert (violation.endpoint, violation.errcode) == ("webhook", 40058)
    assert f"over the {limit}-byte limit" in violation.reason


def test_only_known_robot_keys_are_accepted(wecom: WeComMock) -> None:
    wecom.expect_violation(93000)
    assert call(wecom.webhook_url("stranger-key-9"), markdown("x"))[1]["errcode"] == 93000
    assert call(wecom.webhook_url(), markdown("default key"))[1]["errcode"] == 0
    env = wecom.env("webhook", key="second-robot-7")
    assert env["WECOM_WEBHOOK"].endswith("key=second-robot-7")
    assert call(wecom.webhook_url("second-robot-7"), markdown("env() registers its key"))[1]["errcode"] == 0
    [violation] = wecom.violations
    assert violation.errcode == 93000 and "stranger-key-9" not in violation.reason  # a key is a secret


def test_twenty_messages_a_minute_per_robot_key(wecom: WeComMock) -> None:
    wecom.expect_violation(45009)
    wecom.add_webhook_key("other-robot")
    wecom.fail_next("http_500", times=5)  # injected faults: WeCom never took these in
    assert [call(wecom.webhook_url(), markdown("lost"))[0] for _ in range(5)] == [500] * 5
    codes = [call(wecom.webhook_url(), markdown(f"m{i}"))[1]["errcode"] for i in range(20)]
    assert codes == [0] * 20
    reply = call(wecom.webhook_url(), markdown("21st"))[1]
    assert reply["errcode"] == 45009 and "limit 20" in reply["errmsg"]
    assert call(wecom.webhook_url("other-robot"), markdown("another key"))[1]["errcode"] == 0
    assert [v.errcode for v in wecom.violations] == [45009]


def test_rejected_attempts_count_and_the_window_slides() -> None:
    with WeComMock(limits=WeComLimits(rate_per_minute=2, rate_window_seconds=0.5)) as mock:
        mock.allow_violations()
        assert call(mock.webhook_url(), markdown(HAN * 1400))[1]["errcode"] == 40058  # counted: WeCom read it
        assert call(mock.webhook_url(), markdown("second"))[1]["errcode"] == 0
        assert call(mock.webhook_url(), markdown("third"))[1]["errcode"] == 45009
        wait_until(
            lambda: call(mock.webhook_url(), markdown("later"))[1]["errcode"] == 0,
            timeout=5,
            interval=0.05,
            message="the window to slide",
        )
        assert mock.messages() == ["second", "later"]


def test_gettoken_checks_corpid_and_secret(wecom: WeComMock) -> None:
    wecom.expect_violation(40013)
    wecom.expect_violation(40001)
    assert gettoken(wecom, corpid="ww-other-corp")["errcode"] == 40013
    wrong = gettoken(wecom, secret="wrong-secret-42")
    assert wrong["errcode"] == 40001 and "access_token" not in wrong and "wrong-secret-42" not in wrong["errmsg"]
    env = wecom.env("app", secret="rotated-secret-43")
    assert (env["WECOM_CORP_ID"], env["WECOM_AGENT_ID"]) == (WeComMock.CORP_ID, "1000002")
    assert gettoken(wecom, secret="rotated-secret-43")["errcode"] == 0
    assert [v.endpoint for v in wecom.violations] == ["gettoken", "gettoken"]


def test_app_send_checks_agentid_recipients_token_and_size(wecom: WeComMock) -> None:
    for code in (40056, 81013, 40014, 40058, 40008):
        wecom.expect_violation(code)
    assert app_send(wecom, "wrong app", agentid=1000003)[1]["errcode"] == 40056
    assert app_send(wecom, "nobody", touser="", toparty=" ", totag="")[1]["errcode"] == 81013
    assert app_send(wecom, "to a party", touser="", toparty="2")[1]["errcode"] == 0
    assert app_send(wecom, "forged", token="mock-token-never-issued")[1]["errcode"] == 40014
    md = HAN * 683  # 2049 bytes: fits the webhook's 4096, not the app's 2048
    assert app_send(wecom, "", msgtype="markdown", markdown={"content": md})[1]["errcode"] == 40058
    assert app_send(wecom, "", msgtype="markdown_v2", markdown_v2={"content": "v2"})[1]["errcode"] == 40008
    assert wecom.messages() == ["to a party"]
    assert [v.errcode for v in wecom.violations] == [40056, 81013, 40014, 40058, 40008]
    assert {v.endpoint for v in wecom.violations} == {"app"}


def test_injected_faults_are_not_violations(wecom: WeComMock) -> None:
    wecom.fail_next("rate_limit")
    wecom.fail_next("token_expired")
    assert call(wecom.webhook_url(), markdown("x"))[1]["errcode"] == 45009
    assert app_send(wecom, "y")[1]["errcode"] == 42001
    assert [r.fault for r in wecom.requests if r.path != "/cgi-bin/gettoken"] == ["rate_limit", "token_expired"]
    assert wecom.violations == []


def test_lax_mode_keeps_the_old_behaviour() -> None:
    with WeComMock(strict=False) as mock:
        mock.expect_violation(93000)
        assert all(call(mock.webhook_url("any-key"), markdown(HAN * 2000))[1]["errcode"] == 0 for _ in range(25))
        assert gettoken(mock, corpid="corp", secret="s3cret")["errcode"] == 0
        assert app_send(mock, "no recipient", touser="")[1]["errcode"] == 0
        assert call(mock.webhook_url(), body("markdown_v2", "v2 too"))[1]["errcode"] == 0
        assert call(f"{mock.url}/cgi-bin/webhook/send", markdown("no key"))[1]["errcode"] == 93000
        assert len(mock.messages()) == 27 and [v.errcode for v in mock.violations] == [93000]


def test_violations_name_the_test_and_survive_clear(wecom: WeComMock, request: pytest.FixtureRequest) -> None:
    wecom.allow_violations()
    call(wecom.webhook_url("unknown"), markdown("x"))
    wecom.clear()
    [violation] = wecom.violations
    assert violation.test == request.node.nodeid
    assert violation.line().startswith(f"{request.node.nodeid}  webhook  errcode 93000: invalid webhook url")


def test_an_expected_violation_that_never_happened_is_reported(wecom: WeComMock) -> None:
    wecom.expect_violation("45009")
    with pytest.raises(AssertionError, match="expected violation errcode 45009 never happened"):
        wecom.check_assertions()


# the session-end check ----------------------------------------------------------------------

TINY = """
import json
import urllib.request

from pytest_tmuxagent.wecom_mock import WeComMock


def post(url):
    data = json.dumps({"msgtype": "markdown", "markdown": {"content": "字" * 1366}}).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["errcode"]


def test_oversize_alert(wecom_mock):
    assert post(wecom_mock.webhook_url()) == 40058


def test_oversize_on_purpose(wecom_mock):
    wecom_mock.expect_violation(40058)
    assert post(wecom_mock.webhook_url()) == 40058


def test_own_mock_with_a_wrong_key():
    with WeComMock() as mock:
        assert post(mock.webhook_url("nobody")) == 93000
"""


@pytest.mark.parametrize("args", [[], ["-n", "2"], ["-k", "on_purpose"]], ids=["one-process", "xdist", "declared-only"])
def test_undeclared_violations_fail_the_run(pytester: pytest.Pytester, args: list[str]) -> None:
    pytester.makepyfile(test_tiny=TINY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    out = result.stdout.str()
    if "on_purpose" in args:
        assert result.ret == 0 and "WeCom contract violations" not in out, out[-3000:]
        return
    result.assert_outcomes(passed=3)  # every test passed: only the session-end check fails the run
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out[-3000:]
    result.stdout.fnmatch_lines(
        [
            "*= WeCom contract violations =*",
            "FAILED: 2 request(s) to a WeCom mock broke WeCom's contract*",
            "  test_tiny.py::test_oversize_alert  webhook  errcode 40058: *4098 bytes UTF-8, over the 4096-byte limit",
            "  test_tiny.py::test_own_mock_with_a_wrong_key  webhook  errcode 93000: invalid webhook url*",
            "*expect_violation(errcode)*allow_violations()*",
        ]
    )
    assert "test_oversize_on_purpose  webhook" not in out
