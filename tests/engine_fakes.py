"""In-process stand-ins for the engine's ports: a pane port and a driver that tests steer by hand.

They implement `orchestrator.ports.PaneIO` and `orchestrator.ports.Driver` the way a tmux server
and a shell would behave, minus the processes, so the engine, the stall guard and the failure
streak can be tested with the manual clock in milliseconds.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.clock import ManualClock
from orchestrator.config import OrchestratorSettings, SessionConfig, SessionKind
from orchestrator.errors import PaneNotFound, TmuxUnavailable
from orchestrator.events import Event, EventBus
from orchestrator.model import ApprovalRequest, CommandRow, ExitRecord, PaneInfo, PaneRef, Readiness


@dataclass
class FakePanes:
    """target → pane id; panes can be closed and sends can be made to fail."""

    targets: dict[str, str]
    alive: set[str] = field(default_factory=set)
    sent_keys: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    typed: list[tuple[str, str]] = field(default_factory=list)
    fail_sends: int = 0

    def __post_init__(self) -> None:
        self.alive = set(self.targets.values())

    def resolve(self, target: str) -> PaneRef:
        pane = self.targets.get(target)
        if pane is None or pane not in self.alive:
            raise PaneNotFound(f"no tmux pane for target '{target}'", key="target")
        return PaneRef(pane, target)

    def pane_alive(self, pane_id: str) -> bool:
        return pane_id in self.alive

    def send_text(self, pane_id: str, text: str, *, enter: bool = True) -> None:
        if self.fail_sends:
            self.fail_sends -= 1
            raise TmuxUnavailable("no server running")
        self.typed.append((pane_id, text))

    def send_keys(self, pane_id: str, *keys: str) -> None:
        self.sent_keys.append((pane_id, keys))

    def capture(self, pane_id: str, lines: int = 50) -> list[str]:
        return []

    def socket_path(self) -> str:
        return "/tmp/fake-tmux"

    identity: str = "100 1"
    pane_lists: int = 0  # calls of all_pane_info (one tmux `list-panes -a` each)

    def pane_info(self, pane_id: str) -> PaneInfo | None:
        if pane_id not in self.alive:
            return None
        return PaneInfo(pane_id, 1, False, False, "", "bash", 2, 0, 80, "/dev/pts/9", True)

    def all_pane_info(self) -> dict[str, PaneInfo]:
        self.pane_lists += 1
        return {p: info for p in self.alive if (info := self.pane_info(p)) is not None}

    def paste_text(self, pane_id: str, text: str, *, enter: bool = True) -> None:
        self.send_text(pane_id, text)

    def screen_line(self, pane_id: str, row: int) -> str:
        return "$ "

    def pipe_pane(self, pane_id: str, command: str) -> None:
        pass

    def copy_output(self, pane_id: str, path: Path) -> None:
        pass

    def copying(self, pane_id: str, known: PaneInfo | None = None) -> bool:
        return pane_id in self.alive

    def server_identity(self) -> str | None:
        return self.identity if self.alive else None


@dataclass
class FakeDriver:
    """Delivers by "typing" into FakePanes; the test decides when work starts, prints and ends."""

    panes: FakePanes
    clock: ManualClock
    starts_on_delivery: bool = True
    kind: SessionKind = "shell"
    delivered: list[tuple[int, str]] = field(default_factory=list)
    _completions: queue.Queue[int] = field(default_factory=queue.Queue)
    _started: set[int] = field(default_factory=set)
    _ends: dict[int, ExitRecord] = field(default_factory=dict)
    _output: dict[int, list[str]] = field(default_factory=dict)
    _watching: set[int] = field(default_factory=set)
    interrupts: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)
    closed: bool = False
    readiness: Readiness = Readiness(True, "idle")
    shell_is_idle: bool = False
    asking: set[int] = field(default_factory=set)
    replies: list[tuple[str, str]] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    approval_requests: dict[int, ApprovalRequest] = field(default_factory=dict)
    approval_answers: list[tuple[int, bool, str]] = field(default_factory=list)

    @property
    def completions(self) -> queue.Queue[int]:
        return self._completions

    def deliver(self, row: CommandRow, pane_id: str) -> None:
        self.panes.send_text(pane_id, row.command)
        self.delivered.append((row.id, pane_id))
        self.typed.add(row.id)
        self._ends.pop(row.id, None)
        self._output[row.id] = []
        self._watching.add(row.id)
        if self.starts_on_delivery:
            self._started.add(row.id)

    def probe(self, pane_id: str, *, dispatch: bool = True) -> Readiness:
        if pane_id not in self.panes.alive:
            return Readiness(False, "pane_missing", "the pane is gone")
        return self.readiness

    typed: set[int] = field(default_factory=set)

    def adopt(self, row: CommandRow, pane_id: str) -> bool:
        if row.id not in self._started and row.id not in self.typed:
            return False
        self._output.setdefault(row.id, [])
        return True

    def forget_pane(self, pane_id: str) -> None:
        self.forgotten.append(pane_id)

    def shell_idle(self, pane_id: str) -> bool:
        return self.shell_is_idle

    def waiting_for_input(self, command_id: int) -> bool:
        return command_id in self.asking

    def question(self, command_id: int) -> str:
        return "continue? [y/N]"

    def type_reply(self, pane_id: str, text: str) -> None:
        self.replies.append((pane_id, text))
        self.panes.send_text(pane_id, text)

    def pending_approval(self, command_id: int) -> ApprovalRequest | None:
        return self.approval_requests.get(command_id)

    def answer_approval(self, command_id: int, pane_id: str, approve: bool, note: str) -> None:
        self.approval_answers.append((command_id, approve, note))
        self.approval_requests.pop(command_id, None)
        self.panes.send_text(pane_id, "1" if approve else note)

    # what the test does to a running command
    def start(self, command_id: int) -> None:
        self._started.add(command_id)

    def emit(self, command_id: int, line: str) -> None:
        self._output.setdefault(command_id, []).append(line)

    def end(self, command_id: int, exit_code: int, duration: float = 0.01, signal: bool = True) -> None:
        now = self.clock.now()
        self._ends[command_id] = ExitRecord(exit_code, now - duration, now)
        if signal:
            self._completions.put(command_id)

    # the port
    def watch(self, command_id: int) -> None:
        self._watching.add(command_id)

    def watching(self, command_id: int) -> bool:
        return command_id in self._watching

    def started(self, command_id: int) -> bool:
        return command_id in self._started

    def end_record(self, command_id: int) -> ExitRecord | None:
        """Like the shell's: an exit record counts only beside the attempt's own start record."""
        return self._ends.get(command_id) if command_id in self._started else None

    def activity_marker(self, command_id: int) -> int:
        return len(self._output.get(command_id, []))

    def output_tail(self, command_id: int, lines: int, grace_seconds: float, until: int | None = None) -> str:
        printed = self._output.get(command_id, [])
        return "\n".join(printed[: until if until is not None else len(printed)][-lines:])

    def interrupt(self, command_id: int, pane_id: str, keys: tuple[str, ...]) -> None:
        self.interrupts.append((command_id, keys))
        self.panes.send_keys(pane_id, *keys)

    def discard(self, command_id: int) -> None:
        self._watching.discard(command_id)

    def close(self) -> None:
        self.closed = True


@dataclass
class RecordingNotify:
    sent: list[dict[str, str]] = field(default_factory=list)

    def notify(self, *, kind: str, session: str, title: str, body: str, dedupe_key: str) -> object:
        self.sent.append({"kind": kind, "session": session, "title": title, "body": body, "dedupe_key": dedupe_key})
        return None


class EventLog:
    """Every event published on a bus, in order."""

    def __init__(self, bus: EventBus, *kinds: type[Event]) -> None:
        self.events: list[Event] = []
        for kind in kinds:
            bus.subscribe(kind, self.events.append)

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]


def session(name: str = "weather/bot", target: str = "weather:bot", **extra: object) -> SessionConfig:
    return SessionConfig(name=name, target=target, workdir=Path("."), **extra)  # type: ignore[arg-type]


def settings(**overrides: object) -> OrchestratorSettings:
    base: dict[str, object] = {
        "stall_timeout_seconds": 10.0,
        "stall_retries_before_notify": 1,
        "failure_alert_threshold": 3,
        "cooldown_seconds": 5.0,
        "interrupt_grace_seconds": 1.0,
        "output_tail_lines": 5,
    }
    base.update(overrides)
    return OrchestratorSettings(**base)  # type: ignore[arg-type]
