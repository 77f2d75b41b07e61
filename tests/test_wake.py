"""The queue's doorbell: a ring after a commit wakes the engine's loop at once (not at its next
poll); a ring nobody hears is silently nothing; the loop still finds work nobody rang for."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.events import HeartbeatTick
from orchestrator.state.store import StateStore
from orchestrator.state.wake import WAKE, Doorbell, doorbell_path, ring
from pytest_tmuxagent.waiting import wait_until

from .engine_fakes import settings
from .engine_rig import Rig, make_rig

S = "weather/bot"
LONG_POLL = 30.0  # far beyond every deadline below: only a ring can make the loop act in time


@pytest.fixture
def doorbell(tmp_path: Path) -> Iterator[tuple[Doorbell, queue.Queue[int]]]:
    signals: queue.Queue[int] = queue.Queue()
    bell = Doorbell(tmp_path / "state.db", signals)
    assert bell.open()
    yield bell, signals
    bell.close()


def test_a_ring_puts_one_wake_on_the_loops_queue(tmp_path: Path, doorbell: tuple[Doorbell, queue.Queue[int]]) -> None:
    bell, signals = doorbell
    assert bell.path == tmp_path / "state.db-wake" == doorbell_path(tmp_path / "state.db")
    assert ring(tmp_path / "state.db") is True
    assert signals.get(timeout=5) == WAKE


def test_a_burst_of_rings_wakes_at_least_once_and_never_blocks_the_ringer(
    tmp_path: Path, doorbell: tuple[Doorbell, queue.Queue[int]]
) -> None:
    _, signals = doorbell
    rung = [ring(tmp_path / "state.db") for _ in range(2000)]  # more than a socket buffer holds
    assert rung.count(True) >= 1  # a full buffer refuses the rest at once (a wake is pending)
    assert signals.get(timeout=5) == WAKE
    assert 1 + signals.qsize() <= rung.count(True)  # never more wakes than rings, often fewer


def test_a_ring_nobody_hears_is_silently_nothing(tmp_path: Path) -> None:
    assert ring(tmp_path / "state.db") is False  # no socket at all
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(doorbell_path(tmp_path / "state.db")))
    stale.close()  # a killed orchestrator's file: nobody behind it
    assert ring(tmp_path / "state.db") is False
    assert ring(tmp_path / "no" / "such" / "folder" / "state.db") is False


def test_a_path_longer_than_a_socket_name_still_rings(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    assert len(os.fsencode(doorbell_path(deep / "state.db"))) > 108
    signals: queue.Queue[int] = queue.Queue()
    bell = Doorbell(deep / "state.db", signals)
    assert bell.open()
    try:
        assert ring(deep / "state.db") is True
        assert signals.get(timeout=5) == WAKE
    finally:
        bell.close()


def test_a_killed_orchestrators_socket_is_replaced_and_close_removes_only_its_own(tmp_path: Path) -> None:
    path = doorbell_path(tmp_path / "state.db")
    left = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    left.bind(str(path))
    left.close()
    signals: queue.Queue[int] = queue.Queue()
    first = Doorbell(tmp_path / "state.db", signals)
    assert first.open() and ring(tmp_path / "state.db")
    assert signals.get(timeout=5) == WAKE
    second = Doorbell(tmp_path / "state.db", signals)  # the file is now someone else's
    assert second.open()
    first.close()
    assert path.exists() and ring(tmp_path / "state.db")
    second.close()
    assert not path.exists()


def test_a_folder_that_cannot_hold_the_socket_leaves_the_loop_polling(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    bell = Doorbell(tmp_path / "file" / "state.db", queue.Queue())
    assert bell.open() is False
    bell.close()  # nothing to close: no error


# the engine's loop -------------------------------------------------------------------------------
def running_loop(tmp_path: Path) -> tuple[Rig, threading.Thread, list[HeartbeatTick]]:
    """The engine's real loop on its own thread; one HeartbeatTick per round it has finished."""
    rig = make_rig(tmp_path, cfg=settings(poll_interval_seconds=LONG_POLL))
    ticks: list[HeartbeatTick] = []
    rig.sup.bus.subscribe(HeartbeatTick, ticks.append)
    loop = threading.Thread(target=rig.sup.run, daemon=True)
    loop.start()
    rounds(ticks, 1)  # the first round is done: the loop now waits up to LONG_POLL
    return rig, loop, ticks


def rounds(ticks: list[HeartbeatTick], count: int) -> None:
    wait_until(lambda: len(ticks) >= count or None, timeout=5, message=f"{count} round(s) of the loop")


def stop(rig: Rig, loop: threading.Thread) -> None:
    rig.sup.stop()
    ring(rig.store.path)  # ends the wait at once
    loop.join(timeout=5)
    assert not loop.is_alive()
    assert not rig.sup.doorbell.path.exists()  # the loop's exit closes the doorbell


def test_a_ring_dispatches_at_once_and_an_unrung_command_waits_for_the_poll(tmp_path: Path) -> None:
    rig, loop, ticks = running_loop(tmp_path)
    try:
        other = StateStore(rig.store.path)  # another process's connection
        first = other.enqueue(S, "make test")
        assert ring(other.path)
        rounds(ticks, 2)
        assert rig.driver.delivered == [(first, "%0")]
        rig.driver.end(first, 0)  # its end signal wakes the loop for one more round
        rounds(ticks, 3)
        assert rig.status(first) == "succeeded"

        second = other.enqueue(S, "make lint")  # nobody rings: it waits for the 30 s poll
        with pytest.raises(AssertionError):
            wait_until(lambda: len(rig.driver.delivered) > 1 or None, timeout=0.5)
        assert rig.status(second) == "queued" and len(ticks) == 3
        ring(other.path)
        rounds(ticks, 4)
        assert rig.driver.delivered[1:] == [(second, "%0")]
        other.close()
    finally:
        stop(rig, loop)


def test_tmux_agent_send_rings_after_its_commit(tmp_path: Path, doorbell: tuple[Doorbell, queue.Queue[int]]) -> None:
    _, signals = doorbell
    config = tmp_path / "agent-config.yaml"
    config.write_text(
        "tmux: {socket_name: tmuxagent-wake-test-none}\nstate_db: state.db\nlog_dir: logs\n"
        "sessions:\n  - {name: weather/bot, target: 'weather:bot', workdir: .}\n"
    )
    orch = tmp_path / "orchestrator.toml"
    orch.write_text(f'env_file = "{tmp_path / ".env"}"\n')
    cli = Path(sys.executable).with_name("tmux-agent")
    argv = [str(cli), "send", "--config", str(config), "--orchestrator-config", str(orch), "--no-check", S]
    done = subprocess.run([*argv, "--", "true"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert signals.get(timeout=5) == WAKE
    store = StateStore(tmp_path / "state.db")
    assert [r.command for r in store.queued(S)] == ["true"]  # committed before the ring
    store.close()
