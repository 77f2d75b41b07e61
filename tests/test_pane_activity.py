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


class CountingAdapter(TmuxAdapter):
    """The real adapter, counting its `list-panes -a` calls and its single-pane rows."""

    lists = 0
    rows = 0

    def all_pane_info(self):  # type: ignore[no-untyped-def]
        self.lists += 1
        return super().all_pane_info()

    def pane_info(self, pane_id):  # type: ignore[no-untyped-def]
        self.rows += 1
        return super().pane_info(pane_id)


def test_the_fleets_idle_probes_and_activity_looks_share_one_list_panes(tmux_server, agent_pane, tmp_path) -> None:
    """At a beat every idle pane is probed and looked at for activity: one `list-panes -a` serves
    them all (the shell driver and the directory share the process's pane table), while a probe
    before typing still asks tmux for a row at most milliseconds old: its pane's alone, or the
    whole table again when several panes are typed into at once."""
    from orchestrator.adapters.pane_table import SINGLE_ROWS_BEFORE_TABLE, PaneTable
    from orchestrator.clock import ManualClock
    from orchestrator.drivers.shell import SNAPSHOT_SECONDS, ShellDriver

    panes = [agent_pane(f"fleet/p{i}") for i in range(6)]
    for pane in panes:
        pane.wait_prompt()
    adapter, clock = CountingAdapter(TmuxConfig(socket_name=tmux_server.socket_name)), ManualClock()
    table = PaneTable(adapter, monotonic=clock.monotonic)
    found = PaneDirectory(
        adapter, [SessionConfig(name=p.name, target=p.target, workdir=p.workdir) for p in panes], table
    )
    ids = [str(found.pane_id(p.name)) for p in panes]
    driver = ShellDriver(adapter, tmp_path / "run", tmp_path / "state.db", table=table)
    states = [driver.probe(pane_id, dispatch=False).state for pane_id in ids]
    looks = [found.drew_since_last_look(p.name) for p in panes]
    assert (states, looks, adapter.lists) == (["idle"] * 6, [True] * 6, 1)
    clock.advance(SNAPSHOT_SECONDS * 2)
    driver.probe(ids[0], dispatch=False)
    assert adapter.lists == 1  # an idle pane's state may be half a second old
    driver.probe(ids[0], dispatch=True)
    assert (adapter.lists, adapter.rows) == (1, 1)  # the probe before typing asked for its pane alone
    driver.probe(ids[0], dispatch=True)
    assert (adapter.lists, adapter.rows) == (1, 1)  # … and that row serves for milliseconds
    for pane_id in ids[1:]:  # five panes typed into at once: after four single rows, one table
        driver.probe(pane_id, dispatch=True)
    assert (adapter.lists, adapter.rows) == (2, SINGLE_ROWS_BEFORE_TABLE)
    clock.advance(SNAPSHOT_SECONDS * 2)
    driver.probe(ids[0], dispatch=True)
    assert (adapter.lists, adapter.rows) == (2, SINGLE_ROWS_BEFORE_TABLE + 1)


class PaneInfoCountingAdapter(TmuxAdapter):
    """The real adapter, counting the single-pane rows it is asked for (`display-message`)."""

    asked = 0

    def pane_info(self, pane_id):  # type: ignore[no-untyped-def]
        self.asked += 1
        return super().pane_info(pane_id)


def test_a_piped_panes_dispatch_reads_its_pipe_from_the_rows_it_holds(tmux_server, agent_pane, tmp_path) -> None:
    """Whether a pane's output is still copied (`#{pane_pipe}`) is in the row the probe already
    read: neither the probe before typing nor the delivery asks tmux for that pane again (it was
    a `display-message` each, two round trips per command). The pane table's clock stands
    still here, so its first row serves every probe: any further ask is the pipe check's. A pipe
    closed under the driver is still noticed, at the next fresh row, and set up again."""
    from orchestrator.adapters.pane_table import PaneTable
    from orchestrator.clock import ManualClock
    from orchestrator.drivers.shell import SNAPSHOT_SECONDS, ShellDriver
    from orchestrator.model import CommandRow

    pane = agent_pane("fleet/piped")
    pane.wait_prompt()
    adapter, clock = PaneInfoCountingAdapter(TmuxConfig(socket_name=tmux_server.socket_name)), ManualClock()
    driver = ShellDriver(adapter, tmp_path / "run", tmp_path / "state.db", table=PaneTable(adapter, clock.monotonic))
    try:
        assert not adapter.copying(pane.pane_id)
        assert driver.probe(pane.pane_id, dispatch=False).state == "idle"
        assert adapter.copying(pane.pane_id)  # an idle pane is copied from its first look: not at its first send
        asked = adapter.asked
        for n in (1, 2):
            command = CommandRow(
                n, pane.name, f"echo piped-{n}", "running", "test", "", None, None, None, None, None, 1, None
            )
            driver.deliver(command, pane.pane_id)
            wait_until(lambda c=n: driver.end_record(c), timeout=15, message=f"#{n} ends")
            driver.discard(n)
            driver.probe(pane.pane_id)
        assert adapter.asked == asked
        adapter.pipe_pane(pane.pane_id, "")  # someone closes the pipe
        assert not adapter.copying(pane.pane_id)

        def piped_again() -> bool:
            clock.advance(SNAPSHOT_SECONDS * 2)  # a fresh row shows the pipe closed
            return driver.probe(pane.pane_id).ready and adapter.copying(pane.pane_id)

        wait_until(piped_again, timeout=15, message="the closed pipe is set up again")
    finally:
        driver.close()


def test_idle_panes_are_copied_ahead_of_their_first_command_a_few_a_second(tmux_server, agent_pane, tmp_path) -> None:
    """An idle pane's output copy is set up at a look, so its first command does not wait for
    `pipe-pane` — but at most IDLE_COPY_SETUPS_PER_SECOND a second, so the first round over a
    fleet of new panes does not hold a `send` behind a hundred of them. The rest follow."""
    from orchestrator.adapters.pane_table import PaneTable
    from orchestrator.clock import ManualClock
    from orchestrator.drivers.shell import IDLE_COPY_SETUPS_PER_SECOND, ShellDriver

    panes = [agent_pane(f"fleet/new{i}") for i in range(IDLE_COPY_SETUPS_PER_SECOND + 3)]
    for pane in panes:
        pane.wait_prompt()
    adapter, clock = TmuxAdapter(TmuxConfig(socket_name=tmux_server.socket_name)), ManualClock()
    driver = ShellDriver(adapter, tmp_path / "run", tmp_path / "state.db", table=PaneTable(adapter, clock.monotonic))
    try:
        assert {driver.probe(p.pane_id, dispatch=False).state for p in panes} == {"idle"}
        assert sum(adapter.copying(p.pane_id) for p in panes) == IDLE_COPY_SETUPS_PER_SECOND
        clock.advance(1.0)
        assert {driver.probe(p.pane_id, dispatch=False).state for p in panes} == {"idle"}
        assert all(adapter.copying(p.pane_id) for p in panes)
    finally:
        driver.close()
