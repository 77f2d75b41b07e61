"""The AI client: codex (a real fake executable) and openai (a local HTTP stub), every named
error kind, the safe flags of decision calls, codex's error events ending a call at once, reply
parsing and validation, metrics and logging once."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from orchestrator.adapters.ai_client import (
    AIClient,
    AIError,
    AIRequest,
    CodexBackend,
    OpenAIBackend,
    ask_backend,
    classify_exception,
    extract_json,
    final_message_from_events,
    resolve_timeout,
    validate_reply,
)
from orchestrator.adapters.codex_backend import SAFE_FLAGS, meaningful_line, no_retry_overrides
from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.adapters.openai_backend import classify_openai
from orchestrator.assist.advisor import DECISION_SCHEMA, check_reply
from orchestrator.config import CodexConfig, OrchestratorSettings, load_config, settings_from_mapping
from orchestrator.errors import ConfigError
from pytest_tmuxagent.fake_codex import FakeCodex
from pytest_tmuxagent.proxy_servers import refusing_port

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


PLAYBOOK_ARGS = ("--dangerously-bypass-approvals-and-sandbox",)


def test_decision_calls_run_with_safe_flags_never_the_agents_extra_args(codex: FakeCodex) -> None:
    codex.script([{"kind": "json", "payload": ADVICE}])
    ask_backend(backend(codex, extra_args=PLAYBOOK_ARGS), request(), timeout=10)
    argv = codex.calls()[0]["argv"]
    assert argv[:5] == ["exec", *SAFE_FLAGS] == ["exec", "--sandbox", "read-only", "-c", 'approval_policy="never"']
    assert {"--ephemeral", "--skip-git-repo-check", "--json"} <= set(argv)
    assert "--dangerously-bypass-approvals-and-sandbox" not in argv
    assert argv[-5] == "--output-schema" and argv[-3] == "--output-last-message" and argv[-1] == "-"


def test_inherit_args_opts_one_call_type_in(codex: FakeCodex) -> None:
    codex.script([{"kind": "json", "payload": ADVICE}, {"kind": "json", "payload": {"steps": []}}])
    chosen = backend(codex, extra_args=(*PLAYBOOK_ARGS, "--skip-git-repo-check"), inherit_args=("decomposition",))
    ask_backend(chosen, request(), timeout=10)
    with pytest.raises(AIError):  # an empty plan is rejected by the schema; the argv is what counts
        ask_backend(chosen, AIRequest("decomposition", "plan", {"type": "object"}, "plan", check=no_steps), timeout=10)
    decision, decomposition = (call["argv"] for call in codex.calls())
    assert "--sandbox" in decision and PLAYBOOK_ARGS[0] not in decision
    assert decomposition[1:3] == [PLAYBOOK_ARGS[0], "--skip-git-repo-check"] and "--sandbox" not in decomposition
    assert decomposition.count("--skip-git-repo-check") == 1  # the real CLI refuses a flag given twice
    assert "--ephemeral" in decomposition and "--json" in decomposition


def no_steps(data: object) -> None:
    raise ValueError("no steps")


def test_inherit_args_accepts_only_call_types(tmp_path: Path) -> None:
    (tmp_path / ".tmuxagent").mkdir()
    (tmp_path / "agent-config.yaml").write_text("sessions:\n  - name: a/b\n    target: a:0\n")
    toml = tmp_path / ".tmuxagent" / "orchestrator.toml"
    toml.write_text('[codex]\ninherit_args = ["decision", "decomposition"]\n')
    assert load_config(tmp_path / "agent-config.yaml").settings.codex.inherit_args == ("decision", "decomposition")
    toml.write_text('[codex]\ninherit_args = ["advice"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "agent-config.yaml")
    assert "codex.inherit_args" in str(info.value) and "'advice' is not one of ['decision', 'decomposition']" in str(
        info.value
    )


def test_retries_are_off_for_a_provider_defined_in_codex_config(codex: FakeCodex, tmp_path: Path) -> None:
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        'model_provider = "local"\n[model_providers.local]\nname = "l"\nbase_url = "http://127.0.0.1:9/v1"\n'
    )
    assert no_retry_overrides({"CODEX_HOME": str(home)}) == [
        "-c",
        "model_providers.local.request_max_retries=0",
        "-c",
        "model_providers.local.stream_max_retries=0",
    ]
    codex.script([{"kind": "json", "payload": ADVICE}])
    chosen = backend(codex)
    env = {**chosen.env(), "CODEX_HOME": str(home)}
    ask_backend(CodexBackend(chosen.config, lambda: env), request(), timeout=10)
    assert "model_providers.local.request_max_retries=0" in codex.calls()[0]["argv"]
    (home / "config.toml").write_text('model = "gpt-5"\n')  # the built-in provider: codex refuses overrides
    assert no_retry_overrides({"CODEX_HOME": str(home)}) == []
    assert no_retry_overrides({"CODEX_HOME": str(tmp_path / "none")}) == []


@pytest.mark.parametrize(
    "reply,kind",
    [
        ({"kind": "garbage"}, "not_json"),
        ({"kind": "json", "payload": ""}, "empty_output"),
        ({"kind": "json", "payload": {"next_actions": []}}, "schema_mismatch"),
        ({"kind": "exit", "payload": "Error loading config.toml: bad", "exit_code": 1}, "exit_nonzero"),
    ],
)
def test_codex_failures_have_named_kinds(codex: FakeCodex, reply: dict, kind: str) -> None:
    codex.script([reply])
    assert kind_of(lambda: ask_backend(backend(codex), request(), timeout=10)) == kind


@pytest.mark.parametrize(
    "message,kind",
    [
        ("unexpected status 401 Unauthorized: Incorrect API key provided., url: http://127.0.0.1:1/v1", "auth"),
        ("unexpected status 429 Too Many Requests: slow down", "rate_limited"),
        ("We’re currently experiencing high demand, which may cause temporary errors.", "server_error"),
        ("Connection failed: error sending request", "network"),
        ("unexpected status 400 Bad Request: unknown model", "api_error"),
    ],
)
@pytest.mark.parametrize("then", ["hang", "fail"])
def test_an_error_event_ends_the_call_at_once(codex: FakeCodex, message: str, kind: str, then: str) -> None:
    """codex keeps retrying after its first `error` event (for ever while the network is down):
    the call ends there, with that message (not the "Reconnecting..." wrapper) as the detail."""
    codex.script([{"kind": "event_error", "payload": message, "then": then}])
    started = time.monotonic()
    with pytest.raises(AIError) as info:
        ask_backend(backend(codex), request(), timeout=30)
    assert time.monotonic() - started < 5  # not the 30 s timeout
    assert (info.value.kind, info.value.detail) == (kind, message)
    with pytest.raises(ProcessLookupError):
        os.kill(codex.calls()[0]["pid"], 0)


def test_a_flag_the_cli_refuses_is_a_usage_error_naming_it(codex: FakeCodex) -> None:
    """0.171 has no `--ask-for-approval` for exec: the detail is clap's `error:` line, not the
    "For more information, try '--help'." after it."""
    refused = backend(codex, extra_args=("--ask-for-approval", "never"), inherit_args=("decision",))
    with pytest.raises(AIError) as info:
        ask_backend(refused, request(), timeout=10)
    assert info.value.kind == "usage_error"
    assert info.value.detail == "exit 2: error: unexpected argument '--ask-for-approval' found"


@pytest.mark.parametrize(
    "stderr,line",
    [
        (
            "error: unexpected argument '--x' found\n\n  tip: …\n\nUsage: codex exec\n\nFor more information, try '--help'.\n",
            "error: unexpected argument '--x' found",
        ),
        ("WARNING: proceeding\nError loading config.toml: bad key\nin `model`\n", "Error loading config.toml: bad key"),
        ("something broke\nFor more information, try '--help'.\n", "something broke"),
    ],
)
def test_the_recorded_detail_is_the_meaningful_line(stderr: str, line: str) -> None:
    assert meaningful_line(stderr) == line


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
    assert ask_backend(backend(codex), request(), timeout=10) == ADVICE
    assert "--json" in codex.calls()[0]["argv"]  # always: the events decide when a call has failed
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


HTML = b"<html><body>Please log in to the hotel Wi-Fi</body></html>"


@pytest.mark.parametrize(
    "reply,kind",
    [
        (Reply("nonsense"), "not_json"),
        (Reply(None), "empty_output"),
        (Reply("{}", status=401), "auth"),
        (Reply("{}", status=403), "auth"),
        (Reply("{}", status=429), "rate_limited"),
        (Reply("{}", status=500), "server_error"),
        (Reply("{}", status=404), "api_error"),
        (Reply(body=HTML, content_type="text/html"), "bad_reply"),  # was an uncaught AttributeError
        (Reply(body=b"{not json", content_type="application/json"), "bad_reply"),
        (Reply(json.dumps(ADVICE), delay=1.5), "timeout"),
    ],
)
def test_openai_failures_have_named_kinds(stub: OpenAIStub, reply: Reply, kind: str) -> None:
    stub.replies = [reply]
    assert kind_of(lambda: ask_backend(openai_backend(stub), request(), timeout=0.5)) == kind


def test_openai_with_nothing_listening_is_a_network_error() -> None:
    with refusing_port() as port:
        dead = OpenAIBackend("gpt-test", f"http://127.0.0.1:{port}/v1", lambda: {"OPENAI_API_KEY": "sk-test-0003"})
        with pytest.raises(AIError) as info:
            ask_backend(dead, request(), timeout=5)
    assert info.value.kind == "network" and "Connection" in info.value.detail


def test_openai_goes_through_the_environments_proxy(stub: OpenAIStub, tmuxagent_http_proxy) -> None:
    """The SDK gets an HTTP client built from the env it is given (the merged one), not the process's."""
    stub.replies = [Reply(json.dumps(ADVICE))]
    env = {"OPENAI_API_KEY": "sk-test-openai-0004", "HTTP_PROXY": tmuxagent_http_proxy.url}
    assert ask_backend(OpenAIBackend("gpt-test", stub.base_url, lambda: env), request(), timeout=5) == ADVICE
    assert tmuxagent_http_proxy.targets() == [f"127.0.0.1:{stub.server.server_address[1]}"]


