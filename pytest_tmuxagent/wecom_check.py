"""Session-end check: a run fails when a WeCom mock saw a contract violation nobody declared.

Why at session end and not in each test: the product talks to the mock from a subprocess, and a
violation can land after the assertion that would have noticed it (a retry, a late alert). Every
mock built in this process, by the ``wecom_mock`` fixture or by a test itself, registers its
ledger (``wecom_violations``); at the end the ones of this session are read once.

Under pytest-xdist a worker's exit status never reaches the controller (xdist only looks at
it for a keyboard interrupt), so each worker hands its violations to the controller through
``workeroutput``; the controller gathers them in ``pytest_testnodedown`` and fails the run
itself. Without xdist the one process does both halves. The message is one section of the
terminal summary: test id, endpoint, errcode and reason per violation.
"""

from __future__ import annotations

from typing import Any

import pytest

from . import wecom_violations
from .wecom_violations import Violation

WORKER_KEY = "tmuxagent_wecom_violations"
_START = pytest.StashKey[int]()
_FOUND = pytest.StashKey[list[Violation]]()
_PASSING = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_START] = wecom_violations.mark()
    session.config.stash[_FOUND] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """Controller side of xdist: collect what a finished worker found."""
    output = getattr(node, "workeroutput", None) or {}
    found = [Violation(**row) for row in output.get(WORKER_KEY, [])]
    node.config.stash.setdefault(_FOUND, []).extend(found)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    ledgers = wecom_violations.ledgers_since(session.stash.get(_START, 0))
    found = config.stash.setdefault(_FOUND, [])
    found.extend(v for ledger in ledgers for v in ledger.unexpected())
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller reports and fails the run
        workeroutput[WORKER_KEY] = [v.as_dict() for v in found]
        return
    if found and session.exitstatus in _PASSING:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    gathered: list[Violation] = config.stash.get(_FOUND, [])
    found = sorted(gathered, key=lambda v: (v.test, v.time))
    if not found or hasattr(config, "workeroutput"):
        return
    terminalreporter.section("WeCom contract violations", sep="=", red=True, bold=True)
    terminalreporter.line(
        f"FAILED: {len(found)} request(s) to a WeCom mock broke WeCom's contract; the real WeCom refuses them:"
    )
    for violation in found:
        terminalreporter.line(f"  {violation.line()}")
    terminalreporter.line(
        "Fix the sender, or declare a violation a test provokes on purpose with "
        "wecom_mock.expect_violation(errcode) or wecom_mock.allow_violations()."
    )
