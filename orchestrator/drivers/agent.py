"""The agent driver: a unit of work is a prompt to an AI coding agent's own terminal UI.

One driver per agent session. Feedback is exact and event-driven where the agent offers it: the
agent is launched (when the pane is at a shell prompt and the session has `launch`) with its
hooks or `notify` program wired to `orchestrator.cli.agent_hook`, which appends the agent's events
to this session's events file (one write, then close: it starts no process). The running turn's
command id is watched on that file with the shared `FileWatch` (one inotify watch on the runtime
directory, one thread for the shell driver and every agent session), so each close of a hook's
write wakes the engine with it — no thread or `tmux wait-for` process per session. A turn ends
when the provider's end event for *this* prompt arrives (Claude Code's `Stop` after the
`UserPromptSubmit` of the prompt; codex's `agent-turn-complete` whose input is the prompt); its
reply and tool calls come from the agent's transcript.

Screen patterns are the fallback, and only for states no event reports: whether the agent's
prompt is drawn and ready to take input (codex drops an Enter that arrives before its footer
names the model), and whether the pane shows an agent at all (an adopted agent, or something
else: `unsupported`).
"""

from __future__ import annotations

import hashlib
import os
import queue
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import SessionConfig, SessionKind, TmuxConfig
from orchestrator.drivers import procfs
from orchestrator.drivers.agent_events import AgentEvent, EventLog, TranscriptTail
from orchestrator.drivers.agent_providers import PROVIDERS
from orchestrator.drivers.file_watch import FileWatch
from orchestrator.drivers.provider_base import AgentQuestion, Provider, screen_busy
from orchestrator.drivers.shell_files import PaneLog, clean_tail
from orchestrator.errors import TmuxUnavailable
from orchestrator.model import ApprovalRequest, CommandRow, ExitRecord, Readiness
from orchestrator.ports import PaneIO

SHELLS = ("bash", "zsh", "sh", "dash", "fish")
LAUNCH_GRACE_SECONDS = 30.0
PASTE_SEEN_SECONDS = 3.0
SCREEN_LOOK_SECONDS = 0.2
SCREEN_SETTLE_SECONDS = 0.6
TRANSCRIPT_LOOK_SECONDS = 0.25
TOOL_IO_LOOK_SECONDS = 0.5
AGENT_PROGRAMS = ("claude", "codex", "node")  # the agent itself, not a tool it runs


@dataclass
class Turn:
    command_id: int
    prompt: str
    delivered_at: float
    events_from: int
    started: AgentEvent | None = None
    ended: AgentEvent | None = None
    aborted: AgentEvent | None = None  # cut short (an interrupt): back at the prompt, no end event
    follow_ups: list[str] = field(default_factory=list)  # typed after a denied tool (why, by whom)
    current: AgentEvent | None = None  # the start of the latest prompt's part of the turn
    first_event: int = 0  # index into the session's events where this turn's began
    screen_approval: ApprovalRequest | None = None  # codex's prompt, read off the screen (fallback)
    screen_approval_look: float = 0.0
    record: ExitRecord | None = None  # read once from the transcript when the turn ended
    on_screen: bool = False  # an adopted agent without our hooks: followed on its screen (fallback)
    busy_seen: bool = False
    idle_since: float | None = None
    last_look: float = 0.0
    before: tuple[str, ...] = ()


