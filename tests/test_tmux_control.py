"""The tmux control-mode connection on real, isolated tmux servers: replies go to the caller that
asked, pane output arrives byte-exact, pane exits and a killed or restarted server are events,
and no caller waits past its deadline. Plus the protocol's pure parts (quoting, decoding)."""

from __future__ import annotations

import queue
import subprocess
import threading
from collections.abc import Callable, Iterator

import pytest

from orchestrator.adapters.tmux_control import (
    ALL_PANES_FORMAT,
    HIDDEN_SESSION,
    CommandFailed,
    ConnectedEvent,
    ControlClosed,
    ControlConnection,
    ControlEvent,
    ControlNotConnected,
    ControlTimeout,
    ExitEvent,
    NotificationEvent,
    OutputEvent,
    SubscriptionEvent,
    decode_output,
    quote,
)
from orchestrator.adapters.tmux_control.protocol import command_line, parse_notification
from orchestrator.config import TmuxConfig
from orchestrator.drivers.shell_files import mark
from orchestrator.errors import TmuxUnavailable
from pytest_tmuxagent.tmux_server import AgentPane, TmuxTestServer
from pytest_tmuxagent.waiting import wait_until

TRICKY = (
    "echo \"double\" 'single' `tick` $HOME ${PATH} \\back\\\\slash ; && || #{pane_id} ~ {x}\n天气预报 ✓ 🚀\ttab\nlast"
)


