"""The scripted model server driven by real HTTP clients: Anthropic SSE parsed by hand over
``requests`` streaming, the Responses API through the real ``openai`` client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

import openai
import pytest
import requests

from pytest_tmuxagent.model_server import (
    ModelServer,
    garbage,
    hang,
    http_error,
    overloaded,
    rate_limited,
    server_error,
    text,
    tool_call,
)
from pytest_tmuxagent.waiting import WaitTimeout

TOKEN = "sk-test-secret-token-0001"
BASH = {"name": "Bash", "description": "Run a shell command", "input_schema": {"type": "object"}}
EXEC = {"type": "function", "name": "exec_command", "parameters": {"type": "object"}}


# clients ------------------------------------------------------------------------------------


def anthropic_body(prompt: str = "hello", *, stream: bool = True, tools: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are Claude Code."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        "tools": [BASH] if tools is None else tools,
        "stream": stream,
        **extra,
    }


def post_messages(server: ModelServer, body: dict[str, Any], **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {TOKEN}", "anthropic-version": "2023-06-01"}
    headers.update(kwargs.pop("headers", {}))
    kwargs.setdefault("timeout", 10)
    return requests.post(f"{server.anthropic_base_url}/v1/messages?beta=true", json=body, headers=headers, **kwargs)


def sse_events(response: requests.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """Parse server-sent events by hand: `event:` / `data:` lines, a blank line ends one."""
    name: Optional[str] = None
    data: list[str] = []
    for raw in response.iter_lines(chunk_size=None):
        line = raw.decode()
        if not line:
            if name is not None:
                yield name, json.loads("\n".join(data))
            name, data = None, []
        elif line.startswith("event:"):
            name = line[len("event:") :].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:") :].strip())


def stream_messages(server: ModelServer, prompt: str = "hello", **extra: Any) -> list[tuple[str, dict[str, Any]]]:
    with post_messages(server, anthropic_body(prompt, **extra), stream=True) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        return list(sse_events(response))


def client(server: ModelServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_base_url, api_key=TOKEN, max_retries=0, timeout=10)


def assert_anthropic_order(events: list[tuple[str, dict[str, Any]]]) -> None:
    names = [n for n, _ in events if n != "ping"]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    blocks = names[1:-2]
    while blocks:  # per block: start, ≥1 delta, stop
        assert blocks[0] == "content_block_start" and blocks[1] == "content_block_delta", names
        end = blocks.index("content_block_stop")
        assert set(blocks[1:end]) == {"content_block_delta"}, names
        blocks = blocks[end + 1 :]
    for name, payload in events:
        assert payload["type"] == name


# Anthropic Messages -------------------------------------------------------------------------


def test_anthropic_text_stream_has_the_event_sequence(model_server: ModelServer) -> None:
    model_server.script(text("The answer is forty two, as always."))
    events = stream_messages(model_server)
    assert_anthropic_order(events)
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["model"] == "claude-sonnet-4-5" and start["id"].startswith("msg_")
    assert start["content"] == [] and start["usage"]["input_tokens"] > 0
    assert [n for n, _ in events][:2] == ["message_start", "ping"]
    deltas = [p["delta"] for n, p in events if n == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas) and len(deltas) >= 2
    assert "".join(d["text"] for d in deltas) == "The answer is forty two, as always."
    message_delta = events[-2][1]
    assert message_delta["delta"]["stop_reason"] == "end_turn" and message_delta["usage"]["output_tokens"] >= 1
    [rec] = model_server.requests(kind="turn")
    assert (rec.provider, rec.path, rec.query, rec.reply, rec.status) == (
        "anthropic",
        "/v1/messages",
        {"beta": "true"},
        "text",
        200,
    )


def test_anthropic_tool_use_input_arrives_as_partial_json(model_server: ModelServer) -> None:
    command = {"command": "ls -la /tmp", "description": "List files in /tmp"}
    model_server.script(text("Let me look.") + tool_call("Bash", command), tool_call("Bash", command))
    events = stream_messages(model_server, "list /tmp")
    assert_anthropic_order(events)
    starts = [p["content_block"] for n, p in events if n == "content_block_start"]
    assert starts[0] == {"type": "text", "text": ""}
    assert starts[1]["type"] == "tool_use" and starts[1]["name"] == "Bash" and starts[1]["input"] == {}
    assert starts[1]["id"].startswith("toolu_")
    partial = [p["delta"]["partial_json"] for n, p in events if n == "content_block_delta" and p["index"] == 1]
    assert len(partial) >= 2 and all(partial)
    assert json.loads("".join(partial)) == command
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    second = stream_messages(model_server, "again")
    [again] = [p["content_block"] for n, p in second if n == "content_block_start"]
    assert again["id"] != starts[1]["id"], "every tool call gets its own id"
    assert [c[0] for c in model_server.tool_calls()] == [starts[1]["id"], again["id"]]


def test_anthropic_non_streamed_message_and_x_api_key(model_server: ModelServer) -> None:
    model_server.script(text("Running it") + tool_call("Bash", {"command": "pwd", "description": "Where am I"}))
    response = post_messages(
        model_server, anthropic_body(stream=False), headers={"Authorization": "", "x-api-key": TOKEN}
    )
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    message = response.json()
    assert message["type"] == "message" and message["role"] == "assistant" and message["stop_reason"] == "tool_use"
    assert message["content"][0] == {"type": "text", "text": "Running it"}
    assert message["content"][1]["type"] == "tool_use" and message["content"][1]["input"]["command"] == "pwd"
    assert message["content"][1]["id"].startswith("toolu_")


def test_count_tokens_and_models_do_not_consume_the_script(model_server: ModelServer) -> None:
    model_server.script(text("scripted"))
    response = requests.post(
        f"{model_server.url}/v1/messages/count_tokens",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": TOKEN},
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["input_tokens"] >= 1
    models = client(model_server).models.list()
    assert [m.id for m in models.data] == ["claude-sonnet-4-5", "gpt-5-codex"]
    assert len(model_server.pending()) == 1
    assert {r.kind for r in model_server.requests()} == {"count_tokens", "models"}


# OpenAI Responses ---------------------------------------------------------------------------


def test_responses_stream_is_valid_for_the_openai_client(model_server: ModelServer) -> None:
    model_server.script(text("Hello from the scripted model"))
    stream = client(model_server).responses.create(model="gpt-5-codex", input="hi", tools=[EXEC], stream=True)
    events = list(stream)
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.output_item.added" in types and "response.output_item.done" in types
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "Hello from the scripted model"
    done = [e for e in events if e.type == "response.output_item.done"][0]
    assert done.item.type == "message" and done.item.content[0].type == "output_text"
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == "Hello from the scripted model"
    assert completed.response.usage is not None and completed.response.usage.total_tokens > 0


def test_responses_function_call_through_the_stream_helper(model_server: ModelServer) -> None:
    model_server.openai.script(tool_call("exec_command", {"cmd": "ls -la", "workdir": "/tmp"}))
    with client(model_server).responses.stream(model="gpt-5-codex", input="list", tools=[EXEC]) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in types
    assert types.count("response.function_call_arguments.delta") >= 2
    [call] = final.output
    assert call.type == "function_call" and call.name == "exec_command" and call.call_id.startswith("call_")
    assert json.loads(call.arguments) == {"cmd": "ls -la", "workdir": "/tmp"}
    assert model_server.tool_calls("openai") == [(call.call_id, "exec_command", {"cmd": "ls -la", "workdir": "/tmp"})]


def test_responses_non_streamed(model_server: ModelServer) -> None:
    response = client(model_server).responses.create(model="gpt-5-codex", input="hi", tools=[EXEC])
    assert response.output_text == "ok"  # the default reply
    assert response.status == "completed"
    assert model_server.requests(kind="turn")[0].reply == "default text"


# errors and garbage -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status", "error_type"),
    [
        (server_error(), 500, "api_error"),
        (overloaded(), 529, "overloaded_error"),
        (rate_limited(7), 429, "rate_limit_error"),
    ],
)
def test_anthropic_errors_have_the_provider_shape(
    model_server: ModelServer, reply: Any, status: int, error_type: str
) -> None:
    model_server.script(reply)
    response = post_messages(model_server, anthropic_body())
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == error_type and body["error"]["message"]
    assert body["request_id"] == response.headers["request-id"]
    assert response.headers.get("retry-after") == ("7" if status == 429 else None)
    assert post_messages(model_server, anthropic_body(stream=False)).json()["content"][0]["text"] == "ok"


@pytest.mark.parametrize(
    ("reply", "exception", "status"),
    [
        (server_error(), openai.InternalServerError, 500),
        (overloaded(), openai.InternalServerError, 529),
        (rate_limited(2), openai.RateLimitError, 429),
        (http_error(400, "bad input"), openai.BadRequestError, 400),
    ],
)
def test_responses_errors_reach_the_openai_client(
    model_server: ModelServer, reply: Any, exception: type[openai.APIStatusError], status: int
) -> None:
    model_server.script(reply)
    with pytest.raises(exception) as raised:
        client(model_server).responses.create(model="gpt-5-codex", input="hi", tools=[EXEC], stream=True)
    assert raised.value.status_code == status
    error = raised.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if status == 429:
        assert raised.value.response.headers["retry-after"] == "2" and error["code"] == "rate_limit_exceeded"
    if status == 400:
        assert error["message"] == "bad input"
    assert model_server.requests(kind="turn")[0].reply == f"error {status}"


def test_garbage_is_a_200_the_client_cannot_parse(model_server: ModelServer) -> None:
    model_server.script(garbage(), garbage())
    with post_messages(model_server, anthropic_body(), stream=True) as response:
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            list(sse_events(response))
    response = post_messages(model_server, anthropic_body(stream=False))
    assert response.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        response.json()


# hanging ------------------------------------------------------------------------------------


def test_hang_then_release_completes_the_anthropic_stream(model_server: ModelServer) -> None:
    stuck = hang("Thinking about it very carefully now")
    model_server.script(stuck)
    with post_messages(model_server, anthropic_body(), stream=True) as response:
        events = sse_events(response)
        seen = []
        for name, payload in events:
            seen.append((name, payload))
            if name == "content_block_delta":
                break
        assert [n for n, _ in seen] == ["message_start", "ping", "content_block_start", "content_block_delta"]
        stuck.wait_hanging(timeout=5)
        stuck.release()
        seen.extend(events)
    assert_anthropic_order(seen)
    assert "".join(p["delta"]["text"] for n, p in seen if n == "content_block_delta") == (
        "Thinking about it very carefully now"
    )
    assert model_server.requests(kind="turn")[0].reply == "hang"


def test_hang_then_release_in_the_responses_stream(model_server: ModelServer) -> None:
    stuck = hang(tool_call("exec_command", {"cmd": "sleep 1"}))
    model_server.openai.script(stuck)
    stream = client(model_server).responses.create(model="m", input="go", tools=[EXEC], stream=True)
    seen = []
    for event in stream:
        seen.append(event.type)
        if event.type == "response.function_call_arguments.delta":
            break
    stuck.wait_hanging(timeout=5)
    stuck.release()
    seen.extend(event.type for event in stream)
    assert seen[-2:] == ["response.output_item.done", "response.completed"]


def test_a_client_timeout_during_a_hang(model_server: ModelServer) -> None:
    stuck = hang()
    model_server.script(stuck)
    with pytest.raises(requests.exceptions.ConnectionError):  # urllib3's ReadTimeoutError mid-body
        with post_messages(model_server, anthropic_body(), stream=True, timeout=0.5) as response:
            list(sse_events(response))
    assert stuck.hanging
    stuck.release()


def test_stop_while_a_reply_hangs_is_bounded() -> None:
    server = ModelServer().start()
    streamed, plain = hang(), hang()
    server.script(streamed, plain)
    with post_messages(server, anthropic_body(), stream=True) as response:
        events = sse_events(response)
        assert next(events)[0] == "message_start"
        streamed.wait_hanging(timeout=5)
        outcome: list[requests.exceptions.RequestException] = []

        def non_streamed() -> None:
            try:
                post_messages(server, anthropic_body(stream=False))
            except requests.exceptions.RequestException as exc:
                outcome.append(exc)

        waiter = threading.Thread(target=non_streamed)
        waiter.start()
        plain.wait_hanging(timeout=5)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 3
        with pytest.raises(requests.exceptions.ChunkedEncodingError):  # dropped mid-stream, never completed
            list(events)
        waiter.join(timeout=5)
        assert not waiter.is_alive()
    assert outcome and isinstance(outcome[0], requests.exceptions.ConnectionError)
    with pytest.raises(requests.exceptions.ConnectionError):
        post_messages(server, anthropic_body())


# side requests ------------------------------------------------------------------------------


def test_title_requests_are_answered_without_consuming_the_script(model_server: ModelServer) -> None:
    model_server.script(text("the real turn"))
    claude_title = anthropic_body(
        stream=False,
        tools=None,
        system=[{"type": "text", "text": "Generate a concise, sentence-case title (3-7 words)"}],
    )
    del claude_title["tools"]
    message = post_messages(model_server, claude_title).json()
    assert json.loads(message["content"][0]["text"])["title"]
    codex_title = client(model_server).responses.create(
        model="gpt-5-codex",
        input="fix the tests",
        tools=[],
        text={"format": {"type": "json_schema", "name": "title", "strict": True, "schema": {
            "type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}}},
        stream=True,
    )  # fmt: skip
    [completed] = [e for e in codex_title if e.type == "response.completed"]
    assert completed.type == "response.completed"
    assert json.loads(completed.response.output_text) == {"title": "Scripted session"}
    # tools offered, but a title schema asked for: still a side request
    schema_only = anthropic_body(
        stream=False, output_format={"type": "json_schema", "schema": {"properties": {"title": {}}}}
    )
    assert "title" in json.loads(post_messages(model_server, schema_only).json()["content"][0]["text"])
    assert [r.kind for r in model_server.requests()] == ["side", "side", "side"]
    assert len(model_server.pending()) == 1
    assert post_messages(model_server, anthropic_body(stream=False)).json()["content"][0]["text"] == "the real turn"
    model_server.check_assertions()


def test_the_side_request_rule_is_overridable(model_server: ModelServer) -> None:
    model_server.side_request = lambda request: "title" in request.system_text()
    model_server.script(text("scripted"))
    assert (
        post_messages(model_server, anthropic_body(stream=False, tools=[])).json()["content"][0]["text"] == "scripted"
    )
    model_server.side_reply = lambda request: text("side answer")
    titled = anthropic_body(stream=False, system="make a title")
    assert post_messages(model_server, titled).json()["content"][0]["text"] == "side answer"


# scripting ----------------------------------------------------------------------------------


def test_per_provider_queues_predicates_shared_queue_then_default(model_server: ModelServer) -> None:
    model_server.script(text("shared"))
    model_server.anthropic.script(text("for claude"))
    model_server.openai.script(text("for codex"))
    model_server.script(text("sunny"), when=lambda request: request.last_user_text() == "weather?")
    model_server.default = text("fallback")
    openai_client = client(model_server)

    def claude(prompt: str) -> str:
        return str(post_messages(model_server, anthropic_body(prompt, stream=False)).json()["content"][0]["text"])

    assert openai_client.responses.create(model="m", input="hi", tools=[EXEC]).output_text == "for codex"
    assert claude("weather?") == "sunny"
    assert claude("hi") == "for claude"
    assert claude("hi") == "shared"
    assert openai_client.responses.create(model="m", input="weather?", tools=[EXEC]).output_text == "fallback"
    assert model_server.pending() == []
    model_server.check_assertions()


def test_check_assertions_reports_leftovers_unknown_paths_and_missing_auth(model_server: ModelServer) -> None:
    model_server.script(text("never asked for"))
    assert requests.get(f"{model_server.url}/v1/nothing", timeout=10).status_code == 404
    unauthorized = requests.post(f"{model_server.url}/v1/messages", json=anthropic_body(), timeout=10)
    assert unauthorized.status_code == 401 and unauthorized.json()["error"]["type"] == "authentication_error"
    with pytest.raises(AssertionError) as raised:
        model_server.check_assertions()
    for expected in ("never asked for", "unexpected request GET /v1/nothing", "without valid credentials"):
        assert expected in str(raised.value)


def test_a_fixed_api_key_refuses_other_tokens() -> None:
    with ModelServer(api_key="right") as server:
        assert post_messages(server, anthropic_body(), headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = post_messages(server, anthropic_body(stream=False), headers={"Authorization": "Bearer right"})
        assert ok.status_code == 200


# recording ----------------------------------------------------------------------------------


def test_tool_results_and_user_text_are_recorded_and_secrets_redacted(model_server: ModelServer) -> None:
    model_server.script(tool_call("Bash", {"command": "echo hi", "description": "Say hi"}), text("Done."))
    first = post_messages(model_server, anthropic_body("say hi", stream=False)).json()
    call_id = first["content"][0]["id"]
    history = [
        {"role": "user", "content": [{"type": "text", "text": "<system-reminder>be nice</system-reminder>"},
                                     {"type": "text", "text": "say hi"}]},
        {"role": "assistant", "content": first["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call_id,
                                      "content": [{"type": "text", "text": "hi\n"}], "is_error": False},
                                     {"type": "text", "text": "<system-reminder>x</system-reminder>"}]},
    ]  # fmt: skip
    for _ in range(2):  # the history repeats in later requests; the result is counted once
        post_messages(model_server, {**anthropic_body(stream=False), "messages": history})
    [result] = model_server.tool_results()
    assert (result.provider, result.call_id, result.output, result.is_error) == ("anthropic", call_id, "hi\n", False)
    assert model_server.last_user_text() == "say hi"
    assert model_server.requests(kind="turn")[-1].user_texts() == ["say hi"]
    recorded = model_server.requests()[0]
    assert recorded.headers["Authorization"] == "<redacted>"
    assert TOKEN not in repr(model_server.requests()) and TOKEN not in "\n".join(model_server.summary())


def test_function_call_outputs_from_the_openai_client(model_server: ModelServer) -> None:
    model_server.openai.script(tool_call("exec_command", {"cmd": "uname"}))
    openai_client = client(model_server)
    first = openai_client.responses.create(model="m", input="which os?", tools=[EXEC])
    [call] = first.output
    assert call.type == "function_call"
    openai_client.responses.create(
        model="m",
        tools=[EXEC],
        input=[
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "<environment_context>cwd</environment_context>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "which os?"}]},
            {"type": "function_call", "call_id": call.call_id, "name": "exec_command", "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "Linux\n"},
        ],
    )  # fmt: skip
    assert model_server.openai.tool_results()[0].output == "Linux\n"
    assert model_server.tool_results()[0].call_id == call.call_id
    assert model_server.openai.last_user_text() == "which os?"
    assert model_server.tool_results(provider="anthropic") == []


def test_wait_for_requests_waits_on_a_condition(model_server: ModelServer) -> None:
    with pytest.raises(WaitTimeout, match="2 turn request"):
        model_server.wait_for_requests(2, timeout=0.1, kind="turn")
    senders = [
        threading.Thread(target=post_messages, args=(model_server, anthropic_body(stream=False))) for _ in range(2)
    ]
    for sender in senders:
        sender.start()
    found = model_server.wait_for_requests(2, timeout=10, kind="turn", provider="anthropic")
    assert len(found) == 2
    for sender in senders:
        sender.join(timeout=10)


def test_urls_and_the_context_manager() -> None:
    with ModelServer() as server:
        assert server.anthropic_base_url == server.url == f"http://127.0.0.1:{server.port}"
        assert server.openai_base_url == f"{server.url}/v1"
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{server.url}/v1/models", timeout=2)
    with pytest.raises(RuntimeError):
        _ = ModelServer().url
