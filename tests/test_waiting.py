"""Tests for pytest_tmuxagent.waiting.wait_until."""

from __future__ import annotations

import itertools

import pytest

from pytest_tmuxagent import waiting
from pytest_tmuxagent.waiting import WaitTimeout, wait_until


class FakeClock:
    """Monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(waiting.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(waiting.time, "sleep", fake.sleep)
    return fake


def test_returns_first_truthy_value_without_sleeping(clock: FakeClock) -> None:
    assert wait_until(lambda: {"ready": True}) == {"ready": True}
    assert clock.sleeps == []


def test_polls_until_truthy_and_returns_that_value(clock: FakeClock) -> None:
    values = iter([None, 0, "", [], "done"])
    assert wait_until(lambda: next(values), interval=0.5) == "done"
    assert clock.sleeps == [0.5] * 4


def test_timeout_raises_assertion_error_with_message_and_last_value(clock: FakeClock) -> None:
    with pytest.raises(WaitTimeout) as info:
        wait_until(lambda: [], timeout=1.0, interval=0.25, message="queue to drain")
    err = info.value
    assert isinstance(err, AssertionError)
    assert "queue to drain" in str(err)
    assert "last value: []" in str(err)
    # tried at start, after each interval, and once more exactly at the deadline
    assert err.attempts == 5
    assert sum(clock.sleeps) == pytest.approx(1.0)


def test_exceptions_are_retried_and_the_last_one_is_reported(clock: FakeClock) -> None:
    calls = itertools.count(1)

    def flaky() -> str:
        n = next(calls)
        if n < 3:
            raise ConnectionRefusedError(f"attempt {n}")
        return "up"

    assert wait_until(flaky) == "up"

    def always_fails() -> None:
        raise FileNotFoundError("no such file: out.json")

    with pytest.raises(WaitTimeout, match=r"FileNotFoundError: no such file: out\.json") as info:
        wait_until(always_fails, timeout=0.1, message="output file")
    assert isinstance(info.value.last_error, FileNotFoundError)


def test_zero_timeout_still_checks_once(clock: FakeClock) -> None:
    assert wait_until(lambda: 7, timeout=0) == 7
    with pytest.raises(WaitTimeout):
        wait_until(lambda: False, timeout=0)


class HugeFalsy:
    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "pane line\n" * 1000


def test_huge_values_and_errors_are_truncated_in_the_message(clock: FakeClock) -> None:
    with pytest.raises(WaitTimeout) as info:
        wait_until(HugeFalsy, timeout=0)
    assert "pane line" in str(info.value) and "<truncated>" in str(info.value)
    assert len(str(info.value)) < 1000

    def boom() -> None:
        raise RuntimeError("y" * 5000)

    with pytest.raises(WaitTimeout) as info:
        wait_until(boom, timeout=0)
    assert "RuntimeError: yyy" in str(info.value) and len(str(info.value)) < 1000


@pytest.mark.parametrize("kwargs", [{"timeout": -1}, {"interval": 0}])
def test_rejects_nonsense_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        wait_until(lambda: True, **kwargs)


def test_real_clock_deadline_is_honoured() -> None:
    import time

    start = time.monotonic()
    with pytest.raises(WaitTimeout):
        wait_until(lambda: False, timeout=0.05, interval=0.01)
    assert 0.05 <= time.monotonic() - start < 1.0
