"""Fixtures for driving real AI coding agents (Claude Code, codex) in tests: a scripted model
server they talk to instead of the real APIs. Loaded by the tmuxagent plugin (plugin.py's
``pytest_plugins``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .evidence import Evidence
from .model_server import ModelServer

__all__ = ["model_server"]


@pytest.fixture
def model_server(request: pytest.FixtureRequest) -> Iterator[ModelServer]:
    """A real HTTP server on 127.0.0.1 speaking the Anthropic Messages and OpenAI Responses
    APIs from a per-test script (`model_server.script(text("…"), tool_call("Bash", {...}))`),
    recording every request. Stopped after the test (hung replies are dropped); its request
    log goes to the evidence."""
    server = ModelServer().start()
    try:
        yield server
    finally:
        server.stop()
        lines = server.summary()
        if lines:
            Evidence(request.node).lines("log", f"model server: {len(lines)} request(s)", lines)
