"""The `PaneIO` port over one tmux control-mode connection (`ControlledTmux`), on real tmux
servers: every call answers as the subprocess adapter (`TmuxAdapter`) does, no call starts a
process, the client sits on an existing session (no session of its own), and a killed server,
a new server or a killed session are met by falling back to subprocesses and attaching again."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.adapters.tmux import TmuxAdapter
from orchestrator.adapters.tmux_controlled import ControlledTmux, session_of
from orchestrator.config import TmuxConfig, load_config
from orchestrator.errors import ConfigError, PaneNotFound, TmuxUnavailable
from orchestrator.ports import PaneIO
from pytest_tmuxagent.tmux_server import AgentPane, TmuxTestServer
from pytest_tmuxagent.waiting import wait_until

TRICKY = "\n".join(
    [
        "echo \"double\" 'single' `backtick` $HOME ${PATH} \\backslash ; && || | > < #{pane_id}",
        "天气预报 — ünïcödé ✓ 🚀\ttab",
        "x" * 5000,
        "last line",
    ]
)

_STARTED = [0]
_HOOKED = [False]


def _count_starts(event: str, args: tuple[object, ...]) -> None:
    if event == "subprocess.Popen":
        _STARTED[0] += 1


@pytest.fixture(scope="session")
def started() -> Callable[[], int]:
    """How many processes this test process has started: Python's own `subprocess.Popen` audit
    event (raised by the standard library for libtmux's calls too; nothing is wrapped)."""
    if not _HOOKED[0]:
        sys.addaudithook(_count_starts)
        _HOOKED[0] = True
    return lambda: _STARTED[0]


def children() -> set[int]:
    """This process's child processes, from every thread's /proc children list."""
    return {int(pid) for task in Path("/proc/self/task").glob("*/children") for pid in task.read_text().split()}


def control_clients(pids: set[int]) -> set[int]:
    """Those of `pids` that are `tmux … -C` clients."""
    found = set()
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"tmux") and b"-C" in argv:
            found.add(pid)
    return found


