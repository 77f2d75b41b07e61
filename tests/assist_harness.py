"""The in-process rig of the decision-assist tests: `Assist` built from its own parts — a real
state store, audit log and metrics, a manual clock, a scripted AI backend, and fakes for the
notifier and the pane reader. No engine. The `make` fixture builds one per call."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters.ai_client import AIClient, AIError, AIRequest
from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.assist.coordinator import Assist
from orchestrator.clock import ManualClock
from orchestrator.config import Config, SessionConfig, TmuxConfig, settings_from_mapping
from orchestrator.events import CommandFinished, EventBus
from orchestrator.model import CommandResult, ResultStatus
from orchestrator.state.audit import AuditLog
from orchestrator.state.audit_read import read_events
from orchestrator.state.store import StateStore

SESSION = "weather/bot"
ADVICE = {
    "summary": "s",
    "recommendations": [
        {"title": "Check the key", "detail": "", "command": "echo check", "priority": "high", "risk": "low"},
        {"title": "Wipe", "detail": "", "command": "rm -rf /", "priority": "low", "risk": "low"},
        {"title": "Rotate", "detail": "", "command": "echo rotate", "priority": "medium", "risk": "high"},
    ],
}


class ScriptedBackend:
    name = "codex"

    def __init__(self, *replies: Any, delay: float = 0.0) -> None:
        self.replies = list(replies)
        self.delay = delay
        self.requests: list[AIRequest] = []
        self.release = threading.Event()

    def complete(self, request: AIRequest, timeout: float) -> str:
        self.requests.append(request)
        if self.delay:
            self.release.wait(self.delay)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, AIError):
            raise reply
        return reply if isinstance(reply, str) else json.dumps(reply)

    def close(self) -> None:
        self.release.set()


class FakeNotify:
    """A `Notify` that records what it was asked to send."""

    def __init__(self) -> None:
        self.notes: list[dict[str, str]] = []

    def notify(self, *, kind: str, session: str, title: str, body: str, dedupe_key: str) -> None:
        self.notes.append({"kind": kind, "session": session, "title": title, "body": body, "dedupe_key": dedupe_key})


class FakePanes:
    """A `PaneReader` showing scripted lines for the sessions whose pane is known."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.lines: list[str] = []
        self.captures = 0

    def capture_session(self, session: str, lines: int) -> list[str] | None:
        if session not in self.known:
            return None
        self.captures += 1
        return self.lines[-lines:]

    def drew_since_last_look(self, session: str) -> bool:
        return True  # scripted lines change whenever the test says; the real check is in test_panes


