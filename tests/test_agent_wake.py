"""An agent's hook wakes the engine through the file it appends to: no `tmux wait-for` anywhere.

Before: a thread per agent session looping on a `tmux wait-for CHANNEL` child, and the hook
command forked `tmux wait-for -S CHANNEL` after every event it appended. Now the hook only appends
its line (one write, close) and the shell driver's one watcher of the runtime directory — shared
with every agent session, as compose.py wires it — sees the close and puts the running turn's
command id on the completions queue.

Real parts: the real `AgentDriver` and `ShellDriver` (for its watcher) on a real tmux server's
adapter, the kernel's inotify, the real hook entry run as a process the way Claude Code (a shell
`command` from its settings, the event on stdin) and codex (`notify` argv, the JSON last) run it.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.adapters.tmux import TmuxAdapter
from orchestrator.cli import agent_hook
from orchestrator.cli.compose import build_orchestrator
from orchestrator.config import SessionConfig, TmuxConfig, load_config
from orchestrator.drivers.agent import AgentDriver
from orchestrator.drivers.claude_provider import ClaudeProvider
from orchestrator.drivers.shell import ShellDriver
from orchestrator.envfile import EnvSource
from orchestrator.model import CommandRow
from orchestrator.notify.notifier import Notifier
from orchestrator.state.audit import AuditLog
from orchestrator.state.outbox import Outbox
from orchestrator.state.store import StateStore
from pytest_tmuxagent import TmuxTestServer
from tests.test_file_watch import child_pids, new_threads, record_processes

SESSIONS = 20
WAKE_SECONDS = 5.0  # a deadline, not an expectation: the wake comes in milliseconds


@dataclass
class Drivers:
    shell: ShellDriver
    agents: list[AgentDriver]
    before_threads: set[threading.Thread]
    before_children: set[int]

    @property
    def completions(self) -> queue.Queue[int]:
        return self.shell.completions


@pytest.fixture
def drivers(tmux_server: TmuxTestServer, tmp_path: Path) -> Iterator[Drivers]:
    """One shell driver and SESSIONS agent drivers sharing its watcher, as compose.py builds them;
    the threads and children before the agent drivers were made are remembered."""
    config = TmuxConfig(socket_name=tmux_server.socket_name)
    panes = TmuxAdapter(config)
    run, db = tmp_path / "run", tmp_path / "state.db"
    shell = ShellDriver(panes, run, db)
    made = Drivers(shell, [], set(threading.enumerate()), set(child_pids()))
    for n in range(1, SESSIONS + 1):
        session = SessionConfig(f"bot{n}", f"w:{n}", tmp_path, kind="agent", provider="claude")
        made.agents.append(AgentDriver(session, panes, config, run, db, shell.completions, watcher=shell.watcher))
    try:
        yield made
    finally:
        for agent in made.agents:
            agent.close()
        shell.close()


def row(command_id: int, session: str, prompt: str) -> CommandRow:
    return CommandRow(command_id, session, prompt, "running", "test", "", None, None, None, None, None, 1, None)


def next_wake(completions: queue.Queue[int]) -> int:
    try:
        return completions.get(timeout=WAKE_SECONDS)
    except queue.Empty:
        raise AssertionError(f"no wake within {WAKE_SECONDS} s") from None


def test_hook_lines_wake_each_sessions_turn_with_one_thread_and_no_process(drivers: Drivers) -> None:
    """20 agent sessions, each with a turn: every line a hook appends puts that session's command
    id on the completions queue, and the turn's start and end are read from it. No thread was
    added for the 20 sessions, and nothing at all was started (no `tmux wait-for`)."""
    started = record_processes()
    for n, agent in enumerate(drivers.agents, start=1):
        agent.events.path.parent.mkdir(parents=True, exist_ok=True)
        assert agent.adopt(row(n, agent.session.name, f"prompt {n}"), "")
        assert agent.watching(n)
    assert new_threads(drivers.before_threads) == []
    assert drivers.completions.empty()  # no events file yet: nothing to say
    for n, agent in enumerate(drivers.agents, start=1):
        agent_hook.main([str(agent.events.path), "UserPromptSubmit", json.dumps({"prompt": f"prompt {n}"})])
        assert next_wake(drivers.completions) == n
        assert agent.started(n) and agent.end_record(n) is None
        agent_hook.main([str(agent.events.path), "Stop", json.dumps({"last_assistant_message": f"reply {n}"})])
        assert next_wake(drivers.completions) == n
        record = agent.end_record(n)
        assert record is not None and record.status == "succeeded" and record.reply == f"reply {n}"
    assert drivers.completions.empty()  # one wake per line, none for another session
    assert new_threads(drivers.before_threads) == []
    assert set(child_pids()) - drivers.before_children == set()
    assert started == []  # not one process: no `tmux wait-for` in the driver or the hook


def test_a_discarded_turn_is_not_woken_and_the_next_turn_is(drivers: Drivers) -> None:
    agent = drivers.agents[0]
    agent.events.reset()
    agent.adopt(row(1, agent.session.name, "first"), "")
    assert next_wake(drivers.completions) == 1  # the file is there: looked at once when adopted
    agent.discard(1)
    assert not agent.watching(1)
    agent_hook.main([str(agent.events.path), "Notification", "{}"])
    agent.watch(2)  # the next turn's command: its first look sees the line above
    assert next_wake(drivers.completions) == 2
    agent_hook.main([str(agent.events.path), "Stop", "{}"])
    assert next_wake(drivers.completions) == 2
    assert drivers.completions.empty()  # 1 was never put again after its discard
    agent.close()
    assert not agent.watching(2)


def test_the_wired_hook_commands_wake_the_driver(drivers: Drivers, tmp_path: Path) -> None:
    """The hook as the agents run it: Claude Code's settings `command` through a shell with the
    event's JSON on stdin, and codex's `notify` argv with the JSON as its last argument."""
    agent = drivers.agents[0]
    agent.events.reset()
    agent.adopt(row(7, agent.session.name, "p"), "")
    assert next_wake(drivers.completions) == 7
    argv = agent.hook_argv()
    assert not [a for a in argv if "tmux" in a or a.startswith(agent_hook.LEGACY_CHANNEL)]
    settings = ClaudeProvider().settings(argv)
    command = settings["hooks"]["Stop"][0]["hooks"][0]["command"]
    subprocess.run(["sh", "-c", command], input=b'{"last_assistant_message": "hi"}', check=True, timeout=20)
    assert next_wake(drivers.completions) == 7
    subprocess.run([*argv, "notify", '{"type": "agent-turn-complete"}'], check=True, timeout=20)
    assert next_wake(drivers.completions) == 7
    assert [(e.event, e.payload) for e in agent.events.poll()] == [
        ("Stop", {"last_assistant_message": "hi"}),
        ("notify", {"type": "agent-turn-complete"}),
    ]


def test_a_shared_watcher_of_another_queue_or_directory_is_refused(drivers: Drivers, tmp_path: Path) -> None:
    agent = drivers.agents[0]
    with pytest.raises(ValueError, match="shared watcher"):
        AgentDriver(
            agent.session,
            agent.panes,
            agent.tmux,
            tmp_path / "run",
            tmp_path / "db",
            queue.Queue(),
            drivers.shell.watcher,
        )
    with pytest.raises(ValueError, match="shared watcher"):
        AgentDriver(
            agent.session,
            agent.panes,
            agent.tmux,
            tmp_path / "other",
            tmp_path / "db",
            drivers.completions,
            drivers.shell.watcher,
        )


def test_compose_gives_every_agent_session_the_one_watcher(tmux_server: TmuxTestServer, tmp_path: Path) -> None:
    """The real composition root with 20 agent sessions: they share the shell driver's watcher,
    so the whole orchestrator has one watcher thread however many sessions it supervises."""
    sessions = "".join(
        f"  - {{name: a/b{n}, target: 'a:{n}', kind: agent, provider: claude, workdir: w}}\n" for n in range(20)
    )
    (tmp_path / "w").mkdir()
    (tmp_path / ".tmuxagent").mkdir()
    (tmp_path / "agent-config.yaml").write_text(
        f"state_db: state/state.db\ntmux: {{socket_name: {tmux_server.socket_name}}}\nsessions:\n{sessions}"
    )
    config = load_config(tmp_path / "agent-config.yaml")
    metrics, store, audit = OrchestratorMetrics(), StateStore(config.state_db), AuditLog(tmp_path / "audit.jsonl")
    notifier = Notifier(
        Outbox(store), EnvSource(config.settings.env_file), config.settings.notifications, metrics, audit
    )
    before = set(threading.enumerate())
    built = build_orchestrator(
        config, store=store, tmux=TmuxAdapter(config.tmux), audit=audit, metrics=metrics, notify=notifier
    )
    try:
        agents = [d for d in built.supervisor.drivers.values() if isinstance(d, AgentDriver)]
        assert len(agents) == 20
        assert [t.name for t in new_threads(before)] == ["file-watch-run"]
        shell = built.supervisor.driver
        assert isinstance(shell, ShellDriver)
        agents[0].adopt(row(1, "a/b0", "p"), "")
        agent_hook.main([str(agents[0].events.path), "Stop", "{}"])
        assert next_wake(built.supervisor.completions) == 1  # through the shell driver's watcher
    finally:
        built.close()
        store.close()


# the hook entry itself -------------------------------------------------------------------------
CHILD = """
import json, sys
spawned = []
def audit(event, args):
    if event in ("subprocess.Popen", "os.system", "os.posix_spawn", "os.fork", "os.exec", "os.spawn"):
        spawned.append(event)
