"""Proxies as the playbook sets them — in `~/.env` only, never exported — carry the product's
real traffic: WeCom messages (requests) and OpenAI calls (the SDK's httpx2 client) go through a
real local HTTP proxy and a real local SOCKS5 proxy (socks5:// and socks5h://, with and without
a password), `NO_PROXY` sends them direct, and a proxy a client cannot use is one line."""

from __future__ import annotations

import http.client
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from orchestrator.adapters.ai_client import AIError, AIRequest, OpenAIBackend
from orchestrator.adapters.proxies import (
    ProxySupportError,
    describe_proxy,
    httpx_client,
    proxy_for,
    proxy_problem,
    proxy_variable,
    requests_session,
)
from orchestrator.adapters.wecom import ChannelError, channels_from_env
from orchestrator.envfile import EnvSource
from pytest_tmuxagent.proxy_servers import HttpProxy, Socks5Proxy, refusing_port
from pytest_tmuxagent.wecom_mock import WeComMock
from tests.openai_stub import OpenAIStub, Reply

# the process environment the orchestrator starts with: no proxy in it at all
PROCESS = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
REPLY = {"decision": "wait"}
REQUEST = AIRequest(
    task="decision",
    prompt="pane output: all tests passed",
    schema={"type": "object", "properties": {"decision": {"type": "string"}}, "required": ["decision"]},
    schema_name="decision",
)


def env_from_file(tmp_path: Path, text: str) -> dict[str, str]:
    """The merged environment of an env file holding `text` over a process env without proxies."""
    path = tmp_path / "proxies.env"
    path.write_text(text)
    return EnvSource(path, base=PROCESS).current()


@pytest.fixture
def openai_stub() -> Iterator[OpenAIStub]:
    stub = OpenAIStub([Reply(json.dumps(REPLY))])
    yield stub
    stub.close()


def send_one(env: dict[str, str], mock: WeComMock, text: str) -> None:
    [channel] = channels_from_env(env)
    channel.send("proxy test", text)
    assert any(text in message for message in mock.wait_for_messages(1))


def ask_openai(env: dict[str, str], base_url: str) -> None:
    backend = OpenAIBackend("gpt-test", base_url, lambda: env)
    assert json.loads(backend.complete(REQUEST, timeout=10)) == REPLY


def stub_url(stub: OpenAIStub, host: str) -> str:
    return stub.base_url.replace("127.0.0.1", host)


def wecom_env(mock: WeComMock, host: str = "127.0.0.1") -> str:
    return "".join(f"{k}={v.replace('127.0.0.1', host)}\n" for k, v in mock.env("webhook").items())


# through the HTTP proxy -----------------------------------------------------------------------
def test_wecom_goes_through_the_http_proxy_named_only_in_the_env_file(
    tmp_path: Path, wecom_mock: WeComMock, tmuxagent_http_proxy: HttpProxy
) -> None:
    env = env_from_file(tmp_path, f"HTTP_PROXY={tmuxagent_http_proxy.url}\n" + wecom_env(wecom_mock))
    assert not any(k.lower().endswith("_proxy") for k in PROCESS)
    send_one(env, wecom_mock, "via the http proxy")
    [request] = tmuxagent_http_proxy.connections
    assert (request.kind, request.target, request.method) == ("forward", f"127.0.0.1:{wecom_mock.port}", "POST")
    assert request.path is not None and request.path.startswith("/cgi-bin/webhook/send?key=")


def test_the_wecom_app_gets_its_token_and_sends_through_the_proxy(
    tmp_path: Path, wecom_mock: WeComMock, tmuxagent_socks_proxy: Socks5Proxy
) -> None:
    app = "".join(f"{k}={v}\n" for k, v in wecom_mock.env("app").items())
    env = env_from_file(tmp_path, f"ALL_PROXY={tmuxagent_socks_proxy.url}\n" + app)
    send_one(env, wecom_mock, "app via socks")
    assert [r.path for r in wecom_mock.requests] == ["/cgi-bin/gettoken", "/cgi-bin/message/send"]
    # one tunnel or two (requests may keep the first open for the second), none anywhere else
    assert set(tmuxagent_socks_proxy.targets()) == {f"127.0.0.1:{wecom_mock.port}"}


