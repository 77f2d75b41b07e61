"""A tmux control-mode (`tmux -C`) client: one persistent connection per tmux server.

`protocol` is the text protocol (quoting, reply framing, notifications as typed events);
`connection` runs the client process and its reader thread. The service talks to tmux through
it by way of `orchestrator.adapters.tmux_controlled.ControlledTmux` (the `PaneIO` port), and
copies pane output from `%output` with one more client per session
(`orchestrator.adapters.tmux_output`).
"""

from __future__ import annotations

from orchestrator.adapters.tmux_control.connection import (
    ALL_PANES_FORMAT,
    HIDDEN_SESSION,
    CommandFailed,
    ControlClosed,
    ControlConnection,
    ControlNotConnected,
    ControlTimeout,
    PaneRow,
)
from orchestrator.adapters.tmux_control.protocol import (
    ConnectedEvent,
    ControlEvent,
    EventKind,
    ExitEvent,
    NotificationEvent,
    OutputEvent,
    SubscriptionEvent,
    decode_output,
    quote,
)

__all__ = [
    "ALL_PANES_FORMAT",
    "HIDDEN_SESSION",
    "CommandFailed",
    "ConnectedEvent",
    "ControlClosed",
    "ControlConnection",
    "ControlEvent",
    "ControlNotConnected",
    "ControlTimeout",
    "EventKind",
    "ExitEvent",
    "NotificationEvent",
    "OutputEvent",
    "PaneRow",
    "SubscriptionEvent",
    "decode_output",
    "quote",
]
