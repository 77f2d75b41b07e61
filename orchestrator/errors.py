"""Errors a user can fix. The CLIs turn them into one line and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: names the file, the key and what to do. Never shown with a traceback."""

    exit_code = 2

    def __init__(
        self, message: str, *, file: str | None = None, key: str | None = None, fix: str | None = None
    ) -> None:
        self.file = file
        self.key = key
        self.fix = fix
        self.detail = message
        super().__init__(self.render())

    def render(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file)
        if self.key:
            parts.append(f"key '{self.key}'")
        head = ": ".join(parts)
        text = f"{head}: {self.detail}" if head else self.detail
        if self.fix:
            text += f" — {self.fix}"
        return " ".join(text.split())


class ConfigError(UserError):
    pass


class PaneNotFound(UserError):
    pass


class TmuxUnavailable(RuntimeError):
    """The tmux server is gone or not answering; callers record it and retry later."""
