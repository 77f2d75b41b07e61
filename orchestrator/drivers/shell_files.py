"""Exact command feedback without scraping the screen, on the pane's own terminal.

A command is written to a small script that the pane's own shell *sources*, so `cd` and
`export` keep their effect and the command runs on the pane's terminal exactly as if a person had
typed it (`isatty()` is true, colours and line buffering behave). A second sourced script, run
right after the first, writes the exit code and the shell's own start/end clock to a file with
the shell's builtins only (`printf … > rc-TOKEN`: nothing is forked in the pane, no `mv`, no
`tmux wait-for`). The orchestrator learns of it from the kernel (`file_watch`: inotify on the
runtime directory). There is no atomic rename any more, so the record ends with the word `end`
and a reader takes only a record that has it: one read while the shell is mid-write is no result.

Every dispatch attempt has its own token (state DB, command id, attempt), so the files of one
attempt can never be mistaken for another's, and an exit record is written only when that
attempt's own start record exists: a typed line that did not start the command as sent (text was
already on the prompt, the shell dropped it) leaves no result to accept.

The output tail and the activity signal come from tmux: everything the pane's program writes is
copied into a per-pane log (the `PaneIO` port's `copy_output`: tmux's `%output` stream, or
`pipe-pane`), and the body brackets the command's output with two invisible
OSC sequences carrying the token (tmux drops unknown OSC sequences from the screen; the raw log
keeps them). The markers only delimit the output tail; the result never depends on them.

What the person watching sees: the typed line is erased and replaced by a dim `▶ #12 make test`
header; bash's history gets the user's command instead of the internal line.
"""

from __future__ import annotations

import os
import re
import shlex
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from orchestrator.model import ExitRecord

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
TAIL_READ_BYTES = 64 * 1024
MARK_PREFIX = "\x1b]7701;"
HEADER_MAX_CHARS = 160
RECORD_END = "end"  # the exit record's last word: without it the record is still being written
_RECORD_END_BYTES = RECORD_END.encode()
EXIT_RECORD_MAX_BYTES = 256  # `RC T0 T1 end\n`: a longer file is no record of ours
# The end mark reaches the log a moment after the exit record (through tmux and the output
# client: p50 0.4 ms, p95 4 ms on the loaded 2-core box), so the tail looks again this soon.
MARK_POLL_SECONDS = 0.001


def mark(kind: str, token: str) -> bytes:
    return f"{MARK_PREFIX}{kind};{token}\x07".encode()