def test_openai_goes_through_the_http_proxy_named_only_in_the_env_file(
    tmp_path: Path, openai_stub: OpenAIStub, tmuxagent_http_proxy: HttpProxy
) -> None:
    env = env_from_file(tmp_path, f"HTTP_PROXY={tmuxagent_http_proxy.url}\nOPENAI_API_KEY=sk-proxy-test-0001\n")
    ask_openai(env, openai_stub.base_url)
    [request] = tmuxagent_http_proxy.connections
    assert (request.kind, request.target, request.path) == (
        "forward",
        openai_stub.base_url[7:-3],
        "/v1/chat/completions",
    )
    assert len(openai_stub.requests) == 1


def test_the_http_proxy_tunnels_connect_as_https_traffic_uses_it(wecom_mock: WeComMock) -> None:
    """WeCom and OpenAI are https: through an HTTP proxy they open a CONNECT tunnel."""
    with HttpProxy() as proxy:
        connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        connection.set_tunnel("127.0.0.1", wecom_mock.port)
        body = json.dumps({"msgtype": "markdown", "markdown": {"content": "through CONNECT"}})
        connection.request("POST", wecom_mock.webhook_url().split(str(wecom_mock.port), 1)[1], body)
        reply = json.loads(connection.getresponse().read())
        connection.close()
        assert reply["errcode"] == 0
        assert [(c.kind, c.target) for c in proxy.connections] == [("connect", f"127.0.0.1:{wecom_mock.port}")]


def test_the_proxies_record_a_target_they_could_not_reach_and_a_refused_login(wecom_mock: WeComMock) -> None:
    with refusing_port() as dead, HttpProxy() as http_proxy, Socks5Proxy(username="me", password="right") as socks:
        session = requests_session()
        reply = session.get(f"http://127.0.0.1:{dead}/", proxies={"http": http_proxy.url}, timeout=5)
        assert reply.status_code == 502
        [failed] = http_proxy.connections
        assert failed.target == f"127.0.0.1:{dead}" and failed.error is not None and http_proxy.targets() == []
        wrong = socks.url.replace(":right@", ":wrong@")
        with pytest.raises(requests.ConnectionError):
            session.get(wecom_mock.url, proxies={"http": wrong}, timeout=5)
        assert socks.refused_logins == ["me"] and socks.connections == [] and wecom_mock.requests == []


# through the SOCKS5 proxy ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scheme", "address_type"),
    [("socks5", "ipv4"), ("socks5h", "domain")],  # socks5h: the proxy resolves the name
)
def test_wecom_goes_through_the_socks_proxy_of_the_playbooks_all_proxy(
    tmp_path: Path, wecom_mock: WeComMock, tmuxagent_socks_proxy: Socks5Proxy, scheme: str, address_type: str
) -> None:
    proxy_line = f"ALL_PROXY={tmuxagent_socks_proxy.url_for(scheme)}\n"
    env = env_from_file(tmp_path, proxy_line + wecom_env(wecom_mock, "localhost"))
    send_one(env, wecom_mock, f"via {scheme}")
    [tunnel] = tmuxagent_socks_proxy.connections
    assert tunnel.address_type == address_type and tunnel.error is None
    assert tunnel.target == (f"localhost:{wecom_mock.port}" if scheme == "socks5h" else f"127.0.0.1:{wecom_mock.port}")


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_openai_goes_through_the_socks_proxy_of_the_playbooks_all_proxy(
    tmp_path: Path, openai_stub: OpenAIStub, tmuxagent_socks_proxy: Socks5Proxy, scheme: str
) -> None:
    env = env_from_file(tmp_path, f"ALL_PROXY={tmuxagent_socks_proxy.url_for(scheme)}\nOPENAI_API_KEY=sk-socks-0001\n")
    ask_openai(env, stub_url(openai_stub, "localhost"))
    [tunnel] = tmuxagent_socks_proxy.connections
    port = openai_stub.server.server_address[1]
    # httpx2 sends the name even for socks5:// (the proxy resolves it), unlike requests
    assert (tunnel.error, tunnel.target, tunnel.address_type) == (None, f"localhost:{port}", "domain")