def tmux(server: TmuxTestServer, *args: str) -> list[str]:
    out = subprocess.run(["tmux", "-L", server.socket_name, *args], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()


def clients(server: TmuxTestServer) -> list[str]:
    return tmux(server, "list-clients", "-F", "#{client_session} #{client_control_mode} #{client_flags}")


@pytest.fixture
def make(tmux_server: TmuxTestServer) -> Iterator[Callable[..., ControlledTmux]]:
    made: list[ControlledTmux] = []

    def build(*targets: str, enabled: bool = True, stream_output: bool = True) -> ControlledTmux:
        config = TmuxConfig(socket_name=tmux_server.socket_name)
        adapter = ControlledTmux(TmuxAdapter(config), targets, enabled=enabled, stream_output=stream_output)
        made.append(adapter)
        return adapter

    yield build
    for adapter in made:
        adapter.close()


def outcome(call: Callable[[], object]) -> object:
    """A call's value, or its exception as (type, message) so two adapters' failures compare."""
    try:
        return call()
    except (TmuxUnavailable, PaneNotFound) as exc:
        return (type(exc).__name__, str(exc))


def every_read_and_failure(io: PaneIO, pane: AgentPane, logs: AgentPane) -> dict[str, object]:
    """What one adapter answers for each PaneIO call (writes only where they fail: a missing pane)."""
    info = io.pane_info(pane.pane_id)
    row = info.cursor_y if info is not None else 0
    return {
        "resolve target": io.resolve(pane.target),
        "resolve id": io.resolve(pane.pane_id),
        "resolve missing": outcome(lambda: io.resolve("nowhere:nothing")),
        "resolve missing pane": outcome(lambda: io.resolve(f"{logs.target}.7")),
        "alive": io.pane_alive(pane.pane_id),
        "alive missing": io.pane_alive("%99"),
        "capture": io.capture(pane.pane_id),
        "capture 2": io.capture(pane.pane_id, 2),
        "capture missing": outcome(lambda: io.capture("%99")),
        "pane_info": info,
        "pane_info missing": io.pane_info("%99"),
        "all_pane_info": io.all_pane_info(),
        "screen_line cursor": io.screen_line(pane.pane_id, row),
        "screen_line 0": io.screen_line(pane.pane_id, 0),
        "screen_line missing": outcome(lambda: io.screen_line("%99", 0)),
        "socket_path": io.socket_path(),
        "server_identity": io.server_identity(),
        "send_text missing": outcome(lambda: io.send_text("%99", "x")),
        "paste_text missing": outcome(lambda: io.paste_text("%99", "x")),
        "send_keys missing": outcome(lambda: io.send_keys("%99", "Enter")),
        "pipe_pane missing": outcome(lambda: io.pipe_pane("%99", "cat")),
        "copy_output missing": outcome(lambda: io.copy_output("%99", pane.workdir / "missing.log")),
        "copying missing": io.copying("%99"),
        "copying uncopied": io.copying(pane.pane_id),
    }


def test_every_call_answers_as_the_subprocess_adapter_does_without_starting_a_process(
    tmux_server, agent_pane, make, started
) -> None:
    bot, logs = agent_pane("weather/bot"), agent_pane("weather/logs")
    agent_pane("news/feed")
    bot.type("printf 'parity %s\\n\\n  spaced  \\n' $((6*7))")
    wait_until(lambda: "  spaced" in "\n".join(bot.capture()), timeout=10, message="the printf output")
    bot.wait_prompt()
    plain, controlled = TmuxAdapter(TmuxConfig(socket_name=tmux_server.socket_name)), make(bot.target)
    assert controlled.server_identity() is not None and controlled.connected  # attached (2 processes)
    expected = every_read_and_failure(plain, bot, logs)
    before = started()
    got = every_read_and_failure(controlled, bot, logs)
    assert started() == before, "a call over the connection started a process"
    assert got == expected
    assert expected["pane_info missing"] is None and expected["alive"] is True  # the calls did real work
    assert "can't find pane: %99" in str(expected["send_keys missing"])


@pytest.mark.parametrize("kind", ["subprocess", "control"])
@pytest.mark.parametrize("how", ["send_text", "paste_text"])
def test_text_arrives_literally(how, kind, tmux_server, agent_pane, make) -> None:
    pane = agent_pane("weather/bot")
    io: PaneIO = (
        make(pane.target) if kind == "control" else TmuxAdapter(TmuxConfig(socket_name=tmux_server.socket_name))
    )
    pane.type("stty -icanon -echo; cat > typed.txt")
    wait_until(lambda: io.all_pane_info()[pane.pane_id].current_command == "cat", timeout=10, message="cat runs")
    getattr(io, how)(pane.pane_id, TRICKY)
    out, expected = pane.workdir / "typed.txt", (TRICKY + "\n").encode()
    wait_until(lambda: out.stat().st_size >= len(expected), timeout=10, message="all the text in typed.txt")
    assert out.read_bytes() == expected
    assert kind == "subprocess" or isinstance(io, ControlledTmux) and io.connected


def test_two_hundred_sends_start_no_process(tmux_server, agent_pane, make, started) -> None:
    pane = agent_pane("weather/bot")
    controlled = make(pane.target)
    pane.type("stty -icanon -echo; cat > sent.txt")
    wait_until(lambda: controlled.all_pane_info()[pane.pane_id].current_command == "cat", timeout=10, message="cat")
    assert controlled.connected
    kids, before = children(), started()
    for i in range(200):
        controlled.send_text(pane.pane_id, f"line {i}")
    assert started() == before
    assert children() == kids and len(control_clients(kids)) == 1  # the one control client, the same process
    sent = pane.workdir / "sent.txt"
    wait_until(lambda: sent.read_text().count("\n") == 200, timeout=10, message="200 lines in sent.txt")
    # the count sees a subprocess adapter's calls: one process each
    plain = TmuxAdapter(TmuxConfig(socket_name=tmux_server.socket_name))
    before = started()
    for i in range(3):
        plain.send_text(pane.pane_id, f"plain {i}")
    assert started() == before + 3


def test_it_attaches_to_the_first_target_session_and_adds_none(tmux_server, agent_pane, make) -> None:
    weather, news = agent_pane("weather/bot"), agent_pane("news/feed")
    sessions = sorted(tmux(tmux_server, "list-sessions", "-F", "#{session_name}"))
    controlled = make("%77", "gone:x", news.target, weather.target)
    assert controlled.preferred == ("gone", "news", "weather")
    assert controlled.resolve(weather.target).pane_id == weather.pane_id
    assert controlled.session == "news"
    assert sorted(tmux(tmux_server, "list-sessions", "-F", "#{session_name}")) == sessions == ["news", "weather"]
    [client] = clients(tmux_server)
    name, control, flags = client.split(" ")
    assert (name, control) == ("news", "1")
    assert {"ignore-size", "no-output"} <= set(flags.split(","))
    other = make("gone:x")
    assert other.pane_alive(news.pane_id) and other.session in {"news", "weather"}  # any session listed


def test_a_killed_server_falls_back_then_a_new_server_is_a_new_identity(tmux_server, agent_pane, make) -> None:
    pane = agent_pane("weather/bot")
    controlled = make(pane.target)
    first = controlled.server_identity()
    assert first is not None and controlled.connected
    tmux_server.kill()
    wait_until(lambda: not controlled.connected, timeout=10, message="the connection to see the server go")
    began = time.monotonic()
    assert controlled.server_identity() is None
    assert controlled.all_pane_info() == {}
    assert not controlled.pane_alive(pane.pane_id)
    with pytest.raises(TmuxUnavailable):
        controlled.send_text(pane.pane_id, "echo lost")
    with pytest.raises(PaneNotFound, match="no tmux pane for target 'weather:bot'"):
        controlled.resolve(pane.target)
    assert time.monotonic() - began < 2, "no call waits for a server that is gone"
    again = agent_pane("weather/bot")  # a new server on the same socket
    plain = TmuxAdapter(TmuxConfig(socket_name=tmux_server.socket_name))
    wait_until(lambda: controlled.server_identity() != first and controlled.connected, timeout=5, message="attach")
    assert controlled.server_identity() == plain.server_identity() != first
    assert controlled.resolve(again.target).pane_id == again.pane_id
    controlled.send_text(again.pane_id, "echo back-$((6*7))")
    wait_until(lambda: "back-42" in "\n".join(again.capture()), timeout=10, message="the command on the new server")


def test_a_killed_session_moves_the_client_to_another(tmux_server, agent_pane, make) -> None:
    weather, news = agent_pane("weather/bot"), agent_pane("news/feed")
    controlled = make(weather.target, news.target)
    assert controlled.pane_alive(weather.pane_id) and controlled.session == "weather"
    tmux(tmux_server, "kill-session", "-t", "=weather")
    wait_until(
        lambda: controlled.pane_alive(news.pane_id) and controlled.session == "news",
        timeout=5,
        message="the client attached to the other session",
    )
    assert [c.split(" ")[0] for c in clients(tmux_server)] == ["news"]
    assert controlled.resolve(news.target).pane_id == news.pane_id
    assert not controlled.pane_alive(weather.pane_id)


def test_switched_off_or_closed_every_call_goes_by_subprocess(tmux_server, agent_pane, make, started) -> None:
    pane = agent_pane("weather/bot")
    off = make(pane.target, enabled=False)
    before = started()
    assert off.resolve(pane.target).pane_id == pane.pane_id and off.pane_alive(pane.pane_id)
    assert started() == before + 2 and not off.connected and clients(tmux_server) == []
    closed = make(pane.target)
    assert closed.pane_alive(pane.pane_id) and closed.connected
    closed.close()
    wait_until(lambda: clients(tmux_server) == [], timeout=5, message="the client to detach")
    before = started()
    assert closed.pane_alive(pane.pane_id)
    assert started() == before + 1 and not closed.connected


def test_targets_name_sessions_by_name_only() -> None:
    assert [session_of(t) for t in ("work:0.1", "=work:bot", "work", "%3", "@2", "$1", ":1")] == [
        "work",
        "work",
        "work",
        None,
        None,
        None,
        None,
    ]


def test_control_mode_is_a_boolean_in_the_tmux_section(tmp_path) -> None:
    def load(tmux_section: dict[str, object]) -> TmuxConfig:
        path = tmp_path / "agent-config.yaml"
        path.write_text(yaml.safe_dump({"tmux": tmux_section, "state_db": "state.db", "sessions": []}))
        return load_config(path).tmux

    assert load({}).control_mode is True
    assert load({"socket_name": "x", "control_mode": False}).control_mode is False
    with pytest.raises(ConfigError) as info:
        load({"control_mode": "no"})
    assert "key 'tmux.control_mode'" in info.value.render() and "expected boolean" in info.value.render()
