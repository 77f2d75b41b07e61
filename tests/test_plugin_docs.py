"""Every ```python block of docs/pytest-plugin.md is a test project; each must pass when
pytest runs it (pytester, the plugin loaded through its entry point). A block holds one or
more files, each starting with a `# name.py` line; a block without one is test_example.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "pytest-plugin.md"
FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
FILE_HEADER = re.compile(r"^# ([\w./-]+\.py)$", re.M)


def files_of(block: str) -> dict[str, str]:
    """Split a block at its `# name.py` lines."""
    headers = list(FILE_HEADER.finditer(block))
    if not headers:
        return {"test_example.py": block}
    assert not block[: headers[0].start()].strip(), "text before the first `# name.py` line"
    files: dict[str, str] = {}
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        end = following.start() if following else len(block)
        files[header.group(1)] = block[header.end() : end].strip("\n") + "\n"
    return files


def blocks() -> list[tuple[str, dict[str, str]]]:
    text = DOC.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        files = files_of(match.group(1))
        line = text.count("\n", 0, match.start()) + 1
        found.append((f"line{line}-{'+'.join(Path(name).stem for name in files)}", files))
    return found


BLOCKS = blocks()


def test_the_doc_has_examples_for_every_fixture() -> None:
    code = "\n".join(source for _, files in BLOCKS for source in files.values())
    for fixture in (
        "tmux_server",
        "agent_pane",
        "tmuxagent_pane_shell",
        "orchestrator_service",
        "tmuxagent_settings",
        "fake_codex",
        "wecom_mock",
        "metrics_scraper",
        "tmuxagent_evidence",
        "tmuxagent_live",
        "tmuxagent_dashboard_page",
        "pytest_tmuxagent_scenarios",
        "pytest_tmuxagent_acceptance_criteria",
    ):
        assert re.search(rf"\b{fixture}\b", code), f"no example uses {fixture}"


@pytest.mark.parametrize("files", [files for _, files in BLOCKS], ids=[name for name, _ in BLOCKS])
def test_doc_example_passes(pytester: pytest.Pytester, files: dict[str, str]) -> None:
    for name, source in files.items():
        target = pytester.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source, encoding="utf-8")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tmuxagent-report", "report.md", "-rA")
    outcomes = result.parseoutcomes()
    assert result.ret == 0 and outcomes.get("passed", 0) >= 1, result.stdout.str()[-4000:]
    assert not {"failed", "errors", "skipped", "xfailed"} & outcomes.keys(), result.stdout.str()[-4000:]
    if any("pytest_tmuxagent_scenarios" in source for source in files.values()):
        # the doc's promise about the report: the project's scenario has a row, its criterion too
        report = (pytester.path / "report.md").read_text(encoding="utf-8")
        doc = DOC.read_text(encoding="utf-8")
        for row in (
            "| H 夜间巡检 — nightly patrol | passed | 1 |",
            "| 夜间巡检通过 — the nightly patrol passes | ✅ met |",
        ):
            assert row in doc and row in report, report