def test_both_clients_log_in_to_a_socks_proxy_with_a_password_from_the_env_file(
    tmp_path: Path, wecom_mock: WeComMock, openai_stub: OpenAIStub
) -> None:
    with Socks5Proxy(username="tmux", password="pa#ss:w@rd") as proxy:
        # the password, percent-encoded in the URL, has a `#` bash keeps and a naive parser cut
        env = env_from_file(tmp_path, f"ALL_PROXY={proxy.url}\nOPENAI_API_KEY=sk-auth-0001\n" + wecom_env(wecom_mock))
        assert env["ALL_PROXY"] == proxy.url and "%23" in proxy.url
        send_one(env, wecom_mock, "via socks with a login")
        ask_openai(env, openai_stub.base_url)
        assert [c.username for c in proxy.connections] == ["tmux", "tmux"] and proxy.refused_logins == []
        assert "pa%23ss" not in describe_proxy(env["ALL_PROXY"])


# NO_PROXY -------------------------------------------------------------------------------------
def test_no_proxy_in_the_env_file_sends_both_clients_direct(
    tmp_path: Path,
    wecom_mock: WeComMock,
    openai_stub: OpenAIStub,
    tmuxagent_http_proxy: HttpProxy,
    tmuxagent_socks_proxy: Socks5Proxy,
) -> None:
    text = (
        f"HTTP_PROXY={tmuxagent_http_proxy.url}\nHTTPS_PROXY={tmuxagent_http_proxy.url}\n"
        f"ALL_PROXY={tmuxagent_socks_proxy.url}\nNO_PROXY=localhost,127.0.0.1,::1,.local,.lan\n"
        "OPENAI_API_KEY=sk-direct-0001\n"
    )
    env = env_from_file(tmp_path, text + wecom_env(wecom_mock))
    send_one(env, wecom_mock, "direct")
    ask_openai(env, openai_stub.base_url)
    assert tmuxagent_http_proxy.connections == [] and tmuxagent_socks_proxy.connections == []


def test_a_dead_proxy_in_the_env_file_is_where_both_clients_fail(
    tmp_path: Path, wecom_mock: WeComMock, openai_stub: OpenAIStub
) -> None:
    """Proof the proxy is really on the path: when it is down, the same sends fail (one line
    each, no password) although WeCom and the OpenAI stand-in are up."""
    with refusing_port() as port:
        text = f"ALL_PROXY=socks5://u:hidden-pw@127.0.0.1:{port}\nOPENAI_API_KEY=sk-dead-0001\n"
        env = env_from_file(tmp_path, text + wecom_env(wecom_mock))
        [channel] = channels_from_env(env)
        with pytest.raises(ChannelError) as wecom_error:
            channel.send("proxy test", "never arrives")
        with pytest.raises(AIError) as openai_error:
            OpenAIBackend("gpt-test", openai_stub.base_url, lambda: env).complete(REQUEST, timeout=5)
    assert wecom_mock.requests == [] and openai_stub.requests == []
    for error in (str(wecom_error.value), str(openai_error.value)):
        assert "\n" not in error and "hidden-pw" not in error


