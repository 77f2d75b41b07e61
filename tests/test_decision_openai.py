"""The openai backend end to end: the real service, pointed at a local Chat Completions stub
by `[ai] openai_base_url`, with OPENAI_API_KEY from the env file."""

from __future__ import annotations

import json

from pytest_tmuxagent.waiting import wait_until

from .openai_stub import OpenAIStub, Reply

SESSION = "weather/bot"
ADVICE = {
    "summary": "s",
    "recommendations": [
        {
            "title": "Export OPENAI_API_KEY in the bot's shell",
            "detail": "",
            "command": None,
            "priority": "high",
            "risk": "low",
        }
    ],
}


def test_openai_backend_answers_blockers(agent_pane, orchestrator_service, monkeypatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    stub = OpenAIStub([Reply(json.dumps(ADVICE))])
    try:
        service = orchestrator_service(
            [agent_pane(SESSION)],
            start=False,
            settings={
                "ai": {"backend": "openai", "openai_base_url": stub.base_url, "openai_model": "gpt-stub"},
                "decision": {"enabled": True},
            },
        )
        service.env_file.write_text("OPENAI_API_KEY=sk-test-from-env-file-0001\n")
        service.start()
        service.meta_set(SESSION, "blockers", ["OPENAI_API_KEY is missing in the bot's shell"])
        actions = wait_until(lambda: service.metadata(SESSION).get("next_actions"), timeout=15)
    finally:
        stub.close()
    assert (
        actions["source"] == "openai"
        and actions["recommendations"][0]["title"] == ADVICE["recommendations"][0]["title"]
    )
    [sent] = stub.requests
    assert sent["headers"]["authorization"] == "Bearer sk-test-from-env-file-0001"
    assert sent["json"]["model"] == "gpt-stub"
    assert "sk-test-from-env-file-0001" not in service.audit_log.read_text() + service.log_text()


def test_a_base_url_answering_html_falls_back_to_rules(agent_pane, orchestrator_service, monkeypatch) -> None:
    """A 200 `text/html` page (a captive portal, a wrong base URL) used to be an uncaught
    AttributeError: no advice, the job retried every 30 s, no metric. Now it is `bad_reply`,
    counted, and the rules answer in the same job."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    stub = OpenAIStub([Reply(body=b"<html><body>Sign in to the Wi-Fi</body></html>", content_type="text/html")])
    try:
        service = orchestrator_service(
            [agent_pane(SESSION)],
            settings={"ai": {"backend": "openai", "openai_base_url": stub.base_url}, "decision": {"enabled": True}},
            env={"OPENAI_API_KEY": "sk-test-from-env-file-0002"},
        )
        service.meta_set(SESSION, "blockers", ["OPENAI_API_KEY is missing in the bot's shell"])
        actions = wait_until(lambda: service.metadata(SESSION).get("next_actions"), timeout=15)
    finally:
        stub.close()
    assert actions["source"] == "rules" and actions["ai_error"]["kind"] == "bad_reply"
    assert actions["ai_error"]["backend"] == "openai" and actions["recommendations"]
    assert len(stub.requests) == 1  # answered once, not retried every 30 s
    labels = {"session": SESSION, "backend": "openai", "kind": "bad_reply"}
    assert service.metrics.wait_until_value("orchestrator_decision_assist_errors_total", 1.0, **labels) == 1
