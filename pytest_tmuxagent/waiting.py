"""Deadline-based waiting for tests.

Tests that exercise real processes (tmux panes, HTTP servers, subprocesses) must never
``time.sleep(n)`` and hope the world has caught up: that is both slow on fast machines and
flaky on slow ones. ``wait_until`` polls a condition instead and fails with a message that says
what was being waited for and what was last observed, so a timeout is diagnosable from the
pytest report alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Optional, TypeVar

__all__ = ["WaitTimeout", "wait_until"]

T = TypeVar("T")

_MAX_REPR = 500


class WaitTimeout(AssertionError):
    """Raised when a condition did not become truthy before its deadline.

    It subclasses ``AssertionError`` so pytest reports it as a test failure (not an error) and
    so callers that already expect assertion failures need no special case.
    """

    def __init__(
        self,
        message: str,
        timeout: float,
        attempts: int,
        last_value: object = None,
        last_error: Optional[BaseException] = None,
    ) -> None:
        self.timeout = timeout
        self.attempts = attempts
        self.last_value = last_value
        self.last_error = last_error
        what = message or "condition"
        if last_error is not None:
            seen = f"last exception: {type(last_error).__name__}: {_truncate(str(last_error))}"
        else:
            seen = f"last value: {_truncate(repr(last_value))}"
        super().__init__(f"timed out after {timeout:.2f}s waiting for {what} ({attempts} attempts; {seen})")


def _truncate(text: str) -> str:
    """Keep the report readable when the value is a large pane capture or list."""
    return text if len(text) <= _MAX_REPR else text[:_MAX_REPR] + "...<truncated>"


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "",
) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value.

    Typed for the usual predicate that returns ``None`` (or another falsy value) until it is
    done and the thing waited for after: ``wait_until(lambda: row if row.done else None)`` is a
    ``Row``, not a ``Row | None``.

    Exceptions raised by ``predicate`` count as "not yet" (a server that is still starting
    refuses connections, a file that is not yet written raises ``FileNotFoundError``); the last
    one is reported if the deadline passes. The predicate is always tried at least once, and once
    more at the deadline, so a tiny ``timeout`` still gives the condition a fair chance.

    Uses ``time.monotonic`` so wall-clock jumps (NTP, suspended VMs) do not shorten or stretch
    the wait.
    """
    if timeout < 0:
        raise ValueError("timeout must be >= 0")
    if interval <= 0:
        raise ValueError("interval must be > 0")
    deadline = time.monotonic() + timeout
    attempts = 0
    last_value: object = None
    last_error: Optional[BaseException] = None
    while True:
        attempts += 1
        try:
            value = predicate()
        except Exception as exc:
            last_error, last_value = exc, None
        else:
            if value:
                return value
            last_error, last_value = None, value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(message, timeout, attempts, last_value, last_error)
        time.sleep(min(interval, remaining))
