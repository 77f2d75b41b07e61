"""The `PaneIO` port over one persistent tmux control-mode connection, a subprocess when it is down.

Why: `TmuxAdapter` forks a `tmux` client per call (send-keys, capture-pane, list-panes,
display-message), about 3 ms of CPU each and ~160 sends/s; a `tmux -C` client takes the same
commands as lines on its stdin (`ControlConnection`, >3,000 sends/s, no process per call).

`ControlledTmux` answers every `PaneIO` call exactly as the wrapped `TmuxAdapter` would (same
tmux commands, same parsing — `PANE_FORMAT` and `parse_pane_info` are the adapter's own — same
return values, `TmuxUnavailable` with tmux's own message for a failed command, `PaneNotFound`
with the same detail), and hands the call to that adapter whenever the connection is not up:
no server yet, the server restarted, the client ended. It attaches again lazily, on a call,
with a backoff (50 ms doubling to 2 s) so a server that stays away costs one failed attempt per
pause, not one per call; a caller never waits on another caller's attach (it takes the
subprocess meanwhile), and no wait is longer than the command timeout.

Which session the client attaches to: an existing one, never a hidden session of its own (that
would keep the user's server alive after their last session and show in `tmux ls`) — the
session of the first supervised target that the server has, else any session it lists, with
`attach-session -f ignore-size,no-output` (it does not resize the user's windows and is sent no
pane output). When that session goes away the client ends, and the next attach picks another.

Pane output (`copy_output`): while the connection is up, a pane's log is written from the
`%output` stream of an output client attached to the pane's session (`tmux_output.OutputCopier`,
one client and one reader thread per tmux session with a copied pane, no process per pane);
while it is down, or with `control_mode: false`, by `pipe-pane` (a `cat` per pane) as
`TmuxAdapter` does. `copying` says False for a copy whose client ended or whose pane left its
session, and for a piped pane once the stream could take it over, so the caller sets it up again
— and the switch between the two happens at one point of the pane's output (see tmux_output).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar, cast

from orchestrator.adapters.tmux import PANE_FORMAT, TmuxAdapter, parse_pane_info, pipe_command
from orchestrator.adapters.tmux_control import (
    CommandFailed,
    ControlClosed,
    ControlConnection,
    ControlEvent,
    ControlNotConnected,
    ExitEvent,
)
from orchestrator.adapters.tmux_control.connection import BACKOFF_FIRST, BACKOFF_MAX, DEFAULT_TIMEOUT
from orchestrator.adapters.tmux_output import OutputCopier
from orchestrator.errors import PaneNotFound, TmuxUnavailable
from orchestrator.model import PaneInfo, PaneRef

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class _Unrouted(Exception):
    """The call cannot go over the connection (down, or lost under a read): use the subprocess.
    Not a TmuxUnavailable, so a method's own `except TmuxUnavailable` never swallows it."""


