"""The small interfaces the layers meet at.

The engine, the guards and decision assist never import the concrete tmux adapter, the WeCom
notifier or the metrics registry: they are handed objects that satisfy these Protocols by the
composition root (`orchestrator.cli.compose`). Tests hand them fakes.
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Protocol

from orchestrator.config import SessionKind
from orchestrator.model import (
    ApprovalRequest,
    ApprovalRuling,
    CommandRow,
    ExitRecord,
    PaneInfo,
    PaneRef,
    Readiness,
    Running,
    SessionStateName,
    StallVerdict,
)


class PaneIO(Protocol):
    """What the engine and the drivers need of a tmux server (the tmux adapter is one)."""

    def resolve(self, target: str) -> PaneRef:
        """The pane a target names now; raises PaneNotFound."""
        ...

    def pane_alive(self, pane_id: str) -> bool: ...

    def send_text(self, pane_id: str, text: str, *, enter: bool = True) -> None:
        """Literal text (then Enter); raises TmuxUnavailable."""
        ...

    def send_keys(self, pane_id: str, *keys: str) -> None:
        """Named keys such as C-c or Escape; raises TmuxUnavailable."""
        ...

    def paste_text(self, pane_id: str, text: str, *, enter: bool = True) -> None:
        """Paste text whole (bracketed paste: multi-line, unicode, quotes), then Enter."""
        ...

    def capture(self, pane_id: str, lines: int = 50) -> list[str]: ...

    def socket_path(self) -> str: ...

    def pane_info(self, pane_id: str) -> PaneInfo | None: ...

    def all_pane_info(self) -> dict[str, PaneInfo]: ...

    def screen_line(self, pane_id: str, row: int) -> str: ...

    def pipe_pane(self, pane_id: str, command: str) -> None: ...

    def copy_output(self, pane_id: str, path: Path) -> None:
        """From now on everything the pane's program writes is appended to `path`, byte-exact and
        in order (how is the adapter's business); raises TmuxUnavailable."""
        ...

    def copying(self, pane_id: str, known: PaneInfo | None = None) -> bool:
        """The pane's output is being copied by `copy_output` now; False: set it up again.
        `known`: the pane's row the caller already has (a round's `list-panes`), so a piped
        pane's `#{pane_pipe}` is read from it instead of asked of tmux again."""
        ...

    def server_identity(self) -> str | None: ...


class PaneLocator(Protocol):
    """Which pane a session's target names, looked up once and kept until it stops answering."""

    def pane_id(self, session: str) -> str | None:
        """The session's pane id, or None when its target names no pane (raises nothing)."""
        ...

    def forget(self, session: str) -> None:
        """Drop the cached id: the next lookup asks tmux again."""
        ...

    def refresh(self) -> bool:
        """Ask the server who it is; True when it is another server than before (restarted), in
        which case every cached id was dropped."""
        ...


class PaneReader(Protocol):
    """Read-only access to a session's screen (decision assist's blocker scan)."""

    def capture_session(self, session: str, lines: int) -> list[str] | None: ...

    def drew_since_last_look(self, session: str) -> bool:
        """False only when the pane certainly wrote nothing since the last True (a cheap check)."""
        ...


class Driver(Protocol):
    """The one place that knows how a unit of work reaches a pane and how its end is known.

    The engine owns the queue, the timing and the results; a driver owns the mechanism. Calls
    are keyed by command id, so the driver keeps whatever per-command state it needs. Every
    method but `deliver` and `interrupt` is local (no tmux call) and cheap.
    """

    kind: SessionKind

    @property
    def completions(self) -> queue.Queue[int]:
        """Ids of commands whose end was signalled; the engine blocks on it between rounds."""
        ...

    def probe(self, pane_id: str, *, dispatch: bool = True) -> Readiness:
        """May work be typed into the pane now? If not, the session state that says why.
        `dispatch=False`: only the state is wanted (no queued work), skip the costlier checks."""
        ...

    def deliver(self, row: CommandRow, pane_id: str) -> None:
        """Send the work into the pane; raises TmuxUnavailable when it could not be typed."""
        ...

    def adopt(self, row: CommandRow, pane_id: str) -> bool:
        """After a restart: take up work a previous run delivered (`row.attempts` names it).
        False when it certainly never reached the pane (safe to queue again)."""
        ...

    def forget_pane(self, pane_id: str) -> None:
        """The pane or its server went away; set it up again when it is seen next."""
        ...

    def shell_idle(self, pane_id: str) -> bool:
        """The pane's own program owns its terminal again (nothing runs in its foreground)."""
        ...

    def waiting_for_input(self, command_id: int) -> bool:
        """The work waits for an answer from a person (exact where the driver can know it)."""
        ...

    def question(self, command_id: int) -> str:
        """The question being asked, for the person (may come from the screen)."""
        ...

    def type_reply(self, pane_id: str, text: str) -> None:
        """Type a person's answer; raises TmuxUnavailable."""
        ...

    def pending_approval(self, command_id: int) -> ApprovalRequest | None:
        """The tool request the work waits on (an agent's permission dialog), or None. Exact
        where the agent reports it (a hook); `source` says when it came from the screen."""
        ...

    def answer_approval(self, command_id: int, pane_id: str, approve: bool, note: str) -> None:
        """Answer the pending request with the agent's own keys; on a denial the agent is told
        `note` (why, and by whom). Raises TmuxUnavailable."""
        ...

    def watch(self, command_id: int) -> None:
        """Listen for the command's end signal (idempotent)."""
        ...

    def watching(self, command_id: int) -> bool: ...

    def started(self, command_id: int) -> bool:
        """The work's own start record exists (it reached the pane's program)."""
        ...

    def end_record(self, command_id: int) -> ExitRecord | None:
        """The work's end as its own channel reported it, or None while it runs."""
        ...

    def activity_marker(self, command_id: int) -> int:
        """A number that changes whenever the work shows activity (output)."""
        ...

    def output_tail(self, command_id: int, lines: int, grace_seconds: float, until: int | None = None) -> str:
        """The last lines of the work's output, unredacted; `until` cuts it at an activity marker
        (what was printed before an interrupt, not the shell's reaction to it)."""
        ...

    def interrupt(self, command_id: int, pane_id: str, keys: tuple[str, ...]) -> None:
        """Send the interrupt keys; raises TmuxUnavailable."""
        ...

    def discard(self, command_id: int) -> None:
        """Stop listening and remove the work's files."""
        ...

    def close(self) -> None: ...


class Notify(Protocol):
    """Where alerts go (the notifier's outbox); never raises."""

    def notify(self, *, kind: str, session: str | None, title: str, body: str, dedupe_key: str) -> object: ...


class Gate(Protocol):
    """May the session's next command be dispatched now? Reads only: a gate has no side effects."""

    closed_state: SessionStateName
    """The session's state while this gate holds it (`cooldown`, `blocked`)."""

    def may_dispatch(self, session: str) -> bool: ...


class Ticker(Protocol):
    """Work done on the engine's thread once per loop round (cooldown ends, assist's checks)."""

    def tick(self) -> None: ...


class Background(Protocol):
    """Work the engine's `--once` mode must wait for before it exits."""

    def busy(self) -> bool: ...


class ApprovalPolicy(Protocol):
    """The safety policy as the engine sees it: a ruling per tool request, never an action."""

    def rule(self, session: str, request: ApprovalRequest) -> ApprovalRuling:
        """`approve` (allowlisted), `deny` (a destructive command), or `escalate` (ask a person)."""
        ...


class StallPolicy(Protocol):
    """The stall guard as the engine sees it: a verdict per running command, never an action."""

    def verdict(self, running: Running, now: float) -> StallVerdict:
        """`wait`, `interrupt` (no activity for the timeout), or after an interrupt's grace
        `retry` / `give_up`. `now` is the engine clock's monotonic time."""
        ...

    def after_interrupt(self, running: Running) -> StallVerdict:
        """The interrupted command ended by itself: `retry` or `give_up`."""
        ...