def display_width(text: str) -> int:
    """Terminal cells a string takes (wide CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def header_text(command_id: int, command: str) -> str:
    first = " ".join(command.strip().splitlines()[0].split()) if command.strip() else ""
    more = " …" if len(command.strip().splitlines()) > 1 or len(first) > HEADER_MAX_CHARS else ""
    clean = "".join(ch for ch in first[:HEADER_MAX_CHARS] if ch.isprintable())
    return f"▶ #{command_id} {clean}{more}"


HEADER_LINE = re.compile(r"^▶ #\d+ ")


def is_header_line(line: str) -> bool:
    """A `▶ #12 make test` line the driver printed in place of the typed line."""
    return HEADER_LINE.match(line) is not None


@dataclass(frozen=True)
class CommandFiles:
    """The files of one dispatch attempt in the runtime directory."""

    run_dir: Path
    token: str

    def _path(self, kind: str, suffix: str = "") -> Path:
        return self.run_dir / f"{kind}-{self.token}{suffix}"

    @property
    def body(self) -> Path:
        return self._path("c", ".sh")

    @property
    def epilogue(self) -> Path:
        return self._path("p", ".sh")

    @property
    def exit_file(self) -> Path:
        return self._path("rc")

    @property
    def start_file(self) -> Path:
        return self._path("start")

    @property
    def history_file(self) -> Path:
        """bash's last history entry, written and read back by the body's builtins."""
        return self._path("h")

    @property
    def sent_file(self) -> Path:
        """Written right before the line is typed: without it, a restart knows it never was."""
        return self._path("sent")

    def all(self) -> list[Path]:
        return [self.body, self.epilogue, self.exit_file, self.start_file, self.sent_file, self.history_file]

    def typed_line(self, zsh: bool = False) -> str:
        """The one line typed. zsh aborts the whole line on a fatal error in a sourced file
        (`${X:?}`, `$((1/0))`), so there the epilogue runs from an `always` block."""
        q = shlex.quote
        if zsh:
            return f" {{ . {q(str(self.body))}; }} always {{ . {q(str(self.epilogue))}; }}"
        return f" . {q(str(self.body))}; . {q(str(self.epilogue))}"

    def write_scripts(self, command_id: int, command: str, erase_rows: int, zsh: bool = False) -> str:
        """Write both scripts and return the one short line to type into the pane."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        q = shlex.quote
        # bash ≥ 5 has EPOCHREALTIME, zsh has it from zsh/datetime (loaded below): only an older
        # bash forks `date`.
        now = "${EPOCHREALTIME:-$(date +%s.%N)}"
        token = self.token
        header = header_text(command_id, command)
        erase = f"\\033[{erase_rows}A\\r\\033[{erase_rows}M" if erase_rows > 0 else "\\r"
        body = (
            "__ta_e=${-//[^e]/}; set +e; unset __ta_done\n"
            '[ -n "${ZSH_VERSION:-}" ] && zmodload zsh/datetime 2>/dev/null\n'
            # history: the user's command, never the internal line (bash); zsh skips our lines from
            # the second dispatch on (its hook cannot see the first).
            # the last entry read back through a file, not `$(…)`: a subshell is a fork per command
            'if [ -n "${BASH_VERSION:-}" ] && shopt -oq history; then\n'
            f"  HISTTIMEFORMAT= builtin history 1 2>/dev/null >{q(str(self.history_file))}\n"
            f"  __ta_h=; IFS= read -r __ta_h 2>/dev/null <{q(str(self.history_file))}\n"
            f'  case "$__ta_h" in *{q(token)}*) __ta_h=${{__ta_h#"${{__ta_h%%[! ]*}}"}};'
            ' builtin history -d "${__ta_h%% *}" 2>/dev/null;; esac\n'
            f"  builtin history -s -- {q(command)}\n"
            'elif [ -n "${ZSH_VERSION:-}" ]; then\n'
            f'  __ta_skip() {{ [[ "$1" != *{q(str(self.run_dir))}* ]]; }}\n'
            "  autoload -Uz add-zsh-hook 2>/dev/null && add-zsh-hook zshaddhistory __ta_skip 2>/dev/null\n"
            f"  print -s -- {q(command)}\n"
            "fi\n"
            f"printf '{erase}\\033[2m%s\\033[0m\\n' {q(header)}\n"
            f"printf '\\033]7701;s;%s\\007' {q(token)}\n"
            f"__ta_t0={now}\n"
            f"printf '%s\\n' \"$__ta_t0\" > {q(str(self.start_file))}\n"
            # eval, not the command's own lines in this file: the shell's error messages then name
            # `eval`, never this script's path, and `cd` / `export` still act on the pane's shell.
            f"__ta_cmd={q(command)}\n"
            'eval "$__ta_cmd"\n'
            "__ta_rc=$?; __ta_done=1\n"
        )
        epilogue = (
            # The body records the command's status itself; a body that did not get there was cut
            # short by a shell error (zsh: `${X:?}`, `$((1/0))`), which typed at the prompt leaves 1.
            'if [ -z "${__ta_done:-}" ]; then __ta_rc=1; fi\n'
            '[ -n "${ZSH_VERSION:-}" ] && TRY_BLOCK_ERROR=0\n'
            f"printf '\\033]7701;e;%s\\007' {q(token)}\n"
            f"if [ -e {q(str(self.start_file))} ]; then\n"
            f"  __ta_t1={now}\n"
            # one builtin write, closed at once: the close is the orchestrator's signal (inotify)
            f'  printf \'%s %s %s {RECORD_END}\\n\' "$__ta_rc" "${{__ta_t0:-$__ta_t1}}" "$__ta_t1"'
            f" > {q(str(self.exit_file))}\n"
            "fi\n"
            "unset __ta_t0 __ta_t1 __ta_h __ta_cmd __ta_done\n"
            # Under `set -e` from the user's rc a non-zero status here would end the shell: the
            # exact code is in the exit record, the prompt's $? shows 0.
            'if [ -n "${__ta_e:-}" ]; then unset __ta_e; set -e; return 0; fi\n'
            'return "$__ta_rc" 2>/dev/null\n'
        )
        _write_private(self.body, body)
        _write_private(self.epilogue, epilogue)
        _write_private(self.history_file, "")  # the shell's `>` keeps an existing file's mode
        return self.typed_line(zsh)

    def read_exit(self) -> ExitRecord | None:
        """The attempt's exit record — only ever written after its own start record, and taken
        only whole (`RC T0 T1 end`): a shell still writing it leaves no result yet."""
        # The record first: while the command runs (every round asks) one failed open, no more.
        # Plain os calls: this read is on the way from the command's end to its result, and a
        # thread waking from sleep runs each Python call many times slower than a warm one.
        try:
            fd = os.open(self.exit_file, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            data = os.read(fd, EXIT_RECORD_MAX_BYTES + 1)
        finally:
            os.close(fd)
        parts = data.split()
        if len(data) > EXIT_RECORD_MAX_BYTES or len(parts) != 4 or parts[3] != _RECORD_END_BYTES:
            return None
        if not os.path.exists(self.start_file):
            return None
        try:
            return ExitRecord(int(parts[0]), float(parts[1]), float(parts[2]))
        except ValueError:
            return None

    def started(self) -> bool:
        return self.start_file.exists()

    def remove(self) -> None:
        for path in self.all():
            path.unlink(missing_ok=True)


def _write_private(path: Path, text: str) -> None:
    """Readable by the user alone (0600): the scripts hold the command as sent, which may carry a
    secret, and the history file the shell's last entry, which may be a line the user typed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)  # an older file of that name keeps its mode through O_CREAT
        out.write(text)


@dataclass(frozen=True)
class PaneLog:
    """Everything a pane's program wrote, as `PaneIO.copy_output` appends it (the `%output`
    stream or `pipe-pane`)."""

    path: Path

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def output(self, token: str, since: int, lines: int, grace_seconds: float, until: int | None = None) -> str:
        """The command's output between its start and end marks (waiting, bounded, for the end
        mark to arrive through tmux); before the end, everything since the start mark. Reads at
        most two windows of the log, however much the command printed."""
        start_mark, end_mark = mark("s", token), mark("e", token)
        deadline = time.monotonic() + grace_seconds
        while True:
            head = self._read(since, TAIL_READ_BYTES)
            found = head.find(start_mark)
            if found < 0:
                if time.monotonic() >= deadline:
                    return ""
                time.sleep(MARK_POLL_SECONDS)
                continue
            start = since + found + len(start_mark)
            stop = self.size() if until is None else max(start, until)
            window = max(start, stop - 4 * TAIL_READ_BYTES)
            data = self._read(window, stop - window)
            end = data.find(end_mark)
            if end >= 0 or until is not None or time.monotonic() >= deadline:
                break
            time.sleep(MARK_POLL_SECONDS)
        body = data[: end if end >= 0 else len(data)]
        return clean_tail(body[-TAIL_READ_BYTES:].decode("utf-8", errors="replace"), lines)

    def _read(self, offset: int, length: int | None) -> bytes:
        try:
            with self.path.open("rb") as fh:
                fh.seek(offset)
                return fh.read() if length is None else fh.read(length)
        except FileNotFoundError:
            return b""

    def read_range(self, offset: int, length: int) -> bytes:
        return self._read(offset, length)

    def end_of(self, token: str, since: int) -> int | None:
        """The offset just past the token's end mark, or None when it is not (yet) in the log."""
        end_mark = mark("e", token)
        window = max(since, self.size() - 4 * TAIL_READ_BYTES)
        found = self._read(window, None).find(end_mark)
        return None if found < 0 else window + found + len(end_mark)

    def find(self, token: str) -> int:
        """Where the token's start mark is in the log, or -1 (for a command adopted after a restart)."""
        try:
            return self.path.read_bytes().find(mark("s", token))
        except FileNotFoundError:
            return -1

    def rotate_if_larger(self, limit: int) -> None:
        """Empty the log between commands (the copy appends, `O_APPEND` or `cat >>`, at the new end)."""
        if self.size() > limit:
            with self.path.open("r+b") as fh:
                fh.truncate(0)


def clean_tail(text: str, lines: int) -> str:
    """Strip terminal escapes and carriage-return redraws, keep the last lines."""
    text = ANSI.sub("", text)
    out = []
    for line in text.split("\n"):
        if "\r" in line:
            pieces = [p for p in line.split("\r") if p]
            line = pieces[-1] if pieces else ""
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    while out and not out[0].strip():
        out.pop(0)
    return "\n".join(out[-lines:])
