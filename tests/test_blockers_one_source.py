"""A blocker printed by a dispatched command is one blocker, found in the command's output tail
(the exact channel), whatever order the pane and the output tail show it in — never a second
"pane output" blocker for the same line with the shell's prompt in front of it (issue 18:
scenario C's flake). Real store, audit log and metrics; the pane is scripted through the
`PaneReader` port and time through the injected clock."""

from __future__ import annotations

from pathlib import Path

from orchestrator.events import CommandDispatched, CommandFinished
from tests.assist_harness import SESSION, Harness

LINE = "openai.AuthenticationError: OPENAI_API_KEY environment variable is missing"
SCAN = {"ai": {"backend": "off"}, "decision": {"pane_scan_seconds": 0.001}}


def harness(tmp_path: Path) -> Harness:
    h = Harness(tmp_path, None, SCAN)
    h.panes.lines = ["$ "]
    assert h.assist.blockers.scan_pane(SESSION) == []  # the baseline look
    return h


def scan(h: Harness) -> list[str]:
    """Two looks (a line counts once it is the same on two), as the engine's ticks make them."""
    found: list[str] = []
    for _ in range(2):
        h.clock.advance(0.01)
        found += h.assist.blockers.scan_pane(SESSION)
    return found


def dispatch(h: Harness, command: str) -> int:
    command_id = h.store.enqueue(SESSION, command)
    row = h.store.command(command_id)
    assert row is not None
    h.bus.publish(CommandDispatched(session=SESSION, row=row, queue_depth=0))
    return command_id


def finish(h: Harness, command_id: int, tail: str) -> None:
    h.finish(command_id, 1)
    row = h.store.command(command_id)
    assert row is not None
    h.bus.publish(CommandFinished(session=SESSION, row=row, result=h.result(1, tail)))


def origins(h: Harness) -> list[str]:
    return [e["detail"] for e in h.events("blocker_detected")]


def test_a_line_on_the_pane_while_its_command_runs_is_the_commands_blocker(tmp_path: Path) -> None:
    h = harness(tmp_path)
    command_id = dispatch(h, "./check_keys")
    h.panes.lines = ["$ ", "▶ #1 ./check_keys", LINE, "$ "]  # on the screen before the result is in
    assert scan(h) == []
    finish(h, command_id, LINE)
    assert scan(h) == []
    assert h.store.metadata(SESSION)["blockers"] == [LINE]
    assert origins(h) == [f"command output: {LINE}"]


def test_a_finished_commands_line_shown_after_the_prompt_is_not_a_second_blocker(tmp_path: Path) -> None:
    h = harness(tmp_path)
    command_id = dispatch(h, "./check_keys")
    finish(h, command_id, LINE)
    h.panes.lines = ["$ ", "▶ #1 ./check_keys", f"$ {LINE}", "$ "]  # the prompt drawn first, then the copy
    assert scan(h) == []
    assert h.store.metadata(SESSION)["blockers"] == [LINE]
    assert origins(h) == [f"command output: {LINE}"]


def test_a_line_printed_outside_any_dispatched_command_is_still_a_pane_blocker(tmp_path: Path) -> None:
    h = harness(tmp_path)
    finish(h, dispatch(h, "./check_keys"), "all good")
    h.panes.lines = ["$ ", "▶ #1 ./check_keys", "all good", "$ ", "ERROR: WEATHER_API_KEY is not set", "$ "]
    assert scan(h) == ["ERROR: WEATHER_API_KEY is not set"]
    assert origins(h) == ["pane output: ERROR: WEATHER_API_KEY is not set"]
