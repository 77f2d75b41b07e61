"""A scriptable stand-in for the ``codex`` CLI, installed as a real executable.

The orchestrator shells out to ``codex`` (found on PATH or via ``[codex] bin``), so the fake
must be a real program, not a monkeypatch: that exercises argv building, stdin piping, timeouts,
kill-on-hang and parsing of messy output exactly as in production. Behaviour is driven by a JSON
script file next to the executable, so a test can change the next answer without reinstalling,
and every invocation is logged (without secrets) so tests can assert what was asked.

With ``--json`` the answer comes as a ``codex exec --json`` event stream (the final
``item.completed`` agent message); ``-o/--output-last-message FILE`` gets the bare message either
way, and the JSON Schema passed with ``--output-schema FILE`` is recorded with the call. An
``event_error`` reply is a failing model request as codex streams it (``error`` events, then a
``turn.failed``, or retries for ever).

Only options the pinned real ``codex exec`` has are accepted (``codex_exec_flags.json``, taken
from its ``--help``): anything else is refused as the real CLI refuses it — exit 2, ``error:
unexpected argument '--x' found`` and "For more information, try '--help'." — so a flag the
real CLI dropped fails here too. A refused call is logged (``refused``) and consumes no reply.

Files in ``bin_dir``: ``codex`` (the program), ``codex.script.json`` (replies),
``codex.state`` (index of the next reply), ``codex.calls.jsonl`` (one line per call) and
``codex.lock`` (serialises concurrent calls so replies are consumed exactly once each).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from .waiting import wait_until

__all__ = [
    "DEFAULT_REPLY",
    "EXEC_FLAGS_FILE",
    "REPLY_KINDS",
    "VERSION_TEXT",
    "FakeCodex",
    "exec_flags",
    "exec_flags_of",
    "parse_exec_help",
]

REPLY_KINDS = frozenset({"json", "fenced", "garbage", "hang", "exit", "slow", "event_error"})
VERSION_TEXT = "codex-cli 0.0.0-fake"
DEFAULT_REPLY: dict[str, Any] = {
    "kind": "json",
    "payload": {"summary": "fake codex default reply", "next_actions": [], "blockers": []},
}
EXEC_FLAGS_FILE = Path(__file__).with_name("codex_exec_flags.json")
"""The options of the pinned real `codex exec` (`parse_exec_help` of its `--help`); the fake
refuses any other, as the real CLI does. tests/test_fake_codex.py regenerates it from the real
binary and fails when it drifts."""
ALSO_REPEATABLE = ("--config", "--add-dir")
"""Options the real CLI takes more than once although its help does not say so (probed by hand
against 0.171.0: `-c a=1 -c b=2`, `--add-dir A --add-dir B`)."""

_OPTION_LINE = re.compile(
    r"^ {2}(?:(?P<short>-\w), | {4})(?P<long>--[\w-]+)(?: <(?P<value>[^>]+)>(?P<multiple>\.\.\.)?)?\s*$"
)
_POSSIBLE = re.compile(r"^\s+\[possible values: (?P<values>[^\]]+)\]")


def parse_exec_help(text: str) -> list[dict[str, Any]]:
    """The options of `codex exec --help`: long and short names, the value's name (None for a
    flag), whether it takes several values or may be repeated, and its possible values."""
    options: list[dict[str, Any]] = []
    for line in text.splitlines():
        match = _OPTION_LINE.match(line)
        if match:
            options.append(
                {
                    "long": match["long"],
                    "short": match["short"],
                    "value": match["value"],
                    "multiple": bool(match["multiple"]),
                    "repeatable": bool(match["multiple"]) or match["long"] in ALSO_REPEATABLE,
                    "values": None,
                }
            )
            continue
        possible = _POSSIBLE.match(line)
        if possible and options:
            options[-1]["values"] = [v.strip() for v in possible["values"].split(",")]
        elif options and "(repeatable)" in line:
            options[-1]["repeatable"] = True
    return options


def exec_flags_of(binary: os.PathLike[str] | str, timeout: float = 30.0) -> dict[str, Any]:
    """What `EXEC_FLAGS_FILE` holds, read from a real codex: its version and `exec --help` options."""
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=timeout)
    helped = subprocess.run([str(binary), "exec", "--help"], capture_output=True, text=True, timeout=timeout)
    return {
        "version": version.stdout.strip(),
        "source": "codex exec --help",
        "options": parse_exec_help(helped.stdout),
    }


def exec_flags() -> dict[str, Any]:
    """The stored options of the pinned `codex exec` (`{"version", "options"}`)."""
    data: dict[str, Any] = json.loads(EXEC_FLAGS_FILE.read_text(encoding="utf-8"))
    return data


# The program is plain stdlib Python so it runs under the interpreter that runs the tests.
_PROGRAM = r'''
import fcntl, json, os, sys, threading, time

HERE = os.path.dirname(os.path.realpath(__file__))
VERSION_TEXT = %(version)r
DEFAULT_REPLY = %(default)r
OPTIONS = %(options)r  # the pinned real `codex exec --help` options
USAGE = "Usage: codex exec [OPTIONS] [PROMPT]\n       codex exec [OPTIONS] <COMMAND> [ARGS]\n"
MORE = "For more information, try '--help'.\n"


class UsageError(Exception):
    """What clap (the real CLI's parser) prints, and exit 2."""


def shown(option):
    return option["long"] + (" <%%s>" %% option["value"] if option["value"] else "")


def unexpected(arg):
    tip = "\n  tip: to pass '%%s' as a value, use '-- %%s'\n" %% (arg, arg) if arg.startswith("-") else ""
    return UsageError("error: unexpected argument '%%s' found\n%%s\n%%s\n%%s" %% (arg, tip, USAGE, MORE))


def check_exec_args(args):
    """The real CLI's verdict on `exec ARGS`: unknown options, missing or invalid values, an
    option given twice, a second positional argument — each refused as clap words it."""
    by_name = {}
    for option in OPTIONS:
        by_name[option["long"]] = option
        if option["short"]:
            by_name[option["short"]] = option
    seen, positionals, i = set(), 0, 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positionals += len(args) - i
            break
        if arg == "-" or not arg.startswith("-"):
            positionals += 1
            if positionals > 1:
                raise unexpected(arg)
            continue
        name, attached = arg, None
        if arg.startswith("--") and "=" in arg:
            name, attached = arg.split("=", 1)
        elif not arg.startswith("--") and len(arg) > 2:
            name, attached = arg[:2], arg[2:]
        option = by_name.get(name)
        if option is None:
            raise unexpected(name)
        if option["long"] in seen and not option["repeatable"]:
            raise UsageError("error: the argument '%%s' cannot be used multiple times\n\n%%s\n%%s" %% (shown(option), USAGE, MORE))
        seen.add(option["long"])
        if not option["value"]:
            if attached is not None:
                raise UsageError("error: unexpected value '%%s' for '%%s' found; no more were expected\n\n%%s\n%%s" %% (attached, name, USAGE, MORE))
            continue
        if attached is None:
            if i >= len(args) or (args[i].startswith("-") and args[i] != "-"):
                raise UsageError("error: a value is required for '%%s' but none was supplied\n\n%%s" %% (shown(option), MORE))
            attached = args[i]
            i += 1
        if option["values"] and attached not in option["values"]:
            raise UsageError("error: invalid value '%%s' for '%%s'\n  [possible values: %%s]\n\n%%s" %% (attached, shown(option), ", ".join(option["values"]), MORE))


def path(suffix):
    return os.path.join(HERE, "codex." + suffix)


def read_stdin():
    """Read piped stdin, but never block forever on a pipe the caller leaves open."""
    if sys.stdin is None or sys.stdin.isatty():
        return ""
    chunks, done = [], threading.Event()

    def pump():
        try:
            for chunk in iter(lambda: os.read(0, 65536), b""):
                chunks.append(chunk)
        except OSError:
            pass
        done.set()

    threading.Thread(target=pump, daemon=True).start()
    done.wait(float(os.environ.get("FAKE_CODEX_STDIN_GRACE", "1.0")))
    return b"".join(chunks).decode("utf-8", "replace")


def load_path(file, default=None):
    try:
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return default


def load(name, default):
    return load_path(path(name), default)


def record(entry, consume):
    """Append the call to the log and, if asked, take the next reply; one lock for both."""
    with open(path("lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        reply = None
        if consume:
            replies, index = load("script.json", []), load("state", 0)
            with open(path("state"), "w") as f:
                f.write(str(index + 1))
            reply = replies[min(index, len(replies) - 1)] if replies else DEFAULT_REPLY
            entry.update(reply_index=index, reply_kind=reply.get("kind", "json"))
        with open(path("calls.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        return reply


def flag_value(argv, *names):
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            return argv[i + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def output_path(argv):
    return flag_value(argv, "-o", "--output-last-message")


START = ({"type": "thread.started", "thread_id": "fake-thread"}, {"type": "turn.started"})


def events(message):
    """What `codex exec --json` prints: JSONL thread/turn/item events, the answer last."""
    item = {"id": "item_0", "type": "agent_message", "text": message}
    for event in (*START, {"type": "item.completed", "item": item},
                  {"type": "turn.completed", "usage": {"input_tokens": 1, "output_tokens": 1}}):
        yield json.dumps(event, ensure_ascii=False)


def emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def event_error(reply, as_json):
    """A failing model request as codex reports it: an `error` event per retry, then (`then`:
    "fail") a final `error` + `turn.failed` and exit 1, or ("hang", the default) retries that
    never end, as codex does while the network is down."""
    message = reply.get("payload") or "unexpected status 401 Unauthorized: Incorrect API key provided."
    retries = int(reply.get("retries", 1))
    if not as_json:
        sys.stderr.write("ERROR: %%s\n" %% message)
        return 1
    for event in START:
        emit(json.dumps(event))
    for n in range(1, retries + 1):
        emit(json.dumps({"type": "error", "message": "Reconnecting... %%d/5 (%%s)" %% (n, message)}))
    if reply.get("then", "hang") == "hang":
        while True:
            time.sleep(3600)
    emit(json.dumps({"type": "error", "message": message}))
    emit(json.dumps({"type": "turn.failed", "error": {"message": message}}))
    return 1


def render(kind, payload):
    as_json = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    if kind in ("json", "slow"):
        return as_json
    if kind == "fenced":
        body = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, indent=2)
        return "I looked at the pane output. Here is my decision:\n\n```json\n%%s\n```\n\nHope this helps!" %% body
    if kind == "garbage":
        return payload if isinstance(payload, str) else "Hmm, I am not sure what to do here (no JSON, sorry)."
    raise SystemExit("fake codex: unknown reply kind %%r" %% kind)


def main(argv):
    entry = {
        "argv": argv, "cwd": os.getcwd(), "pid": os.getpid(), "time": time.time(), "stdin": "",
        "env": {"CODEX_TIMEOUT_SECONDS": os.environ.get("CODEX_TIMEOUT_SECONDS"),
                "OPENAI_API_KEY": bool(os.environ.get("OPENAI_API_KEY"))},
    }
    if argv[:1] in (["--version"], ["-V"]) or (argv[:1] in (["exec"], ["e"]) and "--version" in argv):
        record(entry, consume=False)
        print(VERSION_TEXT)
        return 0
    if argv[:1] not in (["exec"], ["e"]):
        record(entry, consume=False)
        sys.stderr.write("fake codex: only `exec` and `--version` are scripted, not %%r\n" %% argv[:1])
        return 2
    try:
        check_exec_args(argv[1:])
    except UsageError as refused:
        entry["refused"] = str(refused).splitlines()[0]
        record(entry, consume=False)
        sys.stderr.write(str(refused))
        return 2
    entry["stdin"] = read_stdin()
    schema_file = flag_value(argv, "--output-schema")
    if schema_file:
        entry["output_schema"] = load_path(schema_file)
    reply = record(entry, consume=True)
    kind, payload = reply.get("kind", "json"), reply.get("payload")
    time.sleep(float(reply.get("delay", 2.0 if kind == "slow" else 0.0)))
    if kind == "hang":
        while True:
            time.sleep(3600)
    if kind == "event_error":
        return event_error(reply, "--json" in argv)
    if kind == "exit":
        sys.stderr.write((payload if isinstance(payload, str) else json.dumps(payload)) + "\n")
        return int(reply.get("exit_code", 1))
    message = render(kind, payload)
    sys.stdout.write("\n".join(events(message)) + "\n" if "--json" in argv else message + "\n")
    target = output_path(argv)
    if target:
        with open(target, "w", encoding="utf-8") as f:
            f.write(message)
    return int(reply.get("exit_code", 0))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''


class FakeCodex:
    """Installs and drives a fake ``codex`` executable in ``bin_dir``."""

    def __init__(self, bin_dir: os.PathLike[str] | str) -> None:
        self.bin_dir = Path(bin_dir)
        self.path = self.bin_dir / "codex"

    def _file(self, suffix: str) -> Path:
        return self.bin_dir / f"codex.{suffix}"

    def install(self) -> Path:
        """Write the executable (shebang: this interpreter) and return its path."""
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        options = exec_flags()["options"]
        source = _PROGRAM % {"version": VERSION_TEXT, "default": DEFAULT_REPLY, "options": options}
        self._atomic_write(self.path, f"#!{sys.executable}\n# fake codex written by pytest_tmuxagent\n{source}")
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return self.path

    def script(self, replies: list[dict[str, Any]]) -> None:
        """Set the replies for the following calls, starting again from the first one."""
        for i, reply in enumerate(replies):
            if not isinstance(reply, dict) or reply.get("kind", "json") not in REPLY_KINDS:
                raise ValueError(f"reply {i} must be a dict with kind in {sorted(REPLY_KINDS)}: {reply!r}")
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        with open(self._file("lock"), "a") as lock:  # same lock as the program: no torn reads
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._atomic_write(self._file("script.json"), json.dumps(replies, ensure_ascii=False, indent=1))
            self._atomic_write(self._file("state"), "0")

    def calls(self) -> list[dict[str, Any]]:
        """Every logged invocation, oldest first (``--version`` calls included)."""
        try:
            text = self._file("calls.jsonl").read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        # A line without its newline is still being written by a running call: skip it.
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n") and line.strip()]

    def wait_for_calls(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` calls were logged and return them all."""

        def enough() -> Optional[list[dict[str, Any]]]:
            seen = self.calls()
            return seen if len(seen) >= n else None

        return wait_until(enough, timeout=timeout, message=f"{n} fake codex call(s) in {self.bin_dir}")

    @staticmethod
    def _atomic_write(target: Path, text: str) -> None:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