def _or_subprocess(
    method: Callable[Concatenate[ControlledTmux, P], T],
) -> Callable[Concatenate[ControlledTmux, P], T]:
    """Run the method over the connection; when it raises `_Unrouted`, the wrapped adapter's
    method of the same name with the same arguments answers instead."""
    name = method.__name__

    @functools.wraps(method)
    def routed(self: ControlledTmux, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(self, *args, **kwargs)
        except _Unrouted:
            return cast(T, getattr(self.fallback, name)(*args, **kwargs))

    return routed


def session_of(target: str) -> str | None:
    """The session a target names by name (`work:0.1` → `work`); None for ids (`%3`, `@2`, `$1`)."""
    name = target.split(":", 1)[0].lstrip("=")
    return name if name and name[0] not in "%@$" else None


def _not_found(target: str, reason: str = "", fix: str = "create the pane or fix the session's target") -> PaneNotFound:
    return PaneNotFound(f"no tmux pane for target '{target}'{reason}", key="target", fix=fix)


class ControlledTmux:
    """`PaneIO` over one `ControlConnection`, falling back to `fallback` (see the module doc).
    `targets`: the supervised sessions' targets, in config order (which session to attach to);
    `enabled=False` (`tmux.control_mode: false`): every call goes to `fallback`."""

    def __init__(
        self,
        fallback: TmuxAdapter,
        targets: Iterable[str] = (),
        *,
        enabled: bool = True,
        stream_output: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """`stream_output`: copy pane output from the `%output` stream (see `copy_output`)."""
        self.fallback = fallback
        self.stream_output = stream_output
        self.preferred = tuple(dict.fromkeys(s for s in map(session_of, targets) if s is not None))
        self.enabled = enabled
        self.timeout = timeout
        self.conn = ControlConnection(fallback.config, output=False, tmux_bin=fallback.tmux_bin)
        self.conn.subscribe(self._noticed)
        self.copier = OutputCopier(fallback.config, fallback.tmux_bin, timeout=timeout)
        self._attaching = threading.Lock()
        self._closed = False
        self._pause = BACKOFF_FIRST
        self._retry_at = 0.0

    # the connection --------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.conn.connected

    @property
    def session(self) -> str | None:
        """The tmux session the client is attached to now, or None while it is down."""
        return self.conn.session if self.conn.connected else None

    def close(self) -> None:
        """End the client (tmux detaches it); later calls all go by subprocess."""
        with self._attaching:
            self._closed = True
            self.conn.close()
        self.copier.close()

    def _live(self) -> ControlConnection | None:
        """The connection if it is up or can be attached now; None: use the subprocess."""
        conn = self.conn
        if conn.connected and not self._attaching.locked():  # locked: its attach is not done
            return conn
        if not self.enabled or self._closed or time.monotonic() < self._retry_at:
            return None
        if not self._attaching.acquire(blocking=False):
            return None  # another caller is attaching
        try:
            if not self._closed and not conn.connected:
                self._attach()
            return conn if conn.connected else None
        except TmuxUnavailable as exc:
            self._retry_at = time.monotonic() + self._pause
            self._pause = min(BACKOFF_MAX, self._pause * 2)
            log.debug("tmux control connection not attached (%s); next try in %.2fs", exc, self._pause)
            return None
        finally:
            self._attaching.release()

    def _attach(self) -> None:
        self.conn.session = self._pick_session()
        server = self.conn.connect(timeout=self.timeout)
        self._pause, self._retry_at = BACKOFF_FIRST, 0.0
        log.info("tmux control connection attached to session %r (server %s)", self.conn.session, server)

    def _pick_session(self) -> str:
        """The first supervised target's session the server has, else the first it lists."""
        try:
            listed = self.fallback.server.cmd("list-sessions", "-F", "#{session_name}")
        except Exception as exc:  # libtmux's own errors when the binary misbehaves
            raise TmuxUnavailable(str(exc)) from exc
        names = [name for name in listed.stdout if name] if listed.returncode == 0 else []
        if not names:
            raise TmuxUnavailable(" ".join(listed.stderr) or "the tmux server has no session to attach to")
        return next((name for name in self.preferred if name in names), names[0])

    def _noticed(self, event: ControlEvent) -> None:
        if isinstance(event, ExitEvent):
            log.info("tmux control connection ended (%s); tmux subprocesses until it attaches again", event.reason)

    def _over(self, call: Callable[[ControlConnection], T], *, write: bool = False) -> T:
        """`call` on the live connection, its failures as `TmuxAdapter` reports them. `_Unrouted`
        when there is none or nothing was written; a read lost under way is asked again by
        subprocess, a write is not (it may have been typed: typing it again could run it twice)."""
        conn = self._live()
        if conn is None:
            raise _Unrouted
        try:
            return call(conn)
        except ControlNotConnected:
            raise _Unrouted from None
        except CommandFailed as exc:
            raise TmuxUnavailable(exc.detail or f"tmux {exc.command} failed") from None
        except ControlClosed:
            if write:
                raise
            raise _Unrouted from None

    def _ask(self, *args: str) -> list[str]:
        """One read-only tmux command's reply lines."""
        return self._over(lambda c: c.command(*args, timeout=self.timeout))

    def _ask_or_none(self, *args: str) -> list[str]:
        """The same, with a failed command read as no lines: how the port's "is it there?"
        calls answer for a pane (or a server) that is gone."""
        try:
            return self._ask(*args)
        except TmuxUnavailable:
            return []

    # PaneIO ------------------------------------------------------------------------------------
    @_or_subprocess
    def resolve(self, target: str) -> PaneRef:
        """As `TmuxAdapter.resolve`: the target's window listed (`list-panes -t`, which fails on a
        missing window or pane) and the pane `display-message -t` shows must be one of them."""
        try:
            listed, shown = self._over(
                lambda c: c.commands(
                    ("list-panes", "-t", target, "-F", "#{pane_id}"),
                    ("display-message", "-p", "-t", target, "#{pane_id}"),
                    timeout=self.timeout,
                )
            )
        except TmuxUnavailable as exc:
            reason = "" if "can't find" in str(exc) else f" ({exc})"
            raise _not_found(
                target, reason, "create the pane or fix the session's target in agent-config.yaml"
            ) from None
        pane = shown[-1].strip() if shown else ""
        if not pane.startswith("%") or pane not in {line.strip() for line in listed}:
            raise _not_found(target)
        return PaneRef(pane_id=pane, target=target)

    @_or_subprocess
    def pane_alive(self, pane_id: str) -> bool:
        return f"{pane_id} 0" in self._ask_or_none("list-panes", "-a", "-F", "#{pane_id} #{pane_dead}")

    @_or_subprocess
    def send_text(self, pane_id: str, text: str, *, enter: bool = True) -> None:
        self._over(lambda c: c.send_literal(pane_id, text, enter=enter, timeout=self.timeout), write=True)

    @_or_subprocess
    def paste_text(self, pane_id: str, text: str, *, enter: bool = True) -> None:
        self._over(lambda c: c.paste(pane_id, text, enter=enter, timeout=self.timeout), write=True)

    @_or_subprocess
    def send_keys(self, pane_id: str, *keys: str) -> None:
        self._over(lambda c: c.send_keys(pane_id, *keys, timeout=self.timeout), write=True)

    @_or_subprocess
    def capture(self, pane_id: str, lines: int = 50) -> list[str]:
        return self._over(lambda c: c.capture(pane_id, lines, timeout=self.timeout))

    @_or_subprocess
    def pane_info(self, pane_id: str) -> PaneInfo | None:
        out = self._ask_or_none("display-message", "-p", "-t", pane_id, PANE_FORMAT)
        return parse_pane_info(out[0]) if out else None

    @_or_subprocess
    def all_pane_info(self) -> dict[str, PaneInfo]:
        found = map(parse_pane_info, self._ask_or_none("list-panes", "-a", "-F", PANE_FORMAT))
        return {info.pane_id: info for info in found if info is not None}

    @_or_subprocess
    def screen_line(self, pane_id: str, row: int) -> str:
        out = self._ask("capture-pane", "-p", "-N", "-t", pane_id, "-S", str(row), "-E", str(row))
        return out[0] if out else ""

    @_or_subprocess
    def pipe_pane(self, pane_id: str, command: str) -> None:
        self._over(lambda c: c.command("pipe-pane", "-t", pane_id, command, timeout=self.timeout), write=True)

    def copy_output(self, pane_id: str, path: Path) -> None:
        """From the pane's session's `%output` stream while the connection is up, else by
        pipe-pane; a copy moving between the two is switched at one point of the stream."""
        if self.stream_output and self._live() is not None and self.copier.may_attach():
            try:
                session = self._ask("display-message", "-p", "-t", pane_id, "#{session_id}")
                if not session or not session[0].startswith("$"):
                    raise TmuxUnavailable(f"no session for pane {pane_id}")
                self.copier.copy(pane_id, session[0].strip(), path)
                return
            except (TmuxUnavailable, _Unrouted, OSError) as exc:
                log.info("pane %s output by pipe-pane: the output client is not there (%s)", pane_id, exc)
        if not self.copier.hand_over(pane_id, pipe_command(path)):
            self.pipe_pane(pane_id, pipe_command(path))

    def copying(self, pane_id: str, known: PaneInfo | None = None) -> bool:
        if self.copier.routed(pane_id):
            return self.copier.copying(pane_id)
        info = known if known is not None else self.pane_info(pane_id)
        if info is None or not info.piped:
            return False
        # piped (by the fallback, or a previous run): "not copying" once the stream can take over
        return not (
            self.stream_output and self.enabled and not self._closed and self.connected and self.copier.may_attach()
        )

    @_or_subprocess
    def server_identity(self) -> str | None:
        """Asked of the server on every call, not the identity cached at attach, so a server
        restarted under a connection not yet seen to end reads as the new one (by subprocess)."""
        out = self._ask_or_none("display-message", "-p", "#{pid} #{start_time}")
        return out[0].strip() if out else None

    @_or_subprocess
    def socket_path(self) -> str:
        return self._ask("display-message", "-p", "#{socket_path}")[0].strip()
