"""Exact command feedback without scraping the screen.

A command is written to a small script that the pane's own shell *sources*, so
`cd` and `export` keep their effect. A second sourced script, run right after
the first, writes the exit code and the shell's own start/end clock to a file
(atomically, via rename) and wakes the orchestrator with `tmux wait-for -S`.
The command's output is teed to a per-command file, which is both the output
tail and the activity signal for stall detection. Nothing depends on a marker
printed to the screen, so a command cannot fake, split or scroll away its result.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.model import ExitRecord

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
TAIL_READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class CommandFiles:
    """The files of one dispatched command in the runtime directory."""

    run_dir: Path
    token: str

    def _path(self, kind: str, suffix: str = "") -> Path:
        return self.run_dir / f"{kind}-{self.token}{suffix}"

    @property
    def body(self) -> Path:
        return self._path("cmd", ".sh")

    @property
    def epilogue(self) -> Path:
        return self._path("post", ".sh")

    @property
    def exit_file(self) -> Path:
        return self._path("rc")

    @property
    def start_file(self) -> Path:
        return self._path("start")

    @property
    def output(self) -> Path:
        return self._path("out")

    @property
    def tee_done(self) -> Path:
        return self._path("teedone")

    @property
    def channel(self) -> str:
        return f"tmuxagent-{self.token}"

    def all(self) -> list[Path]:
        return [
            self.body,
            self.epilogue,
            self.exit_file,
            self.start_file,
            self.output,
            self.tee_done,
            self._path("rc", ".tmp"),
        ]

    def write_scripts(self, command: str, tmux_socket: str) -> str:
        """Write both scripts and return the one short line to type into the pane."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        q = shlex.quote
        now = "${EPOCHREALTIME:-$(date +%s.%N)}"
        body = (
            f"__ta_t0={now}\n"
            f"printf '%s\\n' \"$__ta_t0\" > {q(str(self.start_file))}\n"
            "{\n"
            f"{command}\n"
            f"}} > >(tee -a {q(str(self.output))}; : > {q(str(self.tee_done))}) 2>&1\n"
        )
        tmp = q(str(self._path("rc", ".tmp")))
        epilogue = (
            "__ta_rc=$?\n"
            f"__ta_t1={now}\n"
            f'printf \'%s %s %s\\n\' "$__ta_rc" "${{__ta_t0:-$__ta_t1}}" "$__ta_t1" > {tmp}'
            f" && mv -f {tmp} {q(str(self.exit_file))}\n"
            f"tmux -S {q(tmux_socket)} wait-for -S {q(self.channel)} 2>/dev/null\n"
            "unset __ta_t0 __ta_t1\n"
            'return "$__ta_rc" 2>/dev/null\n'
        )
        self.body.write_text(body, encoding="utf-8")
        self.epilogue.write_text(epilogue, encoding="utf-8")
        return f" . {q(str(self.body))}; . {q(str(self.epilogue))}"

    def read_exit(self) -> ExitRecord | None:
        try:
            parts = self.exit_file.read_text(encoding="utf-8").split()
            return ExitRecord(int(parts[0]), float(parts[1]), float(parts[2]))
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def started(self) -> bool:
        return self.start_file.exists()

    def output_size(self) -> int:
        try:
            return self.output.stat().st_size
        except FileNotFoundError:
            return 0

    def read_tail(self, lines: int, tee_grace_seconds: float = 0.5) -> str:
        """The last lines of output, once the tee has flushed (bounded wait)."""
        deadline = time.monotonic() + tee_grace_seconds
        while not self.tee_done.exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        try:
            with self.output.open("rb") as fh:
                fh.seek(0, 2)
                size = fh.tell()
                fh.seek(max(0, size - TAIL_READ_BYTES))
                data = fh.read()
        except FileNotFoundError:
            return ""
        return clean_tail(data.decode("utf-8", errors="replace"), lines)

    def remove(self) -> None:
        for path in self.all():
            path.unlink(missing_ok=True)


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
    return "\n".join(out[-lines:])
