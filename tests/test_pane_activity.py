"""The blocker scan's cheap look: one `list-panes -a` tells which panes wrote anything since the
last look (tmux's per-window activity stamp), so a quiet pane is never captured again."""

from __future__ import annotations

from orchestrator.adapters.panes import PaneDirectory
from orchestrator.adapters.tmux import TmuxAdapter
from orchestrator.config import SessionConfig, TmuxConfig
from pytest_tmuxagent.waiting import wait_until


def directory(tmux_server, *panes) -> PaneDirectory:
    adapter = TmuxAdapter(TmuxConfig(socket_name=tmux_server.socket_name))
    sessions = [SessionConfig(name=p.name, target=p.target, workdir=p.workdir) for p in panes]
    found = PaneDirectory(adapter, sessions)
    for pane in panes:
        assert found.pane_id(pane.name) is not None
    return found


def test_a_quiet_pane_is_not_looked_at_again_and_a_written_one_is(tmux_server, agent_pane) -> None:
    quiet, busy = agent_pane("fleet/quiet"), agent_pane("fleet/busy")
    for pane in (quiet, busy):
        pane.wait_prompt()
    panes = directory(tmux_server, quiet, busy)
    assert panes.drew_since_last_look(quiet.name)  # the first look: nothing known yet
    assert panes.drew_since_last_look(busy.name)
    # once a whole second has passed since their last output, neither wrote anything
    wait_until(lambda: not panes.drew_since_last_look(quiet.name), timeout=5, message="the quiet pane stays quiet")
    wait_until(lambda: not panes.drew_since_last_look(busy.name), timeout=5, message="the busy pane is quiet too")
    busy.type("echo written-now")
    wait_until(lambda: panes.drew_since_last_look(busy.name), timeout=5, message="the written pane is seen")
    assert not panes.drew_since_last_look(quiet.name)


def test_an_unknown_pane_always_counts_as_drawn(tmux_server, agent_pane) -> None:
    pane = agent_pane("fleet/gone")
    panes = directory(tmux_server, pane)
    pane.kill()
    panes.forget(pane.name)
    assert panes.drew_since_last_look(pane.name)  # nothing known: the capture decides (None)