class Harness:
    """Assist with real store, audit and metrics; the test drives time and the panes."""

    def __init__(
        self, tmp_path: Path, backend: ScriptedBackend | None, toml: dict[str, Any], agents: tuple[str, ...] = ()
    ) -> None:
        settings = settings_from_mapping(toml, tmp_path)
        workdir = tmp_path / "work"
        workdir.mkdir(parents=True, exist_ok=True)
        fleet = (SessionConfig(SESSION, "weather:bot", workdir),) + tuple(
            SessionConfig(name, name.replace("/", ":"), workdir, kind="agent", provider=provider)
            for name, provider in ((n, "codex" if "codex" in n else "claude") for n in agents)
        )
        self.config = Config(
            tmp_path / "agent-config.yaml",
            tmp_path / "orchestrator.toml",
            TmuxConfig(),
            tmp_path / "state.db",
            tmp_path / "logs",
            fleet,
            settings,
        )
        self.session = self.config.sessions[0]
        self.clock = ManualClock(start=time.time())  # moved by hand where a test needs time to pass
        self.store = StateStore(self.config.state_db, clock=self.clock)
        for session in fleet:
            self.store.ensure_session(session.name, session.target)
        self.audit = AuditLog(self.config.audit_log, clock=self.clock)
        self.metrics = OrchestratorMetrics()
        self.notifier = FakeNotify()
        self.notes = self.notifier.notes
        self.panes = FakePanes({s.name for s in fleet})
        ai = AIClient(settings, lambda: {}, self.metrics, backend=backend) if backend else None
        self.assist = Assist(
            settings=settings,
            sessions=self.config.sessions,
            store=self.store,
            audit=self.audit,
            metrics=self.metrics,
            clock=self.clock,
            notify=self.notifier,
            panes=self.panes,
            ai=ai,
        )
        self.workdir = workdir
        self.bus = EventBus(raise_errors=True)
        self.assist.subscribe(self.bus)

    def settle(self, name: str = SESSION) -> dict[str, Any]:
        """Checks until every job has finished and been handed back (and acted on), then the metadata."""
        for _ in range(2):
            for session in self.config.sessions:
                self.assist.check(session)
            self.assist.jobs.wait(10)
        return self.store.metadata(name)

    def events(self, event: str) -> list[dict[str, Any]]:
        result = read_events(self.config.audit_log, validate=True)
        assert result.problems == []
        return [e for e in result.events if e["event"] == event]

    def result(self, exit_code: int | None, output_tail: str = "", status: ResultStatus | None = None) -> CommandResult:
        return CommandResult(
            exit_code,
            status or ("succeeded" if exit_code == 0 else "failed"),
            "2026-01-01T00:00:00.000000Z",
            "2026-01-01T00:00:01.000000Z",
            1.0,
            output_tail,
        )

    def finish(self, command_id: int, exit_code: int | None, status: ResultStatus | None = None) -> None:
        """The command ends with `exit_code` (and `status`; by default what the code says)."""
        assert self.store.mark_running(command_id, "2026-01-01T00:00:00.000000Z")
        self.store.finish(command_id, self.result(exit_code, status=status))

    def end_turn(self, command_id: int, status: ResultStatus = "succeeded", reply: str = "Done.") -> None:
        """An agent's turn ends as the engine records it: the row, last_command_result, the bus event."""
        assert self.store.mark_running(command_id, "2026-01-01T00:00:00.000000Z")
        result = CommandResult(
            None,
            status,
            "2026-01-01T00:00:00.000000Z",
            "2026-01-01T00:00:05.000000Z",
            5.0,
            "\n".join(reply.splitlines()[-5:]),
            reply=reply,
            tools=(),
        )
        assert self.store.finish(command_id, result)
        row = self.store.command(command_id)
        assert row is not None
        self.bus.publish(CommandFinished(session=row.session, row=row, result=result))

    def turn(self, session: str, prompt: str, status: ResultStatus = "succeeded", reply: str = "Done.") -> int:
        command_id = self.store.enqueue(session, prompt)
        self.end_turn(command_id, status, reply)
        return command_id


DECIDE = {"decision": {"auto_run": True, "allowlist": ["^echo "]}}


@pytest.fixture
def make(tmp_path: Path):
    made: list[Harness] = []

    def factory(
        *replies: Any, toml: dict[str, Any] | None = None, delay: float = 0.0, agents: tuple[str, ...] = ()
    ) -> Harness:
        harness = Harness(
            tmp_path / f"h{len(made)}",
            ScriptedBackend(*replies, delay=delay) if replies else None,
            DECIDE if toml is None else toml,
            agents,
        )
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        harness.assist.close()
        harness.store.close()


AGENT = "weather/agent"
RUN_PLANS = {"ai": {"backend": "off"}, "plan": {"auto_execute": True}}  # plans run without approval
PLAN = """\
# Plan
## Step 1: Build
```bash
make build
make check
```
## Step 2: Ship
Depends on: 3
```bash
make ship
```
## Step 3: Test
```bash
make test
```
"""


def write_doc(h: Harness, text: str) -> None:
    (h.workdir / "plan.md").write_text(text)
    h.store.update_metadata(SESSION, {"requirements_doc": "plan.md"})
