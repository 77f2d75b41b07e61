"""`python -m orchestrator.cli.agent_hook EVENTS SOCKET CHANNEL EVENT [JSON]`: the small entry an
agent calls when something happens in it, so the orchestrator learns it exactly and at once.

Claude Code runs it from its hooks (the event's JSON on stdin); codex from its `notify` program
(the JSON as the last argument). It appends one line `{"event", "ts", "payload"}` to the session's
events file with a single `write` (O_APPEND, so concurrent hooks never interleave), then wakes
the orchestrator with `tmux wait-for -S CHANNEL`. It imports only the standard library and never
fails the agent: any error is swallowed after the line is written (or not).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        return 0
    events, socket, channel, event = argv[:4]
    raw = argv[4] if len(argv) > 4 else sys.stdin.read()
    try:
        payload = json.loads(raw) if raw.strip() else {}
    except ValueError:
        payload = {"raw": raw[:4000]}
    line = json.dumps({"event": event, "ts": time.time(), "payload": payload}, ensure_ascii=False) + "\n"
    try:
        fd = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
    except OSError:
        return 0
    if socket and channel:
        try:
            subprocess.run(
                ["tmux", "-S", socket, "wait-for", "-S", channel],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