sys.addaudithook(audit)
from orchestrator.cli import agent_hook
def writes():
    for line in open("/proc/self/io"):
        if line.startswith("syscw:"):
            return int(line.split()[1])
before = writes()
code = agent_hook.main(sys.argv[1:])
after = writes()
print(json.dumps({"code": code, "writes": after - before, "spawned": spawned}))
"""
BIG = "长" * 20_000  # 60 KB of UTF-8: past a pipe's atomic size and any stdio buffer, within one argument


@pytest.mark.parametrize(
    ("form", "argv", "stdin"),
    [
        ("claude", ["Stop"], json.dumps({"last_assistant_message": BIG})),
        ("codex", ["notify", json.dumps({"last-assistant-message": BIG}, ensure_ascii=False)], ""),
        ("older claude", ["/tmp/tmux-1/default", "tmuxagent-agent-0123456789ab", "Stop"], json.dumps({"x": BIG})),
        ("older, no channel", ["", "", "Stop"], json.dumps({"x": BIG})),
        (
            "older codex",
            ["/s", "tmuxagent-agent-0123456789ab", "notify", json.dumps({"x": BIG}, ensure_ascii=False)],
            "",
        ),
    ],
)
def test_the_hook_appends_one_whole_line_in_one_write_and_starts_nothing(
    tmp_path: Path, form: str, argv: list[str], stdin: str
) -> None:
    """Run as its own process (so its write syscalls can be counted from /proc/self/io): one
    write of the whole line, no process started, and an older hook line's socket and channel
    taken for what they were, not as the event's name."""
    events = tmp_path / "agent.events.jsonl"
    events.write_bytes(b'{"event": "before", "ts": 1, "payload": {}}\n')
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(events), *argv],
        input=stdin.encode(),
        capture_output=True,
        check=True,
        timeout=20,
    )
    report = json.loads(done.stdout)
    assert report == {"code": 0, "writes": 1, "spawned": []}, form
    lines = events.read_bytes().split(b"\n")
    assert len(lines) == 3 and lines[-1] == b""  # the earlier line, this one whole, nothing after
    item = json.loads(lines[1])
    assert item["event"] == ("notify" if "codex" in form else "Stop")
    assert BIG in json.dumps(item["payload"], ensure_ascii=False)


