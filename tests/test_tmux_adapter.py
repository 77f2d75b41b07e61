"""The one tmux adapter on a real server: `-L` and `-S` both work, targets resolve
or fail with a fix, and text arrives exactly as written."""

from __future__ import annotations

import pytest

from orchestrator.adapters.tmux import TmuxAdapter
from orchestrator.config import TmuxConfig
from orchestrator.errors import PaneNotFound
from pytest_tmuxagent.waiting import wait_until

TRICKY = "\n".join(
    [
        "echo \"double\" 'single' `backtick` $HOME ${PATH} \\backslash ; && || | > <",
        "天气预报 — ünïcödé ✓ 🚀",
        "x" * 5000,
        "last line",
    ]
)


def adapters(tmux_server) -> list[TmuxAdapter]:
    by_name = TmuxAdapter(TmuxConfig(socket_name=tmux_server.socket_name))
    return [by_name, TmuxAdapter(TmuxConfig(socket_path=by_name.socket_path()))]


@pytest.mark.parametrize("mode", ["socket_name", "socket_path"])
def test_text_arrives_literally(mode, tmux_server, agent_pane) -> None:
    pane = agent_pane("weather/bot")
    adapter = adapters(tmux_server)[mode == "socket_path"]
    pane.type("stty -icanon -echo; cat > typed.txt")
    wait_until(lambda: any("cat > typed.txt" in line for line in pane.capture()), timeout=10)
    adapter.send_text(adapter.resolve(pane.target).pane_id, TRICKY)
    out = pane.workdir / "typed.txt"
    expected = TRICKY + "\n"
    wait_until(
        lambda: out.exists() and out.stat().st_size >= len(expected.encode()),
        timeout=10,
        message="typed text did not all arrive",
    )
    assert out.read_text() == expected


def test_targets_resolve_to_pane_ids_or_fail_with_a_fix(tmux_server, agent_pane) -> None:
    pane = agent_pane("weather/bot")
    adapter = adapters(tmux_server)[0]
    assert adapter.resolve(pane.target).pane_id == pane.pane_id
    assert adapter.resolve(pane.pane_id).pane_id == pane.pane_id
    assert adapter.pane_alive(pane.pane_id)
    with pytest.raises(PaneNotFound) as info:
        adapter.resolve("nowhere:nothing")
    assert "no tmux pane for target 'nowhere:nothing'" in info.value.render()
    pane.kill()
    assert not adapter.pane_alive(pane.pane_id)


def test_a_closed_window_never_resolves_to_another_window_of_its_session(tmux_server, agent_pane) -> None:
    """tmux's `display-message -t` falls back to another pane when the target's window is gone;
    a command for the closed `weather:bot` must not be typed into the person's `weather:logs`."""
    bot, logs = agent_pane("weather/bot"), agent_pane("weather/logs")
    adapter = adapters(tmux_server)[0]
    assert adapter.resolve(bot.target).pane_id == bot.pane_id
    bot.kill()
    with pytest.raises(PaneNotFound):
        adapter.resolve(bot.target)
    assert adapter.resolve(logs.target).pane_id == logs.pane_id
    with pytest.raises(PaneNotFound):
        adapter.resolve(f"{logs.target}.7")  # the window is there, that pane is not
