"""The `capability` marker and the failure evidence behind the report's "what broke" words
(see capabilities.py): runs where the test runs (an xdist worker) and ships what it finds as
evidence on the test's reports. A pytest plugin module (plugin.py's `pytest_plugins`): nothing
else imports it, so pytest rewrites its asserts.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from .capabilities import CAPABILITY_EVIDENCE, FAILURE_EVIDENCE, MARKER
from .evidence import EVIDENCE_KEY, EvidenceItem


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(phrase): the playbook capability this test proves, in the playbook's words; a red report row "
        "names it before the assertion (default: the scenario registry's entry for the test)",
    )


def _record(item: pytest.Item, report: pytest.TestReport | None, kind: str, title: str, text: str) -> None:
    """Evidence on the item (later phases' reports carry it) and on this report (already built)."""
    prop = (EVIDENCE_KEY, EvidenceItem(kind=kind, title=title, text=text).to_json())
    item.user_properties.append(prop)
    if report is not None:
        report.user_properties.append(prop)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker(MARKER)
    if marker is not None and marker.args:
        _record(item, None, CAPABILITY_EVIDENCE, "marker", " ".join(str(marker.args[0]).split()))


def failing_statements(excinfo: pytest.ExceptionInfo[BaseException], test_file: Path) -> list[str]:
    """The statements of the traceback that are the test's own (its file, or a helper module
    beside it), outermost first: `[alert] = wecom_mock.wait_for_messages(1, timeout=10)`."""
    folder = test_file.parent
    out: list[str] = []
    for entry in excinfo.traceback:
        try:
            path = Path(str(entry.path))
            if path != test_file and path.parent != folder:
                continue
            text = " ".join(str(entry.statement).split())
        except (OSError, ValueError, IndexError):  # source not available
            continue
        if text and text not in out:
            out.append(text)
    return out


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Outermost, so it sees the final outcome (a missing tool's failure is a skip by then)."""
    report = yield
    if report.failed and call.excinfo is not None:
        statements = failing_statements(call.excinfo, Path(str(item.path)))
        if statements:
            _record(item, report, FAILURE_EVIDENCE, f"failing statement ({report.when})", "\n".join(statements))
    return report
