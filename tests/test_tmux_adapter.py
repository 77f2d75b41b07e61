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
