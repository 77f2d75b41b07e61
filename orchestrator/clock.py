"""The one clock of the orchestrator.

Injected everywhere time matters so tests can control it instead of sleeping.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards."""


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock tests move by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds


def next_beat(monotonic: float, period: float) -> float:
    """The first multiple of `period` after `monotonic`: periodic per-session work scheduled on
    shared beats falls into one loop round, where one tmux snapshot serves every session,
    instead of a snapshot in every round for the few sessions due in it.

    >>> next_beat(7.3, 2.0), next_beat(8.0, 2.0), next_beat(5.0, 0)
    (8.0, 10.0, 5.0)
    """
    if period <= 0:
        return monotonic
    return (monotonic // period + 1) * period


def iso_utc(epoch: float) -> str:
    """ISO 8601 UTC with microseconds and a Z, the format of every timestamp we store."""
    return _dt.datetime.fromtimestamp(epoch, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso_utc(text: str) -> float:
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.timezone.utc).timestamp()
