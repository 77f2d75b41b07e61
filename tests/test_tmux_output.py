"""Pane output copied from the control-mode stream (`tmux_output.OutputCopier` behind
`ControlledTmux.copy_output`), on real tmux servers: byte-exact and in order, no `cat` process,
a switch from or to pipe-pane that loses and doubles nothing, a client or server gone reported
as not copying (and set up again by the shell driver), panes of two sessions and a moved pane."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from orchestrator.adapters.tmux import pipe_command
from orchestrator.adapters.tmux_controlled import ControlledTmux
from orchestrator.drivers.shell import ShellDriver
from pytest_tmuxagent.tmux_server import AgentPane, TmuxTestServer
from pytest_tmuxagent.waiting import wait_until
from tests.test_tmux_controlled import make, tmux

__all__ = ["make"]  # the fixture: a ControlledTmux on the test's server, closed after it


def show(server: TmuxTestServer, pane: str, fmt: str) -> str:
    return tmux(server, "display-message", "-p", "-t", pane, fmt)[0]


def server_children(server: TmuxTestServer) -> set[int]:
    pid = int(tmux(server, "display-message", "-p", "#{pid}")[0])
    return {int(c) for task in Path(f"/proc/{pid}/task").glob("*/children") for c in task.read_text().split()}


def output_clients(server: TmuxTestServer) -> dict[str, int]:
    """Session id → pid of the control client attached with output on (not `no-output`)."""
    rows = tmux(server, "list-clients", "-F", "#{client_pid} #{session_id} #{client_flags}")
    return {
        s: int(pid)
        for pid, s, flags in (r.split(" ", 2) for r in rows)
        if "control-mode" in flags and "no-output" not in flags
    }


def counting(pane: AgentPane, count: int) -> None:
    """The pane prints 1..count in bursts of 40 lines, a short pause after each (a second or two
    in all: long enough to switch under it, fast enough that a switch falls inside a burst)."""
    loop = f"for i in $(seq 1 {count}); do echo n$i; [ $((i % 40)) = 0 ] && sleep 0.01; done"
    pane.type(f"stty -echo; {loop}; stty echo")


COUNTED = re.compile(rb"^(?:\x1b\[[0-9;?]*[a-zA-Z]|\r)*n(\d+)\r?$", re.MULTILINE)  # after bash's own escapes


def counted(log: Path) -> list[int]:
    return [int(n) for n in COUNTED.findall(log.read_bytes())]


def wait_counted(log: Path, at_least: int) -> None:
    wait_until(
        lambda: (c := counted(log)) and c[-1] >= at_least, timeout=20, message=f"{log.name} to reach n{at_least}"
    )


PAYLOAD = (
    "天气预报 — ünïcödé ✓ 🚀\t\\backslash\x7f\n".encode()
    + b"\x1b[1;31mred\x1b[0m \x1b]0;title\x07 \x1b]7701;e;deadbeef-1-1\x07 \x1b[2K\r"
    + b"".join(b"progress %03d\r" % i for i in range(50))
    + b"\n"
    + b"".join(b"line %05d " % i + b"x" * 89 + b"\n" for i in range(1000))  # 100 KB in one burst
    + "末尾\n".encode()
)


def test_bytes_land_in_the_log_exactly_with_no_cat_process(
    make: Callable[..., ControlledTmux],
    agent_pane: Callable[..., AgentPane],
    tmux_server: TmuxTestServer,
    tmp_path: Path,
) -> None:
    pane = agent_pane("out/exact")
    io = make("out:exact")
    log = tmp_path / "pane.log"
    (tmp_path / "payload.bin").write_bytes(PAYLOAD)
    io.copy_output(pane.pane_id, log)
    assert io.copying(pane.pane_id)
    pane.type(f"stty -opost; cat {tmp_path / 'payload.bin'}; stty opost")  # the tty adds no \r before \n
    wait_until(lambda: PAYLOAD in log.read_bytes(), timeout=20, message="the payload, byte-exact, in the log")
    assert show(tmux_server, pane.pane_id, "#{pane_pipe}") == "0"
    shells = {int(p) for p in tmux(tmux_server, "list-panes", "-a", "-F", "#{pane_pid}")}
    assert server_children(tmux_server) == shells  # no pipe-pane `cat`, nothing but the pane shells
    assert list(io.copier.clients().values()) == [True]


def test_a_switch_from_pipe_pane_and_back_loses_and_doubles_nothing(
    make: Callable[..., ControlledTmux],
    agent_pane: Callable[..., AgentPane],
    tmux_server: TmuxTestServer,
    tmp_path: Path,
) -> None:
    pane = agent_pane("out/switch")
    io = make("out:switch")
    log = tmp_path / "pane.log"
    io.fallback.copy_output(pane.pane_id, log)  # pipe-pane, as a run without the stream set it up
    assert io.fallback.copying(pane.pane_id)
    assert not io.copying(pane.pane_id)  # piped, and the stream could take it over
    counting(pane, 4000)
    wait_counted(log, 600)
    io.copy_output(pane.pane_id, log)  # pipe-pane → stream, under way
    assert show(tmux_server, pane.pane_id, "#{pane_pipe}") == "0" and io.copying(pane.pane_id)
    wait_counted(log, 2000)
    assert io.copier.hand_over(pane.pane_id, pipe_command(log))  # stream → pipe-pane, under way
    assert show(tmux_server, pane.pane_id, "#{pane_pipe}") == "1"
    wait_counted(log, 4000)
    seq = counted(log)
    assert sorted(set(seq)) == list(range(1, 4001))  # nothing lost
    # in order, but for what the pane wrote between the pipe→stream cut and the pipe's close
    # (one round trip): that run is in the log twice, once from each
    assert sum(1 for a, b in zip(seq, seq[1:], strict=False) if b != a + 1) <= 1
    assert len(seq) - 4000 <= 200


def test_a_client_gone_is_not_copying_and_the_driver_sets_it_up_again(
    make: Callable[..., ControlledTmux],
    agent_pane: Callable[..., AgentPane],
    tmux_server: TmuxTestServer,
    tmp_path: Path,
) -> None:
    pane = agent_pane("out/again")
    io = make("out:again")
    driver = ShellDriver(io, tmp_path / "run", tmp_path / "state.db")
    try:
        log = driver.pane_log(pane.pane_id).path
        assert io.copying(pane.pane_id)
        (client,) = output_clients(tmux_server).values()
        os.kill(client, 9)
        wait_until(lambda: not io.copying(pane.pane_id), timeout=10, message="the copy reported not copying")
        wait_until(lambda: driver.probe(pane.pane_id).ready, timeout=10, message="the driver to find the pane ready")
        assert io.copying(pane.pane_id) and output_clients(tmux_server)
        assert driver.pane_log(pane.pane_id).path == log
        pane.type("echo after-$((6*7))")
        wait_until(lambda: b"after-42" in log.read_bytes(), timeout=10, message="new output in the same log")
        tmux(tmux_server, "kill-server")
        wait_until(lambda: not io.copying(pane.pane_id), timeout=10, message="a killed server: not copying")
    finally:
        driver.close()


def test_panes_of_two_sessions_and_a_moved_pane_are_copied(
    make: Callable[..., ControlledTmux],
    agent_pane: Callable[..., AgentPane],
    tmux_server: TmuxTestServer,
    tmp_path: Path,
) -> None:
    first, second = agent_pane("alpha/one"), agent_pane("beta/two")
    agent_pane("alpha/spare")  # alpha outlives the move below
    io = make("alpha:one", "beta:two")
    logs = {first.pane_id: tmp_path / "one.log", second.pane_id: tmp_path / "two.log"}
    for pane_id, path in logs.items():
        io.copy_output(pane_id, path)
    assert sorted(io.copier.clients().values()) == [True, True] and len(output_clients(tmux_server)) == 2
    first.type("echo from-$((1+1))-one")
    second.type("echo from-$((2+2))-two")
    wait_until(lambda: b"from-2-one" in logs[first.pane_id].read_bytes(), timeout=10, message="alpha's output")
    wait_until(lambda: b"from-4-two" in logs[second.pane_id].read_bytes(), timeout=10, message="beta's output")
    assert b"from-4-two" not in logs[first.pane_id].read_bytes()

    tmux(tmux_server, "move-window", "-s", first.pane_id, "-t", "beta:")
    wait_until(lambda: not io.copying(first.pane_id), timeout=10, message="the moved pane reported not copying")
    io.copy_output(first.pane_id, logs[first.pane_id])
    assert io.copying(first.pane_id)
    first.type("echo moved-$((3+3))")
    wait_until(lambda: b"moved-6" in logs[first.pane_id].read_bytes(), timeout=10, message="the moved pane's output")
    assert b"moved-6" not in logs[second.pane_id].read_bytes()
    wait_until(lambda: len(output_clients(tmux_server)) == 1, timeout=10, message="one output client, on beta")
    first.kill()  # a copy of a pane gone is dropped at the next set-up (its log closed)
    wait_until(lambda: not io.copying(first.pane_id), timeout=10, message="the killed pane reported not copying")
    io.copy_output(second.pane_id, logs[second.pane_id])
    assert not io.copier.routed(first.pane_id) and io.copier.routed(second.pane_id)


def test_control_mode_off_copies_by_pipe_pane(
    make: Callable[..., ControlledTmux],
    agent_pane: Callable[..., AgentPane],
    tmux_server: TmuxTestServer,
    tmp_path: Path,
) -> None:
    pane = agent_pane("out/off")
    io = make("out:off", enabled=False)
    log = tmp_path / "pane.log"
    io.copy_output(pane.pane_id, log)
    assert show(tmux_server, pane.pane_id, "#{pane_pipe}") == "1" and io.copying(pane.pane_id)
    assert not io.copier.clients() and not output_clients(tmux_server)
    pane.type("echo piped-$((5*5))")
    wait_until(lambda: b"piped-25" in log.read_bytes(), timeout=10, message="the output through pipe-pane")


def test_by_default_the_copy_is_a_pipe_that_outlives_the_orchestrator(
    make: Callable[..., ControlledTmux],
    agent_pane: Callable[..., AgentPane],
    tmux_server: TmuxTestServer,
    tmp_path: Path,
) -> None:
    """`tmux.output_stream` is off by default: the pane is piped (the pipe belongs to the tmux
    server), so what a command prints while the orchestrator is down still reaches the log."""
    pane = agent_pane("out/default")
    io = make("out:default", stream_output=False)
    log = tmp_path / "pane.log"
    io.copy_output(pane.pane_id, log)
    assert io.copying(pane.pane_id)
    assert show(tmux_server, pane.pane_id, "#{pane_pipe}") == "1" and not io.copier.clients()
    io.close()  # the orchestrator gone
    pane.type("echo printed-while-down")
    wait_until(lambda: b"printed-while-down" in log.read_bytes(), timeout=10, message="the pipe keeps copying")
