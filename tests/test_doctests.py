"""The examples in docstrings run: every module of the two packages whose docstrings hold a
`>>>` example is checked with `doctest` (the suite's own command does not pass
`--doctest-modules`, so without this an example could rot unseen)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _modules_with_examples() -> list[str]:
    names = []
    for package in ("orchestrator", "pytest_tmuxagent"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if ">>> " in path.read_text(encoding="utf-8"):
                names.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return names


MODULES = _modules_with_examples()


def test_the_examples_are_found() -> None:
    assert "orchestrator.adapters.metrics_host" in MODULES and "pytest_tmuxagent.socket_gate" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_the_module_examples_pass(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, f"{name}: {result.failed} of {result.attempted} failed"
