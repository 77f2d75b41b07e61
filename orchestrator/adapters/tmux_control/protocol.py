"""The text protocol of a `tmux -C` client: how a command is written and how its stream reads.

Pure functions and event types, no process and no thread, so the protocol is testable on its own
and the connection (`connection.py`) only moves bytes.

What the stream looks like (tmux 3.3a, checked on a real server):

- every command line the client writes is answered by one block, `%begin TIME NUM FLAGS`, the
  reply's lines, then `%end TIME NUM FLAGS` or `%error TIME NUM FLAGS` with the same three
  numbers. NUM is the server's command counter (shared by all clients, not ours to predict), so
  replies are matched to requests by order. FLAGS is 1 for a command this client wrote and 0 for
  one it did not (the attach command the client was started with), which is never a reply.
- a line holding `a ; b` is answered by *two* blocks; so every command is written on its own line
  (its arguments are always quoted, so a `;` argument is literal text, never a separator).
- an empty line detaches the client, so none is ever written.
- notifications (`%output`, `%exit`, `%window-close` …) never occur inside a block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

EventKind = Literal[
    "output",
    "exit",
    "subscription",
    "pane",
    "window",
    "session",
    "client",
    "connected",
    "other",
]

PANE_NOTIFICATIONS = frozenset({"%pane-mode-changed", "%pause", "%continue"})
WINDOW_NOTIFICATIONS = frozenset(
    {
        "%window-add",
        "%window-close",
        "%window-renamed",
        "%window-pane-changed",
        "%layout-change",
        "%unlinked-window-add",
        "%unlinked-window-close",
        "%unlinked-window-renamed",
    }
)
SESSION_NOTIFICATIONS = frozenset(
    {"%sessions-changed", "%session-changed", "%session-renamed", "%session-window-changed"}
)
CLIENT_NOTIFICATIONS = frozenset({"%client-detached", "%client-session-changed"})

# notifications whose last argument is a name that may hold spaces: how many splits come before it
NAME_LAST = {
    "%window-renamed": 1,
    "%unlinked-window-renamed": 1,
    "%session-renamed": 0,
    "%session-changed": 1,
    "%client-session-changed": 2,
}

_OCTAL = re.compile(rb"\\([0-7]{3})")


@dataclass(frozen=True)
class OutputEvent:
    """Bytes a pane's program wrote (`%output`, or `%extended-output` with how long tmux held them)."""

    pane: str
    data: bytes
    age_ms: int | None = None
    kind: EventKind = "output"


@dataclass(frozen=True)
class ExitEvent:
    """The client is gone: tmux said `%exit [reason]`, or the stream ended (server killed)."""

    reason: str
    kind: EventKind = "exit"


@dataclass(frozen=True)
class SubscriptionEvent:
    """A `refresh-client -B` format changed value (tmux reports it at most once a second)."""

    name: str
    value: str
    kind: EventKind = "subscription"


@dataclass(frozen=True)
class NotificationEvent:
    """Any other notification: `name` is tmux's word without `%` (`window-close`,
    `pane-mode-changed`, `sessions-changed` …), `args` its space-separated arguments (a window's
    new name is the rest of the line, kept whole as the last argument)."""

    name: str
    args: tuple[str, ...]
    kind: EventKind = "other"

    @property
    def target(self) -> str | None:
        """The pane (`%3`), window (`@2`) or session (`$1`) the notification is about, if any."""
        return self.args[0] if self.args and self.args[0][:1] in "%@$" else None


@dataclass(frozen=True)
class ConnectedEvent:
    """A client is attached (first connect or reconnect): `server` is tmux's `pid start_time`,
    which differs after a server restart on the same socket."""

    server: str
    kind: EventKind = "connected"


ControlEvent = OutputEvent | ExitEvent | SubscriptionEvent | NotificationEvent | ConnectedEvent


def decode_output(value: bytes) -> bytes:
    """`%output` escapes every byte below 0x20 and the backslash as `\\ooo`; everything else
    (UTF-8 included) is sent as is."""
    return _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), value)


def _kind_of(name: str) -> EventKind:
    if name in PANE_NOTIFICATIONS:
        return "pane"
    if name in WINDOW_NOTIFICATIONS:
        return "window"
    if name in SESSION_NOTIFICATIONS:
        return "session"
    if name in CLIENT_NOTIFICATIONS:
        return "client"
    return "other"


def parse_notification(line: bytes) -> ControlEvent:
    """One notification line (without its newline) as an event."""
    head, _, rest = line.partition(b" ")
    name = head.decode("ascii", errors="replace")
    if name == "%output":
        pane_id, _, value = rest.partition(b" ")
        return OutputEvent(pane_id.decode("ascii", errors="replace"), decode_output(value))
    if name == "%extended-output":
        head_fields, _, value = rest.partition(b" : ")
        pane, _, age = head_fields.decode("ascii", errors="replace").partition(" ")
        first = age.split(" ")[0]
        return OutputEvent(pane, decode_output(value), int(first) if first.isdigit() else None)
    text = rest.decode("utf-8", errors="replace")
    if name == "%exit":
        return ExitEvent(text)
    if name == "%subscription-changed":
        names, _, changed = text.partition(" : ")
        return SubscriptionEvent(names.split(" ")[0], changed)
    args = tuple(text.split(" ", NAME_LAST.get(name, -1))) if text else ()
    return NotificationEvent(name.lstrip("%"), args, _kind_of(name))


@dataclass(frozen=True)
class BlockEdge:
    """A `%begin` / `%end` / `%error` line: which command's reply it opens or closes."""

    word: Literal["begin", "end", "error"]
    number: str
    flags: int


EDGE_WORDS: dict[bytes, Literal["begin", "end", "error"]] = {b"begin": "begin", b"end": "end", b"error": "error"}
_EDGE = re.compile(rb"^%(begin|end|error) (\d+) (\d+) (\d+)$")


def block_edge(line: bytes) -> BlockEdge | None:
    found = _EDGE.match(line)
    if found is None:
        return None
    return BlockEdge(EDGE_WORDS[found.group(1)], found.group(3).decode(), int(found.group(4)))


def quote(arg: str) -> str:
    """One argument for tmux's command parser, always inside double quotes: `\\`, `"` and `$`
    (which double quotes would expand) are escaped, control characters written as `\\ooo`
    (so no newline ever ends the command line early); UTF-8 passes as is."""
    if "\x00" in arg:
        raise ValueError("tmux arguments cannot hold a NUL character")
    out = ['"']
    for ch in arg:
        if ch in '\\"$':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def command_line(args: tuple[str, ...] | list[str]) -> bytes:
    """The line written for one command (its name unquoted, every argument quoted)."""
    if not args:
        raise ValueError("an empty command line would detach the control client")
    name, *rest = args
    if not re.fullmatch(r"[a-z][a-z-]*", name):
        raise ValueError(f"not a tmux command name: {name!r}")
    return " ".join([name, *(quote(a) for a in rest)]).encode("utf-8") + b"\n"
