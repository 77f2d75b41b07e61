"""A test-managed subprocess whose output goes to a log file under its root."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path


class LoggedProcess:
    """Mixin: `spawn` starts `argv` logging to `root/log_name`; `stop` ends it (SIGTERM, then SIGKILL)."""

    root: Path
    log_name: str
    process: subprocess.Popen[bytes] | None

    @property
    def log_path(self) -> Path:
        return self.root / self.log_name

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log, cwd=str(self.root))
        return self.process

    def stop(self, timeout: float = 10) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=5)
