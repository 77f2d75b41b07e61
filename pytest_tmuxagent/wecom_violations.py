"""Contract violations seen by WeCom mocks, kept for the session-end check.

A violation is a request the mock refused because it breaks WeCom's contract (an oversize
message, an unknown robot key, a wrong secret, a 21st message in a minute...), never one it
failed on purpose with an injected fault. Each mock owns one ``ViolationLedger``; every ledger
is also kept in this process's registry, so the session-end check (``wecom_check``) sees the
mocks a test built itself, not only the fixture's, and after they were stopped.

Why a registry of ledgers and not of mocks: a ledger is small (the violations and what the
test declared), a mock holds every recorded request.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

__all__ = ["Violation", "ViolationLedger", "current_test", "ledgers_since", "mark", "register"]


def current_test() -> Optional[str]:
    """The node id of the test running now in this process (pytest's PYTEST_CURRENT_TEST,
    without its " (call)" phase), or None outside a test."""
    running = os.environ.get("PYTEST_CURRENT_TEST")
    return running.rsplit(" (", 1)[0] if running else None


@dataclass(frozen=True)
class Violation:
    test: str  # node id of the test that was running, or of the test that built the mock
    endpoint: str
    errcode: int
    reason: str
    time: float = field(default_factory=time.time)

    def line(self) -> str:
        return f"{self.test}  {self.endpoint}  errcode {self.errcode}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        """Plain data (crosses from an xdist worker to the controller)."""
        return asdict(self)


class ViolationLedger:
    """One mock's violations and what its test declared expected."""

    def __init__(self, owner: Optional[str]) -> None:
        self.owner = owner or "(outside any test)"
        self._lock = threading.Lock()
        self._violations: list[Violation] = []
        self._expected: set[int] = set()
        self._allow_all = False

    def record(self, endpoint: str, errcode: int, reason: str) -> Violation:
        violation = Violation(current_test() or self.owner, endpoint, errcode, reason)
        with self._lock:
            self._violations.append(violation)
        return violation

    @property
    def violations(self) -> list[Violation]:
        with self._lock:
            return list(self._violations)

    def expect(self, errcode: int | str) -> None:
        with self._lock:
            self._expected.add(int(errcode))

    def allow_all(self) -> None:
        with self._lock:
            self._allow_all = True

    def unexpected(self) -> list[Violation]:
        """Violations nobody declared: these fail the session."""
        with self._lock:
            if self._allow_all:
                return []
            return [v for v in self._violations if v.errcode not in self._expected]

    def unmet(self) -> list[int]:
        """Declared errcodes that never happened (a test that provokes one should see it)."""
        with self._lock:
            seen = {v.errcode for v in self._violations}
            return sorted(self._expected - seen)


_lock = threading.Lock()
_ledgers: list[ViolationLedger] = []


def register(ledger: ViolationLedger) -> ViolationLedger:
    with _lock:
        _ledgers.append(ledger)
    return ledger


def mark() -> int:
    """Where the registry stands now; a session checks the ledgers registered after its mark."""
    with _lock:
        return len(_ledgers)


def ledgers_since(start: int) -> list[ViolationLedger]:
    """Take (and forget) the ledgers registered since ``start``: a pytester session run inside
    a test checks its own mocks, and the outer session does not check them again."""
    with _lock:
        taken = _ledgers[start:]
        del _ledgers[start:]
    return taken
