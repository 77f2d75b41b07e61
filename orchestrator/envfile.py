"""The environment as the orchestrator sees it: the process environment overlaid
with `~/.env` (path configurable), re-read while running so that removing or
restoring a variable takes effect without a restart.

A file that cannot be used is said, never a traceback and never silent: a line that is not
UTF-8 is skipped and named (file, line, key) while the rest of the file is read; an `env_file`
other than the default `~/.env` that does not exist is named once (a missing `~/.env` is normal).
Each problem is told once per process until the file changes.
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from orchestrator.redact import register_from_env

log = logging.getLogger("orchestrator.envfile")

DEFAULT_ENV_FILE = Path("~/.env").expanduser()

_told_lock = threading.Lock()
_told: set[tuple[str, str]] = set()  # (file, problem) already said in this process


def _tell_once(path: Path, problem: str, message: str, warn: Callable[[str], None]) -> None:
    with _told_lock:
        if (str(path), problem) in _told:
            return
        _told.add((str(path), problem))
    warn(message)


def _forget(path: Path, problem: str) -> None:
    with _told_lock:
        _told.discard((str(path), problem))


def parse_env_text(text: str) -> dict[str, str]:
    """`KEY=value` lines as a shell would read them: comments, `export`, quotes."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, _, value = line.partition("=")
        key = key.strip()
        if not key.replace("_", "").isalnum():
            continue
        try:
            words = shlex.split(value, comments=True)
        except ValueError:
            words = [value.strip()]
        values[key] = " ".join(words)
    return values


def decode_env_bytes(raw: bytes) -> tuple[str, list[tuple[int, str]]]:
    """The file's UTF-8 lines, and (line number, key or '?') for each line that is not UTF-8."""
    good: list[str] = []
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            good.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            key, eq, _ = line.partition(b"=")
            name = key.decode("utf-8", "replace").strip()
            name = name[len("export ") :].strip() if name.startswith("export ") else name
            bad.append((number, name if eq and name.replace("_", "").isalnum() else "?"))
    return "\n".join(good), bad


class EnvSource:
    """Snapshot of process env + env file, refreshed when the file changes.

    `required`: say when the file is missing (default: when it is not the default `~/.env`).
    `warn`: where problems with the file are said (default: the `orchestrator.envfile` logger)."""

    def __init__(
        self,
        env_file: Path | None,
        base: Mapping[str, str] | None = None,
        *,
        required: bool | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.env_file = env_file
        self.required = (env_file is not None and env_file != DEFAULT_ENV_FILE) if required is None else required
        self.warn = warn or log.warning
        self.base = dict(os.environ if base is None else base)
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._file_values: dict[str, str] = {}
        register_from_env(self.base)

    def _file_stamp(self) -> tuple[float, int] | None:
        if self.env_file is None:
            return None
        try:
            st = self.env_file.stat()
        except FileNotFoundError:
            if self.required:
                _tell_once(
                    self.env_file,
                    "missing",
                    f"env_file {self.env_file} not found: its variables are not set — create it, "
                    "or fix env_file in orchestrator.toml",
                    self.warn,
                )
            return None
        except OSError as exc:
            _tell_once(self.env_file, "stat", f"env_file {self.env_file}: cannot read ({exc.strerror})", self.warn)
            return None
        _forget(self.env_file, "missing")
        return (st.st_mtime, st.st_size)

    def _read(self, path: Path) -> str:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            _tell_once(
                path, "read", f"env_file {path}: cannot read ({exc.strerror}) — check its permissions", self.warn
            )
            return ""
        _forget(path, "read")
        text, bad = decode_env_bytes(raw)
        if bad:
            where = ", ".join(f"line {n} ({key})" for n, key in bad)
            _tell_once(
                path,
                f"utf8:{bad}",
                f"env_file {path}: {where} not UTF-8, skipped — save the file as UTF-8",
                self.warn,
            )
        return text

    def current(self) -> dict[str, str]:
        """Values in the file override the process environment; an empty value unsets."""
        with self._lock:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                text = self._read(self.env_file) if stamp and self.env_file else ""
                self._file_values = parse_env_text(text)
                register_from_env(self._file_values)
            merged = {**self.base, **self._file_values}
        return {k: v for k, v in merged.items() if v != ""}
