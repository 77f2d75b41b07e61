"""The shell driver: a unit of work is a shell command typed into an interactive bash or zsh.

How a command reaches the pane and how its end is known is in `shell_files` (sourced scripts, an
exit record per attempt written by the shell's builtins, output through `pipe-pane`) and
`file_watch` (one inotify watch on the runtime directory for every running command, on one
thread). This class keeps the per-command state behind the
`orchestrator.ports.Driver` seam, so the engine never sees a path, a token or a channel.

Before anything is typed, `probe` makes sure typing is safe: the pane's program is bash ≥ 4.4 or
zsh, the shell itself owns the terminal (no program runs in the foreground), the pane is not in
copy mode, and the command line is empty. That last fact has no exact channel, so it is read
from the screen — and said so: the cursor row left of the cursor must be the prompt the shell
drew after our previous command (learned, with the pane log's size: if nothing was written since,
nothing was typed), or, before any command of ours, end like a prompt (`$ `, `# `, `% `, `> `,
`❯ `); text right of the cursor is always typed text. A line that fails is left alone: the
dispatch waits and the session's state says why.
"""

from __future__ import annotations

import hashlib
import queue
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.adapters.pane_table import PaneTable
from orchestrator.config import SessionKind
from orchestrator.drivers import procfs
from orchestrator.drivers.file_watch import FileWatch
from orchestrator.drivers.shell_files import CommandFiles, PaneLog, display_width
from orchestrator.errors import TmuxUnavailable
from orchestrator.model import ApprovalRequest, CommandRow, ExitRecord, PaneInfo, Readiness
from orchestrator.ports import PaneIO

SUPPORTED_SHELLS = ("bash", "zsh")
PROMPT_ENDINGS = ("$ ", "# ", "% ", "> ", "❯ ", "» ", "➜ ", "$", "#", "%", ">", "❯")
PANE_LOG_LIMIT = 1024 * 1024
SNAPSHOT_SECONDS = 0.02  # how old a pane row may be for a probe before typing
IDLE_SNAPSHOT_SECONDS = 0.5  # ... and for an idle pane's state: one table serves the fleet's probes
JUST_ENDED_SECONDS = 1.0
# An idle pane's output copy is set up ahead of its first command, at most this many a second:
# `pipe-pane` costs ~5 ms (tmux forks the `cat`), and a round must not spend half a second on a
# fleet of 100 new panes while a `send` waits behind it.
IDLE_COPY_SETUPS_PER_SECOND = 8
EXIT_REREAD_SECONDS = 1.0
BASH_VERSION = re.compile(rb"version (\d+)\.(\d+)")


def state_db_digest(state_db: Path) -> str:
    return hashlib.sha1(str(state_db).encode()).hexdigest()[:8]


def channel_token(state_db: Path, command_id: int, attempt: int) -> str:
    """Unique per state DB, command and attempt: a stale typed line can never run a later attempt,
    and two orchestrators on one tmux server never share a file name."""
    return f"{state_db_digest(state_db)}-{command_id}-{attempt}"


@dataclass
class Attempt:
    files: CommandFiles
    pane_id: str
    log_offset: int
    log: PaneLog  # the pane's log as it was piped for this attempt: reading it never calls tmux
    shell: tuple[int, str] | None = None  # the pane's shell pid and terminal: fixed while it runs
    started: bool = False  # its start record was seen (it never goes away while the attempt lives)
    exit_read_at: float = float("-inf")  # when `end_record` last opened the exit record itself
    exit_record: ExitRecord | None = None  # the whole record, once read (by the watcher or a round)

    def exit_seen(self) -> bool:
        """The watcher's ready check, on its thread: the record read there is the one the engine
        then records, so the way from the command's end to its result reads the file once."""
        record = self.files.read_exit()
        if record is not None:
            self.exit_record = record
        return record is not None


@dataclass(frozen=True)
class PromptSignature:
    text: str
    log_size: int