def test_a_proxy_the_client_cannot_use_is_named() -> None:
    env = {"OPENAI_API_KEY": "sk-test-openai-0005", "ALL_PROXY": "ftp://user:pw-secret@127.0.0.1:2121"}
    with pytest.raises(AIError) as info:
        ask_backend(OpenAIBackend("gpt-test", "http://127.0.0.1:9/v1", lambda: env), request(), timeout=5)
    assert info.value.kind == "proxy_unusable" and "pw-secret" not in str(info.value)


@pytest.mark.parametrize(
    "exc,kind",
    [
        (ImportError("Using SOCKS proxy, but the 'socksio' package is not installed."), "missing_dependency"),
        (ConnectionResetError("reset"), "network"),
        (TimeoutError("late"), "timeout"),
        (KeyError("choices"), "unexpected"),
    ],
)
def test_any_other_exception_is_classified(exc: Exception, kind: str) -> None:
    """The last resort, a unit of the classifier: socks support is installed now, so the
    ImportError the playbook's ALL_PROXY used to raise cannot happen for real here."""
    assert classify_exception(exc).kind == kind and classify_openai(exc, 5).kind == kind


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


@dataclass
class Broken:
    """A backend (the port, not our code) whose call raises what no backend should."""

    name: Literal["codex"] = "codex"

    def complete(self, request: AIRequest, timeout: float) -> str:
        raise KeyError("choices")

    def close(self) -> None:
        pass


def test_an_unexpected_exception_is_still_an_answer_and_counted() -> None:
    metrics = OrchestratorMetrics()
    answer = AIClient(OrchestratorSettings(), dict, metrics, backend=Broken()).ask("weather/bot", request())
    assert answer.data is None and answer.error is not None and answer.error.kind == "unexpected"
    assert "KeyError" in answer.error.detail
    labels = {"session": "weather/bot", "backend": "codex", "kind": "unexpected"}
    assert metrics.registry.get_sample_value("orchestrator_decision_assist_errors_total", labels) == 1


def test_backend_off_asks_nobody() -> None:
    settings = settings_from_mapping({"ai": {"backend": "off"}}, Path("."))
    client = AIClient(settings, dict, OrchestratorMetrics())
    assert not client.enabled and client.ask("weather/bot", request()).data is None
