"""The supervisor in-process (the rig: `engine_rig`): a queued command delivered and its exact
result recorded once, FIFO per session, sessions independent, a pane that is missing or closes,
gates, and how often the loop looks (soon after an end, seldom when settled, at once on a ring).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.events import (
    CommandDispatched,
    CommandFinished,
    DispatchFailed,
)
from orchestrator.state.store import StateStore

from .engine_fakes import session, settings
from .engine_rig import S, make_rig


def test_a_queued_command_is_delivered_and_its_exit_recorded_once(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    cid = rig.send("make test")
    rig.sup.step()
    assert rig.driver.delivered == [(cid, "%0")] and rig.status(cid) == "running"

    rig.driver.emit(cid, "ok")
    rig.driver.end(cid, 0, duration=0.25)
    rig.driver.completions.put(cid)  # a second signal for the same end changes nothing
    rig.sup.step()
    rig.sup.step()

    row = rig.store.command(cid)
    assert row is not None and (row.status, row.exit_code, row.output_tail) == ("succeeded", 0, "ok")
    assert row.duration_s == pytest.approx(0.25)
    last = rig.store.metadata(S)["last_command_result"]
    assert (last["command_id"], last["status"], last["exit_code"]) == (cid, "succeeded", 0)
    assert len(rig.log.of(CommandFinished)) == 1
    assert rig.audit().count("command_result") == 1
    assert rig.metrics.commands.labels(session=S, result="succeeded")._value.get() == 1


def test_non_zero_exit_is_failed_with_its_code(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    cid = rig.send("(exit 7)")
    rig.sup.step()
    rig.driver.end(cid, 7)
    rig.sup.step()
    row = rig.store.command(cid)
    assert row is not None and (row.status, row.exit_code) == ("failed", 7)


def test_one_command_at_a_time_in_fifo_order(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    first, second = rig.send("one"), rig.send("two")
    rig.sup.step()
    rig.sup.step()
    assert [cid for cid, _ in rig.driver.delivered] == [first]
    rig.driver.end(first, 0)
    rig.sup.step()
    assert [cid for cid, _ in rig.driver.delivered] == [first, second]
    depths = [e.queue_depth for e in rig.log.of(CommandDispatched)]  # type: ignore[attr-defined]
    assert depths == [1, 0]


def test_sessions_are_dispatched_independently(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, [session(), session("weather/api", "weather:api")])
    a, b = rig.send("a"), rig.send("b", "weather/api")
    rig.sup.step()
    assert sorted(rig.driver.delivered) == sorted([(a, "%0"), (b, "%1")])


def test_a_pane_closed_mid_command_ends_it_cancelled(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    cid = rig.send("sleep 60")
    rig.sup.step()
    rig.panes.alive.clear()
    rig.advance(1.5)
    row = rig.store.command(cid)
    assert row is not None and (row.status, row.exit_code) == ("cancelled", None)


def test_a_missing_pane_keeps_the_command_queued_and_says_so_once(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.panes.alive.clear()
    rig.sup.locator.forget(S)
    cid = rig.send("echo hi")
    for _ in range(3):
        rig.sup.step()
    assert rig.status(cid) == "queued"
    firsts = [e.first for e in rig.log.of(DispatchFailed)]  # type: ignore[attr-defined]
    assert firsts == [True, False, False]
    assert rig.audit().count("dispatch_failed") == 1


def test_a_failed_send_keeps_the_command_queued_and_looks_the_target_up_again(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.panes.fail_sends = 1
    rig.panes.targets["weather:bot"] = "%0"
    cid = rig.send("echo hi")
    rig.sup.step()
    assert rig.status(cid) == "queued" and rig.driver.forgotten == ["%0"]
    rig.sup.step()
    assert rig.status(cid) == "running" and rig.driver.delivered == [(cid, "%0")]
    assert rig.store.command(cid).attempts == 2  # type: ignore[union-attr]


def test_gates_and_idle_have_no_side_effects(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, cfg=settings(stall_retries_before_notify=0))
    rig.send("sleep 600")
    rig.sup.step()
    rig.advance(10.5)
    rig.advance(1.0)  # a cooldown is running now
    rig.send("echo later")
    before = (rig.store.metadata(S), rig.audit())
    rig.clock.advance(100)  # the cooldown is over, but only tick() may record that
    for _ in range(3):
        assert rig.sup.may_dispatch(S)
        assert not rig.sup.idle()
    assert (rig.store.metadata(S), rig.audit()) == before


def test_once_mode_is_idle_when_the_queues_are_drained(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    cid = rig.send("true")
    assert not rig.sup.idle()
    rig.sup.step()
    assert not rig.sup.idle()
    rig.driver.end(cid, 0)
    rig.sup.step()
    assert rig.sup.idle()


def test_a_pane_ready_in_a_moment_is_looked_at_again_soon_then_less_often(tmp_path: Path) -> None:
    """A probe that says "ready in a moment" (a prompt being drawn) makes the loop look again
    after half a millisecond, then 1, 2 and 3 ms while it still is not ready; a round with
    nothing soon goes back to the poll interval, and the next "soon" starts close again."""
    from orchestrator.engine.supervisor import SOON_SECONDS
    from orchestrator.model import Readiness

    rig = make_rig(tmp_path)
    rig.send("echo queued")
    rig.driver.readiness = Readiness(False, "idle", "the shell is busy drawing its prompt", soon=True)
    waits = []
    for _ in range(5):
        rig.sup.step()
        waits.append(rig.sup._next_wait())
    assert waits == [*SOON_SECONDS, SOON_SECONDS[-1]] == [0.0005, 0.001, 0.002, 0.003, 0.003]
    rig.driver.readiness = Readiness(False, "idle", "the command line holds typed text")
    rig.sup.step()
    assert rig.sup._next_wait() == rig.sup.settings.poll_interval_seconds
    rig.driver.readiness = Readiness(False, "idle", "the shell is busy drawing its prompt", soon=True)
    rig.sup.step()
    assert rig.sup._next_wait() == SOON_SECONDS[0]


def test_a_fleet_of_settled_shell_commands_is_looked_at_twice_a_second_and_ends_at_once(tmp_path: Path) -> None:
    """While every running command is a started shell command waiting on nothing but its end
    (past its first seconds), the loop waits up to IDLE_WAIT_SECONDS between rounds instead of the
    poll interval: the end is its own signal (the completion queue), a `send` rings. Something
    queued, or a question the command asks, brings the poll interval back."""
    from orchestrator.engine.supervisor import IDLE_WAIT_SECONDS
    from orchestrator.engine.watch import NEVER_STARTED_GRACE_SECONDS

    rig = make_rig(tmp_path, sessions=[session(S), session("b/two")])
    poll = rig.sup.settings.poll_interval_seconds
    first = rig.send("sleep 3600")
    rig.sup.step()
    assert rig.status(first) == "running" and rig.sup._next_wait() == poll  # in its first seconds
    rig.advance(NEVER_STARTED_GRACE_SECONDS + 0.1)
    settled = min(IDLE_WAIT_SECONDS, rig.sup.settings.idle_probe_seconds)
    assert settled > poll and rig.sup._next_wait() == settled
    queued = rig.send("echo next", name="b/two")
    rig.sup.step()  # b/two's command is typed now: in its first seconds again
    assert rig.status(queued) == "running" and rig.sup._next_wait() == poll
    rig.advance(NEVER_STARTED_GRACE_SECONDS + 0.1)
    assert rig.sup._next_wait() == settled
    running = rig.sup.sessions[S].running
    assert running is not None
    running.waiting_since = rig.clock.monotonic()  # the command asks a question
    rig.sup.step()
    assert rig.sup._next_wait() == poll


def test_a_queued_command_is_typed_before_the_rounds_fleet_wide_looks(tmp_path: Path) -> None:
    """The round dispatches what is queued before the work that never decides whether a command
    may go (the streak gauges, decision assist, which re-reads every session after any commit):
    a `send` into a large fleet is typed without waiting for those looks."""
    seen: list[list[int]] = []

    class Look:
        def tick(self) -> None:
            seen.append([command_id for command_id, _ in rig.driver.delivered])

    rig = make_rig(tmp_path, late_tickers=(Look(),))
    command_id = rig.send("echo hi")
    rig.sup.step()
    assert seen == [[command_id]]


def test_a_ring_that_lands_during_a_round_gets_a_round_of_its_own(tmp_path: Path) -> None:
    """A `send` from another process commits and rings while a round is under way, after the
    round read the queue: the round drains the ring (it drains the signal queue between sessions
    so a result never waits) but cannot see the command. The loop must go round again at once,
    not sleep the quiet wait (it did: half a second for that send)."""
    from orchestrator.model import Readiness
    from orchestrator.state.wake import WAKE

    rig = make_rig(tmp_path, sessions=[session(S), session("b/two", "b:two")])
    rig.advance(5.0)
    other = StateStore(rig.store.path)  # the CLI's own connection
    queued: list[int] = []
    probe = rig.driver.probe

    def probe_then_send(pane_id: str, *, dispatch: bool = True) -> Readiness:
        if not queued:  # the first idle probe of the round: the send lands now
            queued.append(other.enqueue(S, "echo late"))
            rig.driver.completions.put(WAKE)
        return probe(pane_id, dispatch=dispatch)

    rig.driver.probe = probe_then_send  # type: ignore[method-assign]
    rig.clock.advance(rig.sup.settings.idle_probe_seconds)  # a beat: the round probes the idle panes
    rig.sup.step()
    assert queued and rig.status(queued[0]) == "queued"  # this round read the queue before the send
    assert rig.sup._next_wait() == 0.0
    rig.sup.step()
    assert rig.status(queued[0]) == "running"