# a proxy a client cannot use ------------------------------------------------------------------
def test_missing_socks_support_is_one_line_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "socksio", None)  # what an install without the extra looks like
    monkeypatch.setitem(sys.modules, "socks", None)
    proxy = "socks5://u:secret-pw@127.0.0.1:7890"
    for client, extra in (("requests", "requests[socks]"), ("httpx", "httpx2[socks]")):
        problem = proxy_problem(proxy, client)  # type: ignore[arg-type]
        assert problem is not None and problem.fix == f"pip install '{extra}'", problem
        assert "socks5://127.0.0.1:7890" in problem.what and "secret-pw" not in str(problem)
    with pytest.raises(ProxySupportError, match=r"pip install 'httpx2\[socks\]'") as raised:
        httpx_client("https://api.openai.com/v1", {"ALL_PROXY": proxy}, timeout=5)
    assert "\n" not in str(raised.value)
    with pytest.raises(AIError) as ai_error:  # the backend falls back on it like on any AI failure
        OpenAIBackend("gpt-test", None, lambda: {"ALL_PROXY": proxy, "OPENAI_API_KEY": "sk-x"}).complete(
            REQUEST, timeout=5
        )
    assert "pip install" in str(ai_error.value) and "secret-pw" not in str(ai_error.value)


def test_a_wecom_send_without_socks_support_is_one_line_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wecom_mock: WeComMock, tmuxagent_socks_proxy: Socks5Proxy
) -> None:
    env = env_from_file(tmp_path, f"ALL_PROXY={tmuxagent_socks_proxy.url}\n" + wecom_env(wecom_mock))
    [channel] = channels_from_env(env)
    monkeypatch.setitem(sys.modules, "socks", None)  # PySocks not installed
    with pytest.raises(ChannelError) as raised:
        channel.send("proxy test", "never sent")
    message = str(raised.value)
    assert "SOCKS support for the requests client is not installed" in message and "\n" not in message
    assert message.endswith("pip install 'requests[socks]'") and tmuxagent_socks_proxy.connections == []


def test_a_scheme_the_openai_client_does_not_speak_is_named() -> None:
    problem = proxy_problem("socks4://127.0.0.1:1080", "httpx")
    assert problem is not None and "socks4://" in problem.what and "socks5://" in problem.fix
    assert proxy_problem("socks4://127.0.0.1:1080", "requests") is None


# the rule -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "env", "proxy", "variable"),
    [
        (
            "https://qyapi.weixin.qq.com/x",
            {"HTTPS_PROXY": "http://p:1", "ALL_PROXY": "socks5://s:2"},
            "http://p:1",
            "HTTPS_PROXY",
        ),
        (
            "http://example.com/",
            {"HTTPS_PROXY": "http://p:1", "ALL_PROXY": "socks5://s:2"},
            "socks5://s:2",
            "ALL_PROXY",
        ),
        (
            "https://a.example/",
            {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2"},
            "http://lower:1",
            "https_proxy",
        ),
        ("https://a.example/", {"HTTPS_PROXY": "127.0.0.1:7890"}, "http://127.0.0.1:7890", "HTTPS_PROXY"),
        ("http://nas.lan:8080/", {"ALL_PROXY": "socks5://s:2", "NO_PROXY": ".lan"}, None, None),
        ("http://lan:8080/", {"ALL_PROXY": "socks5://s:2", "NO_PROXY": ".lan"}, None, None),
        ("http://10.1.2.3/", {"ALL_PROXY": "socks5://s:2", "no_proxy": "10.0.0.0/8"}, None, None),
        ("http://[::1]:9/", {"ALL_PROXY": "socks5://s:2", "NO_PROXY": "::1"}, None, None),
        (
            "http://h.example:81/",
            {"ALL_PROXY": "socks5://s:2", "NO_PROXY": "h.example:80"},
            "socks5://s:2",
            "ALL_PROXY",
        ),
        ("http://h.example/", {"ALL_PROXY": "socks5://s:2", "NO_PROXY": "*"}, None, None),
        ("http://hexample.com/", {"ALL_PROXY": "socks5://s:2", "NO_PROXY": "example.com"}, "socks5://s:2", "ALL_PROXY"),
    ],
)
def test_which_proxy_a_url_takes(url: str, env: dict[str, str], proxy: str | None, variable: str | None) -> None:
    assert proxy_for(url, env) == proxy
    assert proxy_variable(url, env) == variable
