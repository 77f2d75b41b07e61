"""The project's codex backend against the REAL codex CLI (the pinned 0.171.0 that `.ci/run`
installs) and a local Responses-API stand-in: a valid reply is the parsed answer; a 401, a 500
and no server at all each fall back fast — the first `error` event of codex's `--json` stream
ends the call, long before the timeout — with a named kind, counted in the error metric, and
nothing of codex left running.

Each case prints (and records as evidence) how long the call took to fall back:
`.venv/bin/python -m pytest tests/test_codex_backend_real.py -q -s -n 0`.
Without the codex binary the test skips (fails under CI=true, see agents_plugin.require_agent).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.adapters.ai_client import AIClient, AIRequest
from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.assist.advisor import DECISION_SCHEMA, check_reply
from orchestrator.config import CodexConfig, settings_from_mapping
from pytest_tmuxagent.agents import AgentHome, AgentHomeFactory
from pytest_tmuxagent.evidence import Evidence
from pytest_tmuxagent.model_server import ModelServer, http_error, server_error, text
from pytest_tmuxagent.proxy_servers import refusing_port
from pytest_tmuxagent.waiting import wait_until

TIMEOUT = 60.0
SESSION = "weather/bot"
ADVICE = {
    "summary": "The bot has no key.",
    "recommendations": [
        {"title": "Add OPENAI_API_KEY to ~/.env", "detail": "", "command": None, "priority": "high", "risk": "low"}
    ],
}
PROXIES = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}


@dataclass(frozen=True)
class NoServer:
    """Where a model server would be, with nothing listening (codex's base URL for that case)."""

    port: int

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def client_for(home: AgentHome) -> tuple[AIClient, OrchestratorMetrics]:
    """The AI client as the orchestrator builds it ([ai] backend = "codex"), on the real binary
    and the home's CODEX_HOME; no proxy from this machine in the way of 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in PROXIES and k != "CODEX_TIMEOUT_SECONDS"}
    env.update(home.env)
    settings = settings_from_mapping({"codex": {"bin": str(home.binary), "timeout_seconds": TIMEOUT}}, Path("."))
    assert settings.codex == CodexConfig(bin=str(home.binary), timeout_seconds=TIMEOUT)
    metrics = OrchestratorMetrics()
    return AIClient(settings, lambda: env, metrics), metrics


def ask_timed(home: AgentHome, request: pytest.FixtureRequest, case: str):  # type: ignore[no-untyped-def]
    client, metrics = client_for(home)
    question = AIRequest("decision", "Blocker: OPENAI_API_KEY is missing.", DECISION_SCHEMA, "next_actions",
                         cwd=home.workdir, check=check_reply)  # fmt: skip
    started = time.monotonic()
    answer = client.ask(SESSION, question)
    elapsed = time.monotonic() - started
    outcome = f"{answer.error.kind} ({answer.error.detail})" if answer.error else "answer"
    print(f"\nreal codex, {case}: {outcome} after {elapsed:.2f} s (timeout {TIMEOUT:g} s)")
    Evidence(request.node).figure(f"codex_fallback_{case.replace(' ', '_')}", elapsed)
    # the call's whole process group is gone once it returns: nothing keeps retrying
    wait_until(lambda: not home.processes(), timeout=10, message="no codex process left under the home")
    return answer, elapsed, metrics


def errors(metrics: OrchestratorMetrics, kind: str) -> float | None:
    labels = {"session": SESSION, "backend": "codex", "kind": kind}
    return metrics.registry.get_sample_value("orchestrator_decision_assist_errors_total", labels)


def test_a_valid_reply_is_the_parsed_answer(
    tmuxagent_agent_home: AgentHomeFactory, model_server: ModelServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    model_server.script(text(json.dumps(ADVICE)))
    home = tmuxagent_agent_home("codex", tmp_path, model_server)
    answer, elapsed, _ = ask_timed(home, request, "valid")
    assert answer.error is None and answer.data == ADVICE and elapsed < TIMEOUT / 2
    [turn] = model_server.requests("turn")
    assert turn.body["text"]["format"]["schema"]["required"] == ["summary", "recommendations"]  # --output-schema
    assert home.codex_home is not None and not list(home.codex_home.rglob("rollout-*")), "--ephemeral: no session"


@pytest.mark.parametrize(
    "reply,kind,detail",
    [
        (http_error(401), "auth", "unexpected status 401"),
        (server_error(), "server_error", "high demand"),
    ],
    ids=["401", "500"],
)
def test_an_http_error_falls_back_at_once(
    tmuxagent_agent_home: AgentHomeFactory,
    model_server: ModelServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    reply: object,
    kind: str,
    detail: str,
) -> None:
    model_server.script(reply)  # type: ignore[arg-type]
    home = tmuxagent_agent_home("codex", tmp_path, model_server)
    answer, elapsed, metrics = ask_timed(home, request, request.node.callspec.id)
    assert answer.data is None and answer.error is not None
    assert answer.error.kind == kind and detail in answer.error.detail
    assert not answer.error.detail.startswith("Reconnecting")
    assert elapsed < TIMEOUT / 2 and errors(metrics, kind) == 1
    assert len(model_server.requests("turn")) == 1  # retries are off for the decision call


def test_no_server_listening_falls_back_at_once(
    tmuxagent_agent_home: AgentHomeFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with refusing_port() as port:
        home = tmuxagent_agent_home("codex", tmp_path, NoServer(port))
        answer, elapsed, metrics = ask_timed(home, request, "no server")
    assert answer.data is None and answer.error is not None
    assert answer.error.kind == "network" and "Connection failed" in answer.error.detail
    assert elapsed < TIMEOUT / 2 and errors(metrics, "network") == 1
