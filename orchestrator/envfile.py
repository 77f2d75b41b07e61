"""The environment as the orchestrator sees it: the process environment overlaid
with `~/.env` (path configurable), re-read while running so that removing or
restoring a variable takes effect without a restart.

The file is read as `set -a; . ~/.env` in bash reads it (the playbook sources it that way, so
the agents' panes and the orchestrator see the same values): see `read_env_text`.

A file that cannot be used is said, never a traceback and never silent: a line that is not
UTF-8, or that bash would not assign, is skipped and named (file, line, key) while the rest of
the file is read; an `env_file`
other than the default `~/.env` that does not exist is named once (a missing `~/.env` is normal).
Each problem is told once per process until the file changes.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dotenv.parser import parse_stream

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


@dataclass(frozen=True)
class EnvProblem:
    """A statement of the file that sets nothing: where, which key ('?' if none), why, and the fix."""

    line: int
    key: str
    reason: str

    def text(self) -> str:
        return f"line {self.line} ({self.key}): {self.reason}"


class _Unreadable(ValueError):
    """A value bash would read differently than as one string (or not at all): the reason and fix."""


_ASSIGNMENT = re.compile(r"(?P<lead>\s*)(?:export[ \t]+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)=", re.ASCII)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_OPERATORS = ";&|<>()"  # unquoted, bash ends the assignment there and does something else
_DOUBLE_QUOTE_ESCAPES = '$`"\\\n'  # the only characters a backslash escapes inside "..."
_QUOTE_FIX = "put the value in single quotes"


def parse_env_text(text: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`KEY=value` lines as `set -a; . FILE` sets them (see `read_env_text`)."""
    return read_env_text(text, base)[0]


def read_env_text(text: str, base: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[EnvProblem]]:
    """The values `set -a; . FILE` gives each key, and the statements that set nothing.

    python-dotenv's parser splits the text into statements (comments, blank lines, `export`,
    quoted values over several lines, line numbers); each value is then read by bash's rules —
    quotes, backslashes, `#` only at the start of a word, `$NAME` / `${NAME}` / `${NAME:-word}`
    against `base` (the process environment) and the keys assigned above it, never in single
    quotes, and `~` — because `dotenv_values` reads several values unlike bash (docs/configuration.md
    lists them). What bash would not assign, or would run as a command, is skipped and named.
    """
    scope = dict(base or {})
    values: dict[str, str] = {}
    problems: list[EnvProblem] = []
    for binding in parse_stream(io.StringIO(text)):
        if binding.key is None and not binding.error:
            continue  # blank lines and comments
        statement = binding.original.string
        found = _ASSIGNMENT.match(statement)
        line = binding.original.line + (found["lead"].count("\n") if found else _leading_lines(statement))
        if found is None:
            if binding.value is not None or binding.error:
                problems.append(
                    EnvProblem(line, binding.key or "?", "not a KEY=value line bash reads — write KEY=value")
                )
            continue
        key = found["key"]
        try:
            value = _assigned_value(statement[found.end() :], scope)
        except _Unreadable as exc:
            problems.append(EnvProblem(line, key, f"{exc}; skipped"))
            continue
        values[key] = scope[key] = value
    return values, problems


def _leading_lines(statement: str) -> int:
    return statement[: len(statement) - len(statement.lstrip())].count("\n")


def _assigned_value(text: str, scope: Mapping[str, str]) -> str:
    """The value of `KEY=<text>`; what follows it on the line may only be a comment."""
    value, end = _scan(text, 0, scope, "word")
    rest = text[end:].strip()
    if rest and not rest.startswith("#"):
        command = rest.split()[0]
        raise _Unreadable(f"bash would run `{command}` as a command (an unquoted space); {_QUOTE_FIX}")
    return value


_Mode = Literal["word", "brace", "dquote"]