class Events:
    """Everything a connection reported, for tests to wait on."""

    def __init__(self, conn: ControlConnection) -> None:
        self.seen: list[ControlEvent] = []
        self._lock = threading.Lock()
        conn.subscribe(self._put)

    def _put(self, event: ControlEvent) -> None:
        with self._lock:
            self.seen.append(event)

    def all(self) -> list[ControlEvent]:
        with self._lock:
            return list(self.seen)

    def output(self, pane: str) -> bytes:
        return b"".join(e.data for e in self.all() if isinstance(e, OutputEvent) and e.pane == pane)

    def first(
        self, match: Callable[[ControlEvent], bool], what: str, timeout: float = 10, after: ControlEvent | None = None
    ) -> ControlEvent:
        """The first matching event (after the event `after`, when given)."""

        def found() -> ControlEvent | None:
            seen = self.all()
            start = next((i + 1 for i, e in enumerate(seen) if e is after), 0) if after is not None else 0
            return next((e for e in seen[start:] if match(e)), None)

        try:
            return wait_until(found, timeout=timeout, message=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; events seen: {self.all()}") from None


@pytest.fixture
def connect(tmux_server: TmuxTestServer) -> Iterator[Callable[..., ControlConnection]]:
    made: list[ControlConnection] = []

    def make(session: str | None = None, auto_reconnect: bool = False, output: bool = True) -> ControlConnection:
        conn = ControlConnection(
            TmuxConfig(socket_name=tmux_server.socket_name),
            session=session,
            auto_reconnect=auto_reconnect,
            output=output,
        )
        made.append(conn)
        return conn

    yield make
    for conn in made:
        conn.close()


def tmux(server: TmuxTestServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tmux", "-L", server.socket_name, *args], capture_output=True, text=True, check=False)


def session_of(pane: AgentPane) -> str:
    return pane.target.split(":")[0]


# the protocol, without tmux ---------------------------------------------------------------
def test_output_values_decode_octal_escapes_and_keep_utf8() -> None:
    assert decode_output(b"a\\015\\012\\033[1m\\134n \xe5\xa4\xa9") == b"a\r\n\x1b[1m\\n \xe5\xa4\xa9"
    event = parse_notification(b"%output %3 x\\007y")
    assert event == OutputEvent("%3", b"x\x07y")
    assert parse_notification(b"%extended-output %3 12 : hi") == OutputEvent("%3", b"hi", 12)


def test_notifications_parse_to_typed_events() -> None:
    assert parse_notification(b"%exit server exited") == ExitEvent("server exited")
    changed = parse_notification(b"%subscription-changed all $1 - - - : %0=1/17 %1=0/17 ")
    assert changed == SubscriptionEvent("all", "%0=1/17 %1=0/17 ")
    renamed = parse_notification(b"%window-renamed @2 my window")
    assert isinstance(renamed, NotificationEvent)
    assert (renamed.kind, renamed.name, renamed.args, renamed.target) == (
        "window",
        "window-renamed",
        ("@2", "my window"),
        "@2",
    )
    closed = parse_notification(b"%unlinked-window-close @7")
    assert isinstance(closed, NotificationEvent) and (closed.kind, closed.target) == ("window", "@7")
    assert parse_notification(b"%pane-mode-changed %4").kind == "pane"
    assert parse_notification(b"%sessions-changed") == NotificationEvent("sessions-changed", (), "session")


def test_a_command_line_is_one_line_with_every_argument_quoted() -> None:
    line = command_line(["send-keys", "-t", "%1", "-l", "--", 'a;b\n$X "q" \\ \x01 天'])
    assert line == 'send-keys "-t" "%1" "-l" "--" "a;b\\012\\$X \\"q\\" \\\\ \\001 天"\n'.encode()
    assert line.count(b"\n") == 1
    with pytest.raises(ValueError, match="detach"):
        command_line([])
    with pytest.raises(ValueError, match="NUL"):
        quote("a\x00b")


# replies --------------------------------------------------------------------------------
def test_replies_go_to_their_callers_under_concurrent_callers(tmux_server, agent_pane, connect) -> None:
    agent_pane("weather/bot")
    conn = connect()
    conn.connect()
    wrong: list[tuple[str, list[str]]] = []

    def caller(n: int) -> None:
        for i in range(40):
            text = f"caller {n} call {i} ; $X 天"
            reply = conn.command("display-message", "-p", text)
            if reply != [text]:
                wrong.append((text, reply))

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert wrong == []


def test_a_failed_command_says_why_and_a_late_reply_never_reaches_the_next_caller(tmux_server, agent_pane, connect):
    agent_pane("weather/bot")
    conn = connect()
    conn.connect()
    with pytest.raises(CommandFailed, match="can't find pane: %99") as info:
        conn.send_keys("%99", "Enter")
    assert (info.value.command, info.value.detail) == ("send-keys", "can't find pane: %99")  # as tmux's stderr
    # wait-for answers at once but holds the client's queue until its channel is signalled
    conn.command("wait-for", "ctl-test-channel")
    with pytest.raises(ControlTimeout):
        conn.command("display-message", "-p", "late", timeout=0.3)
    assert tmux(tmux_server, "wait-for", "-S", "ctl-test-channel").returncode == 0
    assert conn.command("display-message", "-p", "next") == ["next"]


def test_list_panes_reads_every_session_in_one_call_without_the_hidden_one(tmux_server, agent_pane, connect) -> None:
    one, two = agent_pane("weather/bot"), agent_pane("news/feed")
    conn = connect()
    conn.connect()
    rows = {row.pane_id: row for row in conn.list_panes()}
    assert set(rows) == {one.pane_id, two.pane_id}
    assert (rows[one.pane_id].session, rows[two.pane_id].session) == ("weather", "news")
    assert rows[one.pane_id].current_command == "bash" and not rows[one.pane_id].dead
    assert HIDDEN_SESSION in tmux(tmux_server, "list-sessions", "-F", "#{session_name}").stdout.split()
    conn.close()
    wait_until(
        lambda: HIDDEN_SESSION not in tmux(tmux_server, "list-sessions", "-F", "#{session_name}").stdout.split(),
        timeout=5,
        message="the hidden session to go with its client (destroy-unattached)",
    )


# output ---------------------------------------------------------------------------------
def test_output_arrives_byte_exact_with_utf8_control_bytes_and_osc_markers(tmux_server, agent_pane, connect) -> None:
    pane = agent_pane("weather/bot")
    payload = b"\x01\x02\x07 tab\t back\\slash \xe5\xa4\xa9\xe6\xb0\x94 \xe2\x9c\x93 " + mark("e", "abc-12-0") + b" end"
    (pane.workdir / "payload.bin").write_bytes(payload)
    conn = connect(session=session_of(pane))
    events = Events(conn)
    conn.connect()
    conn.send_literal(pane.pane_id, "cat payload.bin", enter=True)
    wait_until(lambda: payload in events.output(pane.pane_id), timeout=10, message="the payload on %output")
    # the same marker the shell driver prints, from printf: the orchestrator's fork-free wake
    conn.send_literal(pane.pane_id, "printf '\\033]7701;e;%s\\007' tok-7-1", enter=True)
    wait_until(lambda: mark("e", "tok-7-1") in events.output(pane.pane_id), timeout=10, message="the OSC marker")


def test_on_reply_cuts_the_stream_where_the_reply_is_and_a_session_id_attaches(
    tmux_server, agent_pane, connect
) -> None:
    pane = agent_pane("weather/bot")
    session_id = tmux(tmux_server, "display-message", "-p", "-t", pane.pane_id, "#{session_id}").stdout.strip()
    conn = connect(session=session_id)  # `$N`, not a name: a renamed session keeps its client
    events = Events(conn)
    conn.connect()
    tmux(tmux_server, "rename-session", "-t", session_id, "renamed")
    conn.send_literal(pane.pane_id, "echo before-$((1+1))", enter=True)
    wait_until(lambda: b"before-2" in events.output(pane.pane_id), timeout=10, message="output before the cut")
    cut = OutputEvent("cut", b"")
    threads: list[threading.Thread] = []

    def at_reply() -> None:
        threads.append(threading.current_thread())
        events._put(cut)  # in stream order with the reader's events

    reply = conn.commands(("display-message", "-p", "#{session_name}"), on_reply=at_reply)
    assert reply == [["renamed"]] and threads and threads[0] is not threading.current_thread()
    with pytest.raises(CommandFailed):  # a failed reply is a cut too
        conn.commands(("list-panes", "-t", "%99"), on_reply=at_reply)
    assert len(threads) == 2
    conn.send_literal(pane.pane_id, "echo after-$((2+2))", enter=True)
    wait_until(lambda: b"after-4" in events.output(pane.pane_id), timeout=10, message="output after the cut")
    seen = events.all()
    at = seen.index(cut)
    before = b"".join(e.data for e in seen[:at] if isinstance(e, OutputEvent))
    after = b"".join(e.data for e in seen[at:] if isinstance(e, OutputEvent))
    assert b"before-2" in before and b"after-4" in after and b"after-4" not in before


def test_output_reaches_only_a_client_attached_to_the_panes_session(tmux_server, agent_pane, connect) -> None:
    pane = agent_pane("weather/bot")
    hidden, attached = connect(), connect(session=session_of(pane))
    hidden_events, attached_events = Events(hidden), Events(attached)
    hidden.connect()
    attached.connect()
    hidden.command("refresh-client", "-A", f"{pane.pane_id}:on")  # asking for it does not help either
    hidden.send_literal(pane.pane_id, "echo scope-$((6*7))", enter=True)
    wait_until(lambda: b"scope-42" in attached_events.output(pane.pane_id), timeout=10, message="output")
    hidden.command("display-message", "-p", "sync")  # every notification sent before it has been read
    assert hidden_events.output(pane.pane_id) == b""


def test_a_linked_window_sends_output_but_outlives_its_own_session(tmux_server, agent_pane, connect) -> None:
    """Why the connection does not link other sessions' windows into its own to see their output:
    a linked window survives the user's `kill-session`, so the user's pane would live on."""
    pane = agent_pane("weather/bot")
    conn = connect()
    events = Events(conn)
    conn.connect()
    conn.command("link-window", "-d", "-s", pane.pane_id, "-t", f"{HIDDEN_SESSION}:")
    conn.send_literal(pane.pane_id, "echo linked-$((6*7))", enter=True)
    wait_until(lambda: b"linked-42" in events.output(pane.pane_id), timeout=10, message="the linked pane's output")
    assert tmux(tmux_server, "kill-session", "-t", "=weather").returncode == 0
    assert pane.pane_id in {row.pane_id for row in conn.list_panes(include_hidden=True)}


def test_a_no_output_client_gets_replies_and_notifications_but_no_output(tmux_server, agent_pane, connect) -> None:
    pane, logs = agent_pane("weather/bot"), agent_pane("weather/logs")
    quiet, loud = connect(session=session_of(pane), output=False), connect(session=session_of(pane))
    quiet_events, loud_events = Events(quiet), Events(loud)
    quiet.connect()
    loud.connect()
    assert "no-output" in quiet.argv()[-3] and "no-output" not in loud.argv()[-3]
    window = quiet.command("display-message", "-p", "-t", logs.pane_id, "#{window_id}")[0]
    quiet.send_literal(pane.pane_id, "echo quiet-$((6*7))", enter=True)
    wait_until(lambda: b"quiet-42" in loud_events.output(pane.pane_id), timeout=10, message="the output")
    quiet.send_literal(logs.pane_id, "exit", enter=True)
    quiet_events.first(
        lambda e: isinstance(e, NotificationEvent) and e.target == window and e.name.endswith("window-close"),
        "the window's close (tmux 3.3a says %unlinked-window-close: it is unlinked before it closes)",
    )
    quiet.command("display-message", "-p", "sync")  # every notification sent before it has been read
    assert quiet_events.output(pane.pane_id) == b"" and quiet_events.output(logs.pane_id) == b""


def test_a_pane_entering_copy_mode_is_an_event(tmux_server, agent_pane, connect) -> None:
    pane = agent_pane("weather/bot")
    conn = connect(session=session_of(pane))
    events = Events(conn)
    conn.connect()
    conn.command("copy-mode", "-t", pane.pane_id)
    events.first(
        lambda e: isinstance(e, NotificationEvent) and (e.name, e.target) == ("pane-mode-changed", pane.pane_id),
        "%pane-mode-changed for the pane",
    )
    assert [row.mode for row in conn.list_panes() if row.pane_id == pane.pane_id] == ["copy-mode"]


def test_one_subscription_sees_pane_deaths_in_every_session(tmux_server, agent_pane, connect) -> None:
    pane = agent_pane("weather/bot")
    assert tmux(tmux_server, "set-option", "-t", pane.pane_id, "-p", "remain-on-exit", "on").returncode == 0
    conn = connect()
    events = Events(conn)
    conn.connect()
    conn.watch_format("panes", ALL_PANES_FORMAT)
    events.first(
        lambda e: isinstance(e, SubscriptionEvent) and f"{pane.pane_id}=0/" in e.value, "the pane alive", timeout=5
    )
    conn.send_literal(pane.pane_id, "exit", enter=True)
    events.first(
        lambda e: isinstance(e, SubscriptionEvent) and f"{pane.pane_id}=1/" in e.value, "the pane dead", timeout=5
    )


def test_a_closed_window_of_another_session_is_an_event(tmux_server, agent_pane, connect) -> None:
    pane = agent_pane("weather/bot")
    window = tmux(tmux_server, "display-message", "-p", "-t", pane.pane_id, "#{window_id}").stdout.strip()
    conn = connect()
    events = Events(conn)
    conn.connect()
    conn.send_literal(pane.pane_id, "exit", enter=True)
    events.first(
        lambda e: isinstance(e, NotificationEvent) and (e.name, e.target) == ("unlinked-window-close", window),
        "%unlinked-window-close of the pane's window",
    )


# writes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["paste", "send_literal"])
def test_text_arrives_byte_exact(how, tmux_server, agent_pane, connect) -> None:
    pane = agent_pane("weather/bot")
    conn = connect()
    conn.connect()
    conn.send_literal(pane.pane_id, "stty -icanon -echo; cat > typed.txt", enter=True)
    wait_until(lambda: "cat" in {r.current_command for r in conn.list_panes()}, timeout=10, message="cat running")
    write = conn.paste if how == "paste" else conn.send_literal
    write(pane.pane_id, TRICKY, enter=True)
    out, expected = pane.workdir / "typed.txt", (TRICKY + "\n").encode()
    wait_until(lambda: out.stat().st_size >= len(expected), timeout=10, message="all the text in typed.txt")
    assert out.read_bytes() == expected


# the server going away ------------------------------------------------------------------
def test_kill_server_is_an_event_and_no_caller_hangs(tmux_server, agent_pane, connect) -> None:
    agent_pane("weather/bot")
    conn = connect()
    events = Events(conn)
    conn.connect()
    conn.command("wait-for", "never-signalled")  # holds every later command of this client
    ended: queue.Queue[object] = queue.Queue()

    def blocked() -> None:
        try:
            ended.put(conn.command("display-message", "-p", "held", timeout=60))
        except BaseException as exc:
            ended.put(exc)

    waiter = threading.Thread(target=blocked)
    waiter.start()
    tmux_server.kill()
    events.first(lambda e: isinstance(e, ExitEvent), "an exit event")
    # tmux may still run the held command while it shuts down; either way the caller is released
    outcome = ended.get(timeout=10)
    assert outcome == ["held"] or isinstance(outcome, ControlClosed)
    waiter.join(timeout=5)
    assert not conn.connected
    with pytest.raises(ControlNotConnected, match="down"):  # nothing written: safe to try another way
        conn.command("display-message", "-p", "x", timeout=60)


def test_a_caller_waiting_when_the_client_dies_gets_control_closed(tmux_server, agent_pane, connect) -> None:
    agent_pane("weather/bot")
    conn = connect()
    events = Events(conn)
    conn.connect()
    client = conn._link.proc if conn._link else None
    assert client is not None
    conn.command("wait-for", "never-signalled")  # the next command is held, never answered
    killer = threading.Timer(0.2, client.kill)
    killer.start()
    with pytest.raises(ControlClosed, match="tmux control (client ended|connection is down)"):
        conn.command("display-message", "-p", "never answered", timeout=60)
    killer.join()
    events.first(lambda e: isinstance(e, ExitEvent), "an exit event")


def test_reconnect_finds_a_restarted_server_and_never_starts_one(tmux_server, agent_pane, connect) -> None:
    agent_pane("weather/bot")
    conn = connect()
    first = conn.connect()
    tmux_server.kill()
    wait_until(lambda: not conn.connected, timeout=10, message="the connection to notice")
    with pytest.raises(TmuxUnavailable, match="did not attach \\((no server running|error connecting)"):
        conn.reconnect(timeout=5)
    assert tmux(tmux_server, "list-sessions").returncode != 0  # -N: no server was started for us
    pane = agent_pane("weather/bot")
    second = conn.reconnect()
    assert second != first and conn.server == second
    assert [row.pane_id for row in conn.list_panes()] == [pane.pane_id]


def test_auto_reconnect_attaches_to_the_restarted_server_with_its_subscriptions(
    tmux_server, agent_pane, connect
) -> None:
    agent_pane("weather/bot")
    conn = connect(auto_reconnect=True)
    events = Events(conn)
    first = conn.connect()
    conn.watch_format("panes", ALL_PANES_FORMAT)
    tmux_server.kill()
    gone = events.first(lambda e: isinstance(e, ExitEvent), "an exit event")
    pane = agent_pane("weather/bot")
    events.first(lambda e: isinstance(e, ConnectedEvent) and e.server != first, "a connection to the new server")
    events.first(
        lambda e: isinstance(e, SubscriptionEvent) and f"{pane.pane_id}=0/" in e.value,
        "the subscription renewed on the new server",
        timeout=5,
        after=gone,
    )


def test_close_stops_the_reconnect_loop(tmux_server, agent_pane, connect) -> None:
    agent_pane("weather/bot")
    conn = connect(auto_reconnect=True)
    events = Events(conn)
    conn.connect()
    tmux_server.kill()
    events.first(lambda e: isinstance(e, ExitEvent), "an exit event")
    assert conn.reconnecting
    conn.close()
    wait_until(lambda: not conn.reconnecting, timeout=10, message="the reconnect loop to stop")
    agent_pane("weather/bot")
    assert not conn.connected
    assert tmux(tmux_server, "list-clients").stdout == ""
    assert [e for e in events.all() if isinstance(e, ConnectedEvent)] == [ConnectedEvent(conn.server or "")]