def test_concurrent_hooks_each_leave_one_whole_line(tmp_path: Path) -> None:
    """Eight hooks of 60 KB each at once (a tool storm): eight lines, each one parses."""
    events = tmp_path / "agent.events.jsonl"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli.agent_hook", str(events), "PostToolUse"],
            stdin=subprocess.PIPE,
        )
        for _ in range(8)
    ]
    for n, proc in enumerate(procs):
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"n": n, "out": BIG}).encode())
        proc.stdin.close()
    assert [proc.wait(timeout=20) for proc in procs] == [0] * 8
    lines = events.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert sorted(json.loads(line)["payload"]["n"] for line in lines[:-1]) == list(range(8))


def test_undecodable_input_still_leaves_a_line(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 on stdin, and a JSON escape of a lone surrogate, never fail the
    agent: the line is written (exit 0) and reads back."""
    events = tmp_path / "agent.events.jsonl"
    for stdin in (b'{"x": "\xff\xfe"}', b'{"x": "\\ud800"}'):
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli.agent_hook", str(events), "Notification"],
            input=stdin,
            capture_output=True,
            timeout=20,
        )
        assert done.returncode == 0 and done.stderr == b""
    items = [json.loads(line) for line in events.read_bytes().splitlines()]
    assert [item["payload"]["x"] for item in items] == ["\ufffd\ufffd", "\ud800"]


def test_too_few_arguments_write_nothing(tmp_path: Path) -> None:
    events = tmp_path / "agent.events.jsonl"
    assert agent_hook.main([str(events)]) == 0
    assert agent_hook.main([]) == 0
    assert not events.exists()
    assert agent_hook.parse([str(events), "Stop"]) == (str(events), "Stop", None)
    assert agent_hook.parse([str(events), "notify", "{}"]) == (str(events), "notify", "{}")