def _scan(text: str, i: int, scope: Mapping[str, str], mode: _Mode) -> tuple[str, int]:
    """Read from `text[i]` as bash does: a whole assignment value (`word`: up to unquoted
    whitespace), a `${NAME:-word}` default (`brace`: up to its `}`) or the inside of double
    quotes (`dquote`: up to the closing quote). Returns the value and where reading stopped."""
    out: list[str] = []
    start = i
    while i < len(text):
        char = text[i]
        if mode == "word" and char in " \t\r\n":
            return "".join(out), i
        if (mode == "brace" and char == "}") or (mode == "dquote" and char == '"'):
            return "".join(out), i + (mode == "dquote")
        if char == "$":
            part, i = _dollar(text, i, scope)
            out.append(part)
            continue
        if char == "`":
            raise _Unreadable(f"`...` would run a command, tmuxagent does not; {_QUOTE_FIX}")
        if char == "\\" and i + 1 < len(text):
            escaped = text[i + 1]
            if mode == "dquote" and escaped not in _DOUBLE_QUOTE_ESCAPES:
                out.append(char)  # kept, and the next character is read as usual
                i += 1
                continue
            if escaped != "\n":  # backslash-newline joins the lines
                out.append(escaped)
            i += 2
            continue
        if mode != "dquote" and char in "'\"":
            part, i = _quoted(text, i, scope)
            out.append(part)
            continue
        if mode == "word" and char in _OPERATORS:
            raise _Unreadable(f"an unquoted `{char}` is a shell operator to bash; {_QUOTE_FIX}")
        if mode == "word" and char == "~" and (i == start or text[i - 1] == ":") and _tilde_ends(text, i + 1):
            out.append(scope.get("HOME", "~"))
        else:
            out.append(char)
        i += 1
    if mode == "word":
        return "".join(out), i
    raise _Unreadable("a `${` has no closing `}`" if mode == "brace" else 'a `"` is not closed')


def _tilde_ends(text: str, i: int) -> bool:
    return i >= len(text) or text[i] in "/: \t\r\n"


def _quoted(text: str, i: int, scope: Mapping[str, str]) -> tuple[str, int]:
    if text[i] == '"':
        return _scan(text, i + 1, scope, "dquote")
    end = text.find("'", i + 1)
    if end < 0:
        raise _Unreadable("a `'` is not closed")
    return text[i + 1 : end], end + 1  # single quotes: every character as written


def _dollar(text: str, i: int, scope: Mapping[str, str]) -> tuple[str, int]:
    """`$NAME`, `${NAME}`, `${NAME-word}`, `${NAME:-word}`, `${NAME+word}`, `${NAME:+word}`;
    a `$` before anything else bash would not expand is kept."""
    name = _NAME.match(text, i + 1)
    if name:
        return scope.get(name.group(), ""), name.end()
    if not text.startswith("${", i):
        follower = text[i + 1 : i + 2]
        if follower and follower in "(`'\"0123456789*@#?-$!":
            raise _Unreadable(f"bash would expand `${follower}`, tmuxagent does not; {_QUOTE_FIX}")
        return "$", i + 1
    name = _NAME.match(text, i + 2)
    after = name.end() if name else i + 2
    operator = next((op for op in (":-", ":+", "-", "+", "}") if text.startswith(op, after)), None)
    if name is None or operator is None:
        raise _Unreadable(f"only ${{NAME}}, ${{NAME:-default}} and ${{NAME:+other}} are expanded; {_QUOTE_FIX}")
    current = scope.get(name.group())
    if operator == "}":
        return current or "", after + 1
    word, end = _scan(text, after + len(operator), scope, "brace")
    present = current is not None and (current != "" or not operator.startswith(":"))
    chosen = (word if present else "") if operator.endswith("+") else (current or "" if present else word)
    return chosen, end + 1


def decode_env_bytes(raw: bytes) -> tuple[str, list[tuple[int, str]]]:
    """The file's text, and (line number, key or '?') for each line that is not UTF-8.

    A UTF-8 byte order mark (Windows editors write one) is not part of the first key. A line that
    is not UTF-8 becomes an empty line, so the lines after it keep their numbers in what is said."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    good: list[str] = []
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            good.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            good.append("")
            found = _ASSIGNMENT.match(line.decode("utf-8", "replace"))
            bad.append((number, found["key"] if found else "?"))
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

    def _tell_problems(self, path: Path, problems: list[EnvProblem]) -> None:
        where = "; ".join(problem.text() for problem in problems)
        _tell_once(path, f"syntax:{where}", f"env_file {path}: {where}", self.warn)

    def current(self) -> dict[str, str]:
        """Values in the file override the process environment; an empty value unsets."""
        with self._lock:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                text = self._read(self.env_file) if stamp and self.env_file else ""
                self._file_values, problems = read_env_text(text, self.base)
                if problems and self.env_file is not None:
                    self._tell_problems(self.env_file, problems)
                register_from_env(self._file_values)
            merged = {**self.base, **self._file_values}
        return {k: v for k, v in merged.items() if v != ""}