class AgentDriver:
    kind: SessionKind = "agent"

    def __init__(
        self,
        session: SessionConfig,
        panes: PaneIO,
        tmux: TmuxConfig,
        runtime_dir: Path,
        state_db: Path,
        completions: queue.Queue[int],
        watcher: FileWatch | None = None,
    ) -> None:
        """`watcher`: the process's one watcher of `runtime_dir` (the shell driver's, handed in
        by compose.py), whose queue must be `completions`; without one the driver makes its own
        (one thread) and closes it with itself. `tmux` is not needed any more (no `tmux
        wait-for`); the composer still passes it."""
        if watcher is not None and (watcher.events is not completions or watcher.directory != runtime_dir):
            raise ValueError("the shared watcher must watch runtime_dir and put on the completions queue")
        self.session = session
        self.provider: Provider = PROVIDERS[session.provider or "claude"]()
        self.panes = panes
        self.tmux = tmux
        self.runtime_dir = runtime_dir
        self._completions = completions
        self._own_watcher = watcher is None
        self._watcher = watcher if watcher is not None else FileWatch(runtime_dir, completions)
        self._followed: int | None = None  # the command id watched on the events file
        slug = hashlib.sha1(f"{state_db}\0{session.name}".encode()).hexdigest()[:12]
        self.events = EventLog(runtime_dir / f"agent-{slug}.events.jsonl")
        self.env = dict(session.env)
        self.turn: Turn | None = None
        self._launched_at: float | None = None
        self._logs: dict[str, PaneLog] = {}
        self._pane = ""
        self._transcript: TranscriptTail | None = None
        self._transcript_look = 0.0
        self._launched_wall = 0.0
        self._tool_io = (0.0, 0)

    @property
    def completions(self) -> queue.Queue[int]:
        return self._completions

    # wiring ------------------------------------------------------------------------------------
    def hook_argv(self) -> list[str]:
        """The hook command line (the provider adds the event's name): it only appends to the
        events file, whose closes `_follow` turns into wake-ups."""
        return [sys.executable, "-m", "orchestrator.cli.agent_hook", str(self.events.path)]

    def _follow(self, command_id: int) -> None:
        """Wake the engine with `command_id` each time a hook's line lands in the events file
        (and once now, should it already hold the turn's end: a restart adopting it)."""
        if self._followed is not None and self._followed != command_id:
            self._watcher.forget(self._followed)
        self._followed = command_id
        self._watcher.watch(command_id, self.events.path, repeat=True)

    def _unfollow(self) -> None:
        if self._followed is not None:
            self._watcher.forget(self._followed)
            self._followed = None

    def _launch(self, pane_id: str) -> None:
        """Start the agent from the pane's shell (only when there is work to do).

        The session's `env` may hold API keys: it goes into a 0600 launch script in the runtime
        directory, never onto the typed line, so no key reaches the screen, the pane log or the
        shell's history. The script runs the agent as a child of its own shell; when the agent
        exits, the pane is back at the user's prompt."""
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        self.events.reset()
        self._transcript, self._launched_wall = None, time.time()
        launch = self.session.launch or self.provider.name
        line = self.provider.launch_line(launch, self.hook_argv(), self.runtime_dir, self.env)
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        script = self.runtime_dir / f"{self.events.path.stem}.launch.sh"
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"cd {shlex.quote(str(self.session.workdir))} || exit\n")
            fh.write((f"exec env {env} " if env else "exec ") + line + "\n")
        os.chmod(script, 0o600)
        self.panes.send_text(pane_id, f" sh {shlex.quote(str(script))}")
        self._launched_at = time.monotonic()

    # the pane --------------------------------------------------------------------------------------
    def probe(self, pane_id: str, *, dispatch: bool = True) -> Readiness:
        info = self.panes.pane_info(pane_id)
        if info is None:
            return Readiness(False, "pane_missing", "the pane is gone")
        if info.dead:
            return Readiness(False, "exited", "the pane's program has exited")
        self.events.poll()
        program = procfs.executable_name(info.pid) or info.current_command
        at_shell = program in SHELLS and procfs.foreground_group(info.pid) == info.pid
        launching = self._launched_at is not None and time.monotonic() - self._launched_at < LAUNCH_GRACE_SECONDS
        if at_shell and not launching:
            if self.session.launch and program in ("bash", "zsh") and dispatch:
                self._launch(pane_id)
                return Readiness(False, "idle", f"starting {self.provider.name} in the pane")
            return Readiness(False, "exited", f"{self.provider.name} is not running in the pane (a shell is)")
        try:
            screen = self.panes.capture(pane_id, 60)
        except TmuxUnavailable:
            return Readiness(False, "pane_missing", "the pane did not answer")
        if info.in_mode:
            return Readiness(False, "idle", f"the pane is in {info.mode or 'a tmux mode'}; prompts wait")
        if self.provider.is_ready(screen):
            return Readiness(True, "idle")
        if launching or self.provider.looks_like_agent(screen):
            return Readiness(False, "idle", f"waiting for {self.provider.name}'s prompt")
        return Readiness(
            False, "unsupported", f"the pane runs {info.current_command}, not {self.provider.name}; nothing is typed"
        )

    def pane_log(self, pane_id: str) -> PaneLog:
        log = self._logs.get(pane_id)
        if log is None:
            log = PaneLog(self.runtime_dir / f"{self.events.path.stem}-{pane_id.lstrip('%')}.pane.log")
            log.path.parent.mkdir(parents=True, exist_ok=True)
            log.path.touch()
            self.panes.pipe_pane(pane_id, f"exec cat >> {shlex.quote(str(log.path))}")
            self._logs[pane_id] = log
        return log

    def forget_pane(self, pane_id: str) -> None:
        self._logs.pop(pane_id, None)

    def shell_idle(self, pane_id: str) -> bool:
        """The agent is at its prompt and our prompt never started a turn."""
        if self.turn is None:
            return True
        self._poll()
        if self.turn.started is not None:
            return False
        try:
            return self.provider.is_ready(self.panes.capture(pane_id, 60))
        except TmuxUnavailable:
            return False

    # one prompt ------------------------------------------------------------------------------------
    def deliver(self, row: CommandRow, pane_id: str) -> None:
        self.pane_log(pane_id).rotate_if_larger(1024 * 1024)
        self.events.poll()
        self.turn = Turn(row.id, row.command, time.time(), len(self.events.seen))
        self.turn.first_event = self.turn.events_from
        self.turn.on_screen = self._launched_at is None and not self.events.seen
        self._pane = pane_id
        self._follow(row.id)
        try:
            if self.turn.on_screen:
                self.turn.before = tuple(self.panes.capture(pane_id, 60))
            self.panes.paste_text(pane_id, row.command, enter=False)
            self._wait_pasted(pane_id, row.command)
            self.panes.send_keys(pane_id, "Enter")
        except BaseException:
            self.turn = None
            self._unfollow()
            raise

    def _wait_pasted(self, pane_id: str, text: str) -> None:
        """An Enter that arrives before the TUI has taken the paste is lost: wait (bounded) until
        the prompt box shows the text's first line or a paste placeholder."""
        first = " ".join(text.strip().splitlines()[0].split())[:20] if text.strip() else ""
        deadline = time.monotonic() + PASTE_SEEN_SECONDS
        while time.monotonic() < deadline:
            screen = " ".join(" ".join(line.split()) for line in self.panes.capture(pane_id, 60))
            if (first and first in screen) or "Pasted" in screen:
                return
            time.sleep(0.02)

    def adopt(self, row: CommandRow, pane_id: str) -> bool:
        self.events.poll()
        self.turn = Turn(row.id, row.command, time.time(), 0)
        self._follow(row.id)
        return True

    def _read_transcript(self) -> None:
        """Append the agent's transcript entries read since the last look to the session's events
        (found once: from the hooks' `transcript_path`, or codex's rollout for this workdir)."""
        if self._transcript is None:
            now = time.monotonic()
            if now - self._transcript_look < TRANSCRIPT_LOOK_SECONDS or not self._launched_wall:
                return
            self._transcript_look = now
            path = self.provider.transcript_path(self.events.seen, self.env, self.session.workdir, self._launched_wall)
            if path is None:
                return
            self._transcript = TranscriptTail(path)
        read = (self.provider.transcript_event(entry) for entry in self._transcript.poll())
        self.events.add([event for event in read if event is not None])

    def _poll(self) -> None:
        self.events.poll()
        self._read_transcript()
        turn = self.turn
        if turn is None:
            return
        if turn.on_screen:
            self._poll_screen(turn)
            return
        latest = turn.follow_ups[-1] if turn.follow_ups else turn.prompt
        for event in self.events.seen[turn.events_from :]:
            if turn.started is None and self.provider.turn_started(event, turn.prompt):
                turn.started = event
            if self.provider.turn_started(event, latest):
                turn.current = turn.current or event
            if turn.current is not None and turn.ended is None and event.ts >= turn.current.ts:
                if self.provider.turn_ended(event, latest):
                    turn.ended = event
                elif turn.aborted is None and self.provider.turn_aborted(event):
                    turn.aborted = event
        turn.events_from = len(self.events.seen) if turn.ended else turn.events_from

    def _poll_screen(self, turn: Turn) -> None:
        """The fallback for an agent that was already running without our hooks (adopted): nothing
        reports its turn, so it is read off the screen, and said so in the result. Started when the
        busy mark shows (or the screen changed and the prompt is back); ended when the agent's ready
        prompt has been back, without the busy mark, for SCREEN_SETTLE_SECONDS."""
        now = time.monotonic()
        if turn.ended is not None or now - turn.last_look < SCREEN_LOOK_SECONDS or not self._pane:
            return
        turn.last_look = now
        try:
            screen = self.panes.capture(self._pane, 60)
        except TmuxUnavailable:
            return
        busy, ready = screen_busy(screen), self.provider.is_ready(screen)
        if busy:
            turn.busy_seen, turn.idle_since = True, None
        if turn.started is None and (
            busy or (ready and tuple(screen) != turn.before and time.time() - turn.delivered_at > 1)
        ):
            turn.started = AgentEvent("screen-busy", time.time(), {})
        if turn.started is None or busy or not ready:
            turn.idle_since = None
            return
        if turn.idle_since is None:
            turn.idle_since = now
        elif now - turn.idle_since >= SCREEN_SETTLE_SECONDS:
            reply = self.provider.reply_on_screen(screen)
            turn.ended = AgentEvent("screen-idle", time.time(), {})
            turn.record = ExitRecord(None, turn.started.ts, turn.ended.ts, status="succeeded", reply=reply, tools=())

    # a tool waits to be approved ----------------------------------------------------------------
    def pending_approval(self, command_id: int) -> ApprovalRequest | None:
        """Exact from the agent's events where it reports its dialog (Claude Code's
        PermissionRequest hook); for codex, whose notify program reports turn ends only, read
        off the screen (the documented fallback, looked at most every SCREEN_LOOK_SECONDS)."""
        self._poll()
        turn = self.turn
        if turn is None or turn.command_id != command_id or turn.ended is not None:
            return None
        if self.provider.approvals_reported and not turn.on_screen:
            return self.provider.approval(self.events.seen[turn.first_event :])
        now = time.monotonic()
        if self._pane and now - turn.screen_approval_look >= SCREEN_LOOK_SECONDS:
            turn.screen_approval_look = now
            try:
                turn.screen_approval = self.provider.approval_on_screen(self.panes.capture(self._pane, 60))
            except TmuxUnavailable:
                pass
        return turn.screen_approval

    def answer_approval(self, command_id: int, pane_id: str, approve: bool, note: str) -> None:
        """The agent's own keys. A refusal hands the prompt back to the agent (both agents then
        wait, the turn unfinished), so the reason is typed as the turn's next input: the agent is
        told no, and the turn ends when it has answered that."""
        turn = self.turn
        if turn is None or turn.command_id != command_id:
            return
        turn.screen_approval, turn.screen_approval_look = None, time.monotonic() + SCREEN_SETTLE_SECONDS
        # codex writes the call to its rollout a moment before it draws the prompt: a key sent
        # earlier would land in its input box
        deadline = time.monotonic() + PASTE_SEEN_SECONDS
        while time.monotonic() < deadline and not self.provider.dialog_drawn(self.panes.capture(pane_id, 60)):
            time.sleep(0.05)
        self.panes.send_keys(pane_id, *(self.provider.approve_keys if approve else self.provider.deny_keys))
        if approve or not note:
            return
        deadline = time.monotonic() + PASTE_SEEN_SECONDS * 2
        while time.monotonic() < deadline and not self.provider.is_ready(self.panes.capture(pane_id, 60)):
            time.sleep(0.05)
        turn.follow_ups.append(note)
        turn.current = None
        self.panes.paste_text(pane_id, note, enter=False)
        self._wait_pasted(pane_id, note)
        self.panes.send_keys(pane_id, "Enter")

    def watch(self, command_id: int) -> None:
        self._follow(command_id)

    def watching(self, command_id: int) -> bool:
        return self._watcher.watching(command_id)

    def started(self, command_id: int) -> bool:
        self._poll()
        return self.turn is not None and self.turn.command_id == command_id and self.turn.started is not None

    def end_record(self, command_id: int) -> ExitRecord | None:
        self._poll()
        turn = self.turn
        if turn is not None and turn.command_id == command_id and turn.ended is None and turn.aborted is not None:
            first_seen = turn.started or turn.current or turn.aborted
            turn.record = turn.record or ExitRecord(
                None, first_seen.ts, turn.aborted.ts, status="cancelled", reply="", tools=()
            )
            return turn.record
        if turn is None or turn.command_id != command_id or turn.ended is None:
            return None
        first = turn.started or turn.current  # codex: an aborted first part reports no end of its own
        if first is None:
            return None
        if turn.record is not None:
            return turn.record
        events = [e for e in self.events.seen if first.ts <= e.ts <= turn.ended.ts]
        status, reply, tools = self.provider.result(turn.ended, turn.prompt, self.env, events)
        started = min(first.ts, turn.ended.ts)
        turn.record = ExitRecord(None, started, turn.ended.ts, status=status, reply=reply, tools=tuple(tools))
        return turn.record

    def activity_marker(self, command_id: int) -> int:
        """What the agent did, never its spinner: its events, its transcript's growth, and what
        the tools it runs write (a long tool run that prints is busy, not stalled; a model that
        hangs mid-stream moves none of them). An adopted agent without hooks has only its screen."""
        self._poll()
        turn = self.turn
        if turn is None or turn.on_screen:
            return sum(log.size() for log in self._logs.values()) + len(self.events.seen)
        transcript = self._transcript.offset if self._transcript is not None else 0
        return len(self.events.seen) * 1_000_003 + transcript + self._tools_written()

    def _tools_written(self) -> int:
        """Bytes written by the processes the agent runs (its descendants that are not the agent
        itself), looked at most every TOOL_IO_LOOK_SECONDS."""
        now = time.monotonic()
        if now - self._tool_io[0] < TOOL_IO_LOOK_SECONDS or not self._pane:
            return self._tool_io[1]
        total = 0
        info = self.panes.pane_info(self._pane)
        if info is not None and not info.dead:
            for pid in procfs.descendants(info.pid):
                name = procfs.executable_name(pid) or ""
                if not name.startswith(AGENT_PROGRAMS):
                    total += procfs.written_bytes(pid) + 1
        self._tool_io = (now, total)
        return total

    def output_tail(self, command_id: int, lines: int, grace_seconds: float, until: int | None = None) -> str:
        record = self.end_record(command_id)
        return clean_tail(record.reply or "", lines) if record else ""

    # the agent asks the person a question ------------------------------------------------------
    def _question(self, command_id: int) -> AgentQuestion | None:
        self._poll()
        turn = self.turn
        if turn is None or turn.command_id != command_id or turn.ended is not None or turn.on_screen:
            return None
        return self.provider.question(self.events.seen[turn.first_event :])

    def waiting_for_input(self, command_id: int) -> bool:
        """Exact from the agent's events (Claude Code's PermissionRequest for AskUserQuestion)."""
        return self._question(command_id) is not None

    def question(self, command_id: int) -> str:
        found = self._question(command_id)
        return found.for_person() if found is not None else ""

    def type_reply(self, pane_id: str, text: str) -> None:
        """The answer as the agent's menu takes it (a choice's number, or typed words)."""
        found = self._question(self.turn.command_id) if self.turn is not None else None
        if found is None:
            self.panes.paste_text(pane_id, text)
            return
        for kind, value in self.provider.reply_actions(found, text):
            if kind == "key":
                self.panes.send_keys(pane_id, value)
            else:
                self.panes.paste_text(pane_id, value, enter=False)
                self._wait_pasted(pane_id, value)

    def interrupt(self, command_id: int, pane_id: str, keys: tuple[str, ...]) -> None:
        self.panes.send_keys(pane_id, *keys)

    def discard(self, command_id: int) -> None:
        if self.turn is not None and self.turn.command_id == command_id:
            self.turn = None
        if self._followed == command_id:
            self._unfollow()

    def close(self) -> None:
        self._unfollow()
        if self._own_watcher:
            self._watcher.close()
