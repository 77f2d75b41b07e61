"""`python -m orchestrator.cli.agent_hook EVENTS EVENT [JSON]`: the small entry an agent calls
when something happens in it, so the orchestrator learns it exactly and at once.

Claude Code runs it from its hooks (the event's JSON on stdin); codex from its `notify` program
(the JSON as the last argument). It appends one line `{"event", "ts", "payload"}` to the session's
events file and does nothing else: one `write` of the whole line on a descriptor opened with
O_APPEND (so concurrent hooks never interleave, and the line is never split across writes), then
`close`. That close is what wakes the orchestrator — its one inotify watch on the runtime
directory (`drivers/file_watch.py`) sees IN_CLOSE_WRITE — so no process is started here (it used
to fork `tmux wait-for -S CHANNEL` for every event). It imports only the standard library and
never fails the agent: any error is swallowed after the line is written (or not).

An agent launched by an older version still runs `EVENTS SOCKET CHANNEL EVENT [JSON]` from its
settings: a third argument that is empty or a `tmuxagent-agent-…` channel marks that form, and
the socket and channel are ignored.
"""

from __future__ import annotations

import json
import os
import sys
import time

LEGACY_CHANNEL = "tmuxagent-agent-"


def parse(argv: list[str]) -> tuple[str, str, str | None] | None:
    """(events file, event name, JSON argument or None: read stdin), or None when too short."""
    if len(argv) >= 4 and (argv[2] == "" or argv[2].startswith(LEGACY_CHANNEL)):
        argv = [argv[0], *argv[3:]]
    if len(argv) < 2:
        return None
    return argv[0], argv[1], argv[2] if len(argv) > 2 else None


def encode(event: str, raw: str) -> bytes:
    """The whole line, newline included. Non-ASCII is kept as it is unless it cannot be UTF-8
    (a lone surrogate from a payload's escape): then it is written as JSON escapes."""
    try:
        payload = json.loads(raw) if raw.strip() else {}
    except ValueError:
        payload = {"raw": raw[:4000]}
    record = {"event": event, "ts": time.time(), "payload": payload}
    try:
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record) + "\n").encode("ascii")


def append(events: str, line: bytes) -> None:
    fd = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.write(fd, line) < len(line):
            os.write(fd, b"\n")  # cut short (a full disk): one bad line, and the next event's starts whole
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    parsed = parse(argv)
    if parsed is None:
        return 0
    events, event, given = parsed
    if given is None:
        given = sys.stdin.buffer.read().decode("utf-8", "replace") if sys.stdin is not None else ""
    try:
        append(events, encode(event, given))
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
