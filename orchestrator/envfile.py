"""The environment as the orchestrator sees it: the process environment overlaid
with `~/.env` (path configurable), re-read while running so that removing or
restoring a variable takes effect without a restart.
"""

from __future__ import annotations

import os
import shlex
import threading
from collections.abc import Mapping
from pathlib import Path

from orchestrator.redact import register_from_env


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


class EnvSource:
    """Snapshot of process env + env file, refreshed when the file changes."""

    def __init__(self, env_file: Path | None, base: Mapping[str, str] | None = None) -> None:
        self.env_file = env_file
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
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def current(self) -> dict[str, str]:
        """Values in the file override the process environment; an empty value unsets."""
        with self._lock:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    text = self.env_file.read_text(encoding="utf-8") if stamp and self.env_file else ""
                except OSError:
                    text = ""
                self._file_values = parse_env_text(text)
                register_from_env(self._file_values)
            merged = {**self.base, **self._file_values}
        return {k: v for k, v in merged.items() if v != ""}