def split_at_cursor(line: str, cursor_x: int) -> tuple[str, str]:
    """The screen row left and right of the cursor, counting terminal cells."""
    cells = 0
    for index, ch in enumerate(line):
        if cells >= cursor_x:
            return line[:index], line[index:]
        cells += display_width(ch)
    return line, ""


def looks_like_prompt(left: str) -> bool:
    return left.rstrip(" ").endswith(tuple(e.strip() for e in PROMPT_ENDINGS)) and (
        left.endswith(" ") or left.rstrip().endswith(("$", "#", "%", ">", "❯"))
    )


class ShellDriver:
    kind: SessionKind = "shell"

    def __init__(self, panes: PaneIO, runtime_dir: Path, state_db: Path, table: PaneTable | None = None) -> None:
        """`table`: the process's shared pane table (one `list-panes -a` for every reader)."""
        self.panes = panes
        self.table = table or PaneTable(panes)
        self.runtime_dir = runtime_dir
        self.state_db = state_db
        self.digest = state_db_digest(state_db)
        self.watcher = FileWatch(runtime_dir)
        self._attempts: dict[int, Attempt] = {}
        self._piped: dict[str, PaneLog] = {}
        self._prompts: dict[str, PromptSignature] = {}
        self._ended_at: dict[str, float] = {}
        self._last_end: dict[str, float] = {}  # when our last command in the pane ended (kept)
        self._after_end: dict[str, int] = {}
        self._prompt_bytes: dict[str, bytes] = {}
        self._bash_ok: dict[int, bool] = {}
        self._support: dict[tuple[int, str], str | None] = {}
        self._idle_setups: list[float] = []  # when idle panes' copies were set up (the last second)

    @property
    def completions(self) -> queue.Queue[int]:
        return self.watcher.events

    # the pane ----------------------------------------------------------------------------
    def pane_log(self, pane_id: str) -> PaneLog:
        """The pane's log, its output copy set up once per pane and orchestrator run (the port's
        `copy_output`: the control-mode stream, or pipe-pane, which replaces any other pipe)."""
        log = self._piped.get(pane_id)
        if log is None:
            identity = (self.panes.server_identity() or "0 0").split()[0]
            log = PaneLog(self.runtime_dir / f"pane-{self.digest}-{identity}-{pane_id.lstrip('%')}.log")
            self.runtime_dir.mkdir(parents=True, exist_ok=True)
            log.path.touch()
            self.panes.copy_output(pane_id, log.path)
            self._piped[pane_id] = log
        return log

    def _check_pipe(self, info: PaneInfo) -> None:
        """The port says the pane's output is not being copied (a restarted server's pane with an
        old id, a pipe someone closed, the output client's session gone, the pane moved to another
        session): set the copy up again, whatever this run remembers."""
        if info.pane_id in self._piped and not self.panes.copying(info.pane_id, info):
            self.forget_pane(info.pane_id)

    def forget_pane(self, pane_id: str) -> None:
        """The pane (or its whole server) went away: pipe it again when it is seen next."""
        self._piped.pop(pane_id, None)
        self._prompts.pop(pane_id, None)
        self._after_end.pop(pane_id, None)
        self._prompt_bytes.pop(pane_id, None)

    def _supported(self, info: PaneInfo) -> str | None:
        """Why the pane's program cannot be driven, or None. Kept per (pid, the program tmux
        names): an `exec` in the pane changes what tmux names, and a new shell has a new pid."""
        key = (info.pid, info.current_command)
        if key not in self._support:
            if len(self._support) > 4096:
                self._support.clear()
            self._support[key] = self._why_unsupported(info)
        return self._support[key]

    def _why_unsupported(self, info: PaneInfo) -> str | None:
        program = procfs.executable_name(info.pid) or info.current_command
        if program not in SUPPORTED_SHELLS:
            return f"the pane runs {program}; commands are typed only into bash (≥ 4.4) or zsh"
        if program == "bash" and not self._bash_recent(info.pid):
            return "the pane's bash is older than 4.4; commands are typed only into bash ≥ 4.4 or zsh"
        return None

    def _bash_recent(self, pid: int) -> bool:
        known = self._bash_ok.get(pid)
        if known is None:
            try:
                out = subprocess.run(
                    [f"/proc/{pid}/exe", "--version"], capture_output=True, timeout=5, check=False
                ).stdout
            except (OSError, subprocess.TimeoutExpired):
                out = b""
            found = BASH_VERSION.search(out)
            known = found is None or (int(found.group(1)), int(found.group(2))) >= (4, 4)
            self._bash_ok[pid] = known
        return known

    def _info(self, pane_id: str, max_age: float = SNAPSHOT_SECONDS) -> PaneInfo | None:
        """One `list-panes` serves every idle session's probe in a round; a probe before typing
        (and the delivery after it) wants its pane's row milliseconds old, asked for alone."""
        if max_age <= SNAPSHOT_SECONDS:
            return self.table.fresh_row(pane_id, max_age)
        return self.table.row(pane_id, max_age)

    def probe(self, pane_id: str, *, dispatch: bool = True) -> Readiness:
        info = self._info(pane_id, SNAPSHOT_SECONDS if dispatch else IDLE_SNAPSHOT_SECONDS)
        if info is None:
            return Readiness(False, "pane_missing", "the pane is gone")
        if info.dead:
            return Readiness(False, "exited", "the pane's program has exited")
        why = self._supported(info)
        if why is not None:
            return Readiness(False, "unsupported", why)
        foreground = procfs.foreground_group(info.pid)
        if foreground is not None and foreground != info.pid:
            return Readiness(
                False, "unsupported", f"the shell is running {info.current_command}; nothing is typed until its prompt"
            )
        if info.in_mode:
            return Readiness(False, "idle", f"the pane is in {info.mode or 'a tmux mode'}; dispatch waits")
        if not dispatch:
            if pane_id not in self._piped and self._may_set_up_idle_copy():
                try:  # copied from now on: the first command need not wait for it
                    self.pane_log(pane_id)
                except TmuxUnavailable:
                    return Readiness(False, "pane_missing", "the pane did not answer")
            return Readiness(False, "idle", "")
        if not procfs.waiting_for_key(info.pid):
            return Readiness(False, "idle", "the shell is busy drawing its prompt", soon=self._just_ended(pane_id))
        self._check_pipe(info)
        try:
            log = self.pane_log(pane_id)
        except TmuxUnavailable:
            return Readiness(False, "pane_missing", "the pane did not answer")
        since_end = self._since_end(pane_id, log)
        if since_end is not None and since_end == self._prompt_bytes.get(pane_id):
            return Readiness(True, "idle", "")  # exactly the prompt drawn last time: nothing typed
        try:
            line = self.panes.screen_line(pane_id, info.cursor_y)
        except TmuxUnavailable:
            return Readiness(False, "pane_missing", "the pane did not answer")
        left, right = split_at_cursor(line, info.cursor_x)
        size = log.size()
        ended = self._ended_at.pop(pane_id, None)
        if ended is not None and not right.strip() and (looks_like_prompt(left) or time.monotonic() - ended < 1.0):
            self._prompts[pane_id] = PromptSignature(left, size)  # the prompt drawn after our command
        known = self._prompts.get(pane_id)
        empty = not right.strip() and (
            (known is not None and (known.log_size == size or known.text == left)) or looks_like_prompt(left)
        )
        if not empty:
            typed = (left + right).strip()
            return Readiness(
                False,
                "idle",
                f"the command line holds typed text ({typed[-60:]!r}); dispatch waits until it is empty",
                soon=self._just_ended(pane_id),  # or the prompt is only half drawn yet
            )
        if since_end is not None:
            self._prompt_bytes[pane_id] = since_end  # the shell's prompt redraw, to recognise next time
        return Readiness(True, "idle", "")

    def _may_set_up_idle_copy(self) -> bool:
        """Room for one more idle pane's copy this second (see IDLE_COPY_SETUPS_PER_SECOND); a
        pane left for later is set up at a later look, or by its first command."""
        now = self.table.monotonic()
        self._idle_setups = [at for at in self._idle_setups if now - at < 1.0]
        if len(self._idle_setups) >= IDLE_COPY_SETUPS_PER_SECOND:
            return False
        self._idle_setups.append(now)
        return True

    def _just_ended(self, pane_id: str) -> bool:
        """Our command ended in this pane less than a second ago: what keeps it from being ready
        (the prompt being drawn) is over in milliseconds, so the engine looks again soon. Later
        (a slow PROMPT_COMMAND, text a person typed) it waits for the normal poll."""
        return time.monotonic() - self._last_end.get(pane_id, float("-inf")) < JUST_ENDED_SECONDS

    def _since_end(self, pane_id: str, log: PaneLog) -> bytes | None:
        """What the pane printed after our last command's end mark (its prompt, and any typing)."""
        offset = self._after_end.get(pane_id)
        if offset is None:
            return None
        size = log.size()
        if size < offset or size - offset > 4096:
            return None
        return log.read_range(offset, size - offset)

    def shell_idle(self, pane_id: str) -> bool:
        """The pane's shell is back at its prompt with nothing left to read: it owns its terminal,
        waits for a key (not blocked writing, as under XOFF), and nothing typed waits in the
        terminal's input. A typed line still in a busy or stopped shell's input is not over."""
        info = self._info(pane_id)
        if info is None or info.dead:
            return False
        if procfs.foreground_group(info.pid) != info.pid or not procfs.waiting_for_key(info.pid):
            return False
        return not procfs.terminal_input_pending(info.tty)

    # one command ---------------------------------------------------------------------------
    def deliver(self, row: CommandRow, pane_id: str) -> None:
        info = self._info(pane_id)
        self._after_end.pop(pane_id, None)
        if info is not None:
            self._check_pipe(info)
        log = self.pane_log(pane_id)
        log.rotate_if_larger(PANE_LOG_LIMIT)
        files = CommandFiles(self.runtime_dir, channel_token(self.state_db, row.id, row.attempts))
        zsh = info is not None and (procfs.executable_name(info.pid) or info.current_command) == "zsh"
        erase = 0
        if info is not None and info.width > 0:
            erase = (info.cursor_x + display_width(files.typed_line(zsh))) // info.width + 1
        line = files.write_scripts(row.id, row.command, erase, zsh)
        shell = (info.pid, info.tty) if info is not None else None
        self._attempts[row.id] = Attempt(files, pane_id, log.size(), log, shell)
        self.watch(row.id)
        # Before typing, not after: a run killed in between leaves a line that may have been typed,
        # which a restart waits for and never types again (at most once, never twice).
        files.sent_file.touch()
        try:
            self.panes.send_text(pane_id, line)
        except BaseException:
            self.discard(row.id)
            raise

    def adopt(self, row: CommandRow, pane_id: str) -> bool:
        """After a restart: take up a command a previous run delivered (its attempt's files).
        False when its line was certainly never typed (the previous run died before typing)."""
        files = CommandFiles(self.runtime_dir, channel_token(self.state_db, row.id, row.attempts))
        if not (files.sent_file.exists() or files.started() or files.exit_file.exists()):
            files.remove()
            return False
        try:
            log = self.pane_log(pane_id) if pane_id else None
        except TmuxUnavailable:
            log = None
        if log is None:  # no pane to read now: the liveness check ends it
            log = PaneLog(self.runtime_dir / f"pane-{self.digest}-none.log")
        self._attempts[row.id] = Attempt(files, pane_id, max(0, log.find(files.token)), log)
        return True

    def watch(self, command_id: int) -> None:
        attempt = self._attempts.get(command_id)
        if attempt is not None:
            # ready only when the record is whole and after its start record (`read_exit`)
            self.watcher.watch(command_id, attempt.files.exit_file, attempt.exit_seen)

    def watching(self, command_id: int) -> bool:
        return self.watcher.watching(command_id)

    def started(self, command_id: int) -> bool:
        attempt = self._attempts.get(command_id)
        if attempt is not None and not attempt.started:
            attempt.started = attempt.files.started()
        return attempt is not None and attempt.started

    def end_record(self, command_id: int) -> ExitRecord | None:
        """The attempt's whole exit record, or None. While the watcher still waits for it (it
        drops a watch the moment the record is whole, and wakes the engine), the file is opened
        at most every EXIT_REREAD_SECONDS, a net under the watcher rather than an open per
        running command per round."""
        attempt = self._attempts.get(command_id)
        if attempt is None:
            return None
        if attempt.exit_record is not None:
            return attempt.exit_record
        now = time.monotonic()
        if self.watcher.watching(command_id) and now - attempt.exit_read_at < EXIT_REREAD_SECONDS:
            return None
        attempt.exit_read_at = now
        attempt.exit_record = attempt.files.read_exit()
        return attempt.exit_record

    def activity_marker(self, command_id: int) -> int:
        attempt = self._attempts.get(command_id)
        if attempt is None or not attempt.pane_id:
            return 0
        return attempt.log.size()

    def output_tail(self, command_id: int, lines: int, grace_seconds: float, until: int | None = None) -> str:
        attempt = self._attempts.get(command_id)
        if attempt is None or not attempt.pane_id:
            return ""
        return attempt.log.output(attempt.files.token, attempt.log_offset, lines, grace_seconds, until)

    def waiting_for_input(self, command_id: int) -> bool:
        """A foreground process of the pane is blocked reading the terminal (exact, from /proc)."""
        attempt = self._attempts.get(command_id)
        if attempt is None or not attempt.pane_id:
            return False
        if attempt.shell is None:  # adopted after a restart: asked of tmux once
            info = self.panes.pane_info(attempt.pane_id)
            if info is None or info.dead:
                return False
            attempt.shell = (info.pid, info.tty)
        pid, tty = attempt.shell
        return procfs.waiting_for_terminal_input(pid, tty) is not None  # a gone shell: None

    def question(self, command_id: int) -> str:
        """The line the person is asked (words on the screen, for the person only)."""
        attempt = self._attempts.get(command_id)
        if attempt is None or not attempt.pane_id:
            return ""
        try:
            lines = [line for line in self.panes.capture(attempt.pane_id, 20) if line.strip()]
        except TmuxUnavailable:
            return ""
        return lines[-1].strip() if lines else ""

    def type_reply(self, pane_id: str, text: str) -> None:
        self.panes.send_text(pane_id, text)

    def pending_approval(self, command_id: int) -> ApprovalRequest | None:
        """A shell command asks through the terminal (`waiting_input`), never for a tool approval."""
        return None

    def answer_approval(self, command_id: int, pane_id: str, approve: bool, note: str) -> None:
        raise ValueError("a shell session has no tool approvals")

    def interrupt(self, command_id: int, pane_id: str, keys: tuple[str, ...]) -> None:
        self.panes.send_keys(pane_id, *keys)

    def discard(self, command_id: int) -> None:
        self.watcher.forget(command_id)
        attempt = self._attempts.pop(command_id, None)
        if attempt is not None:
            attempt.files.remove()
            if attempt.pane_id:
                self._ended_at[attempt.pane_id] = self._last_end[attempt.pane_id] = time.monotonic()
                end = attempt.log.end_of(attempt.files.token, attempt.log_offset)
                if end is not None:
                    self._after_end[attempt.pane_id] = end

    def close(self) -> None:
        self.watcher.close()
