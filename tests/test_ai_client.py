"""The AI client: codex (a real fake executable) and openai (a local HTTP stub), every named
error kind, reply parsing and validation, metrics and logging once."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from orchestrator.adapters.ai_client import (
    AIClient,
    AIError,
    AIRequest,
    CodexBackend,
    OpenAIBackend,
    ask_backend,
    extract_json,
    final_message_from_events,
    resolve_timeout,
    validate_reply,
)
from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.assist.advisor import DECISION_SCHEMA, check_reply
from orchestrator.config import CodexConfig, OrchestratorSettings, settings_from_mapping
from pytest_tmuxagent.fake_codex import FakeCodex

from .openai_stub import OpenAIStub, Reply

ADVICE = {
    "summary": "set the key",
    "recommendations": [
        {"title": "Provide OPENAI_API_KEY", "detail": "in ~/.env", "command": None, "priority": "high", "risk": "low"}
    ],
}


def request(prompt: str = "blocked: missing OPENAI_API_KEY") -> AIRequest:
    return AIRequest("decision", prompt, DECISION_SCHEMA, "next_actions", check=check_reply)


@pytest.fixture
def codex(tmp_path: Path) -> FakeCodex:
    fake = FakeCodex(tmp_path / "bin")
    fake.install()
    return fake


def backend(codex: FakeCodex, **config: object) -> CodexBackend:
    env = {**os.environ, "PATH": f"{codex.bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return CodexBackend(CodexConfig(**config), lambda: env)  # type: ignore[arg-type]


def kind_of(call) -> str:
    with pytest.raises(AIError) as info:
        call()
    return info.value.kind


# parsing and validation -------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        json.dumps(ADVICE),
        f"Here you go:\n```json\n{json.dumps(ADVICE, indent=2)}\n```\nBye",
        f"My answer is {json.dumps(ADVICE)} — hope it helps",
    ],
)
def test_json_is_found_bare_fenced_or_in_prose(text: str) -> None:
    assert extract_json(text) == ADVICE


@pytest.mark.parametrize(
    "text,kind",
    [("", "empty_output"), ("   \n", "empty_output"), ("no json here", "not_json"), ("{broken", "not_json")],
)
def test_unusable_replies_have_named_kinds(text: str, kind: str) -> None:
    assert kind_of(lambda: extract_json(text)) == kind


@pytest.mark.parametrize(
    "data",
    [
        {"summary": "x"},
        {"summary": "x", "recommendations": [{**ADVICE["recommendations"][0], "priority": "urgent"}]},
        {"summary": "x", "recommendations": []},  # valid per schema, rejected by the check
    ],
)
def test_schema_and_semantic_mismatches(data: dict) -> None:
    assert kind_of(lambda: validate_reply(data, request())) == "schema_mismatch"


def test_codex_timeout_comes_from_the_environment_first() -> None:
    config = CodexConfig(timeout_seconds=120)
    assert resolve_timeout(config, {"CODEX_TIMEOUT_SECONDS": "7.5"}) == 7.5
    assert resolve_timeout(config, {"CODEX_TIMEOUT_SECONDS": "soon"}) == 120
    assert resolve_timeout(config, {}) == 120


# codex -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["json", "fenced", "slow"])
def test_codex_answers_are_parsed_and_validated(codex: FakeCodex, kind: str) -> None:
    codex.script([{"kind": kind, "payload": ADVICE, "delay": 0.2}])
    assert ask_backend(backend(codex), request("the prompt"), timeout=10) == ADVICE
    [call] = codex.calls()
    assert call["stdin"] == "the prompt"
    assert call["output_schema"] == {
        k: v for k, v in DECISION_SCHEMA.items() if k not in ("$schema", "title", "description")
    }


def test_codex_argv_has_extra_args_after_exec(codex: FakeCodex) -> None:
    codex.script([{"kind": "json", "payload": ADVICE}])
    ask_backend(backend(codex, extra_args=("--dangerously-bypass-approvals-and-sandbox",)), request(), timeout=10)
    argv = codex.calls()[0]["argv"]
    assert argv[:3] == ["exec", "--dangerously-bypass-approvals-and-sandbox", "--skip-git-repo-check"]
    assert argv[3] == "--output-schema" and argv[5] == "--output-last-message" and argv[-1] == "-"


@pytest.mark.parametrize(
    "reply,kind",
    [
        ({"kind": "garbage"}, "not_json"),
        ({"kind": "json", "payload": ""}, "empty_output"),
        ({"kind": "json", "payload": {"next_actions": []}}, "schema_mismatch"),
        ({"kind": "exit", "payload": "error: 401 Unauthorized", "exit_code": 2}, "exit_nonzero"),
    ],
)
def test_codex_failures_have_named_kinds(codex: FakeCodex, reply: dict, kind: str) -> None:
    codex.script([reply])
    assert kind_of(lambda: ask_backend(backend(codex), request(), timeout=10)) == kind


def test_a_hanging_codex_times_out_and_is_killed(codex: FakeCodex) -> None:
    codex.script([{"kind": "hang"}])
    started = time.monotonic()
    assert kind_of(lambda: ask_backend(backend(codex), request(), timeout=0.5)) == "timeout"
    assert time.monotonic() - started < 4
    pid = codex.calls()[0]["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_missing_binary_plain_and_in_a_shell_string(codex: FakeCodex) -> None:
    assert kind_of(lambda: ask_backend(backend(codex, bin="no-such-codex-here"), request(), 5)) == "missing_binary"
    shell = backend(codex, bin="true && no-such-codex-here")
    assert kind_of(lambda: ask_backend(shell, request(), 5)) == "missing_binary"


def test_bin_may_be_a_shell_string_like_the_playbooks(codex: FakeCodex, tmp_path: Path) -> None:
    proxy = tmp_path / "proxy-on.sh"
    proxy.write_text("export HTTPS_PROXY=http://127.0.0.1:7890\n")
    codex.script([{"kind": "json", "payload": ADVICE}])
    shell = backend(codex, bin=f". {proxy} && codex")
    assert ask_backend(shell, request(), timeout=10) == ADVICE
    assert codex.calls()[0]["argv"][0] == "exec"


def test_a_hanging_shell_string_is_killed_as_a_group(codex: FakeCodex) -> None:
    codex.script([{"kind": "hang"}])
    assert kind_of(lambda: ask_backend(backend(codex, bin="true && codex"), request(), timeout=0.5)) == "timeout"
    with pytest.raises(ProcessLookupError):
        os.kill(codex.wait_for_calls(1)[0]["pid"], 0)


def test_json_event_stream(codex: FakeCodex) -> None:
    codex.script([{"kind": "fenced", "payload": ADVICE}])
    assert ask_backend(backend(codex, json_events=True), request(), timeout=10) == ADVICE
    assert "--json" in codex.calls()[0]["argv"]
    stream = "\n".join(
        json.dumps(e)
        for e in [
            {"type": "thread.started"},
            {"type": "item.completed", "item": {"type": "reasoning", "text": "hmm"}},
            {"type": "item.completed", "item": {"type": "agent_message", "text": "first"}},
            {"type": "item.completed", "item": {"type": "agent_message", "text": "final"}},
            {"type": "turn.completed"},
        ]
    )
    assert final_message_from_events(stream + "\nnot json\n") == "final"


# openai -----------------------------------------------------------------------------------------
@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = OpenAIStub()
    yield server
    server.close()


def openai_backend(stub: OpenAIStub, key: str | None = "sk-test-openai-0001") -> OpenAIBackend:
    env = {"OPENAI_API_KEY": key} if key else {}
    return OpenAIBackend("gpt-test", stub.base_url, lambda: env)


def test_openai_structured_output(stub: OpenAIStub) -> None:
    stub.replies = [Reply(json.dumps(ADVICE))]
    assert ask_backend(openai_backend(stub), request("the prompt"), timeout=5) == ADVICE
    [sent] = stub.requests
    assert sent["path"] == "/v1/chat/completions" and sent["headers"]["authorization"] == "Bearer sk-test-openai-0001"
    body = sent["json"]
    assert body["model"] == "gpt-test" and body["messages"][-1]["content"] == "the prompt"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["summary", "recommendations"]


@pytest.mark.parametrize(
    "reply,kind",
    [
        (Reply("nonsense"), "not_json"),
        (Reply(None), "empty_output"),
        (Reply("{}", status=500), "api_error"),
        (Reply(json.dumps(ADVICE), delay=1.5), "timeout"),
    ],
)
def test_openai_failures_have_named_kinds(stub: OpenAIStub, reply: Reply, kind: str) -> None:
    stub.replies = [reply]
    assert kind_of(lambda: ask_backend(openai_backend(stub), request(), timeout=0.5)) == kind


def test_openai_without_a_key(stub: OpenAIStub) -> None:
    assert kind_of(lambda: ask_backend(openai_backend(stub, key=None), request(), timeout=5)) == "missing_api_key"
    assert stub.requests == []


def test_openai_backend_is_chosen_by_config(stub: OpenAIStub) -> None:
    settings = settings_from_mapping(
        {"ai": {"backend": "openai", "openai_base_url": stub.base_url, "openai_model": "gpt-x"}}, Path(".")
    )
    stub.replies = [Reply(json.dumps(ADVICE))]
    client = AIClient(settings, lambda: {"OPENAI_API_KEY": "sk-test-openai-0002"}, OrchestratorMetrics())
    answer = client.ask("weather/bot", request())
    assert (answer.data, answer.backend, answer.error) == (ADVICE, "openai", None)
    assert stub.requests[0]["json"]["model"] == "gpt-x"


# the client around a backend ----------------------------------------------------------------------
def test_errors_are_counted_and_logged_once_until_a_success(codex: FakeCodex, caplog: pytest.LogCaptureFixture) -> None:
    codex.script([{"kind": "garbage"}, {"kind": "garbage"}, {"kind": "json", "payload": ADVICE}, {"kind": "garbage"}])
    metrics = OrchestratorMetrics()
    env = {"PATH": f"{codex.bin_dir}{os.pathsep}{os.environ['PATH']}", "CODEX_TIMEOUT_SECONDS": "10"}
    client = AIClient(OrchestratorSettings(), lambda: env, metrics)
    caplog.set_level(logging.DEBUG, logger="orchestrator.ai")
    answers = [client.ask("weather/bot", request()) for _ in range(4)]
    assert [a.error.kind if a.error else "ok" for a in answers] == ["not_json", "not_json", "ok", "not_json"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once, then again after the success in between
    registry = metrics.registry
    assert (
        registry.get_sample_value(
            "orchestrator_decision_assist_calls_total",
            {"session": "weather/bot", "backend": "codex", "task": "decision"},
        )
        == 4
    )
    assert (
        registry.get_sample_value(
            "orchestrator_decision_assist_errors_total",
            {"session": "weather/bot", "backend": "codex", "kind": "not_json"},
        )
        == 3
    )
    assert (
        registry.get_sample_value(
            "orchestrator_decision_assist_latency_seconds_count", {"session": "weather/bot", "backend": "codex"}
        )
        == 4
    )


def test_backend_off_asks_nobody() -> None:
    settings = settings_from_mapping({"ai": {"backend": "off"}}, Path("."))
    client = AIClient(settings, dict, OrchestratorMetrics())
    assert not client.enabled and client.ask("weather/bot", request()).data is None
