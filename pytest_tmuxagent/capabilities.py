"""Which capability a scenario test proves, in the playbook's words — so a red row in the
report says what broke ("B: stall detected but 命令卡顿 not delivered") before the assertion.

A failed test's capability comes from, most specific first:

1. `tmuxagent_evidence.if_fails(sentence)` — the last one the test recorded before it failed
   (a test may say, step by step, what a failure from here on means);
2. a `Clause` of its registry entry whose pattern matches the failing statement (else the
   assertion message; the statements are recorded on the worker, so this works under xdist),
   then the plugin fixtures' own (`FIXTURE_CLAUSES`: a secret in a log);
3. the test's `@pytest.mark.capability("…")` marker;
4. its registry entry's `proves` (`PLAYBOOK_CAPABILITIES` for the built-in A–G, by test
   function name), with "— broken";
5. the scenario's title (a project's scenario whose tests name no capability).

capability_plugin.py records, on the worker, the marker's phrase and the failing statements
as evidence; this module reads them on the controller.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .evidence import EvidenceItem

if TYPE_CHECKING:
    from .registry import Scenario

__all__ = [
    "CAPABILITY_EVIDENCE",
    "FAILURE_EVIDENCE",
    "IF_FAILS_EVIDENCE",
    "MARKER",
    "Capability",
    "Clause",
    "capability_of",
    "function_name",
    "what_broke",
]

MARKER = "capability"
CAPABILITY_EVIDENCE = "capability"  # evidence kind: the test's capability marker phrase
FAILURE_EVIDENCE = "failure"  # evidence kind: the failing statements, innermost last
IF_FAILS_EVIDENCE = "if fails"  # evidence kind: `Evidence.if_fails(sentence)`
HIDDEN_KINDS = (CAPABILITY_EVIDENCE, FAILURE_EVIDENCE, IF_FAILS_EVIDENCE)  # said in the row, not the details


@dataclass(frozen=True)
class Clause:
    """What broke, when `pattern` (a regex, case-insensitive) is found in the failing statement
    or in the assertion's message. A test's clauses are tried in order: put the specific first."""

    pattern: str
    broke: str


@dataclass(frozen=True)
class Capability:
    """What the tests named by `tests` (fnmatch patterns on the test function's name, without
    its parametrize id) prove, in the playbook's words, and how a failure of theirs reads."""

    tests: tuple[str, ...]
    proves: str
    clauses: tuple[Clause, ...] = field(default=())

    def covers(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.tests)

    def clause_for(self, statement: str, message: str = "") -> Clause | None:
        """The first clause matching the failing statement, else the first matching the message
        (a message may quote a log, so the statement is the surer sign)."""
        for text in (statement, message):
            found = next((c for c in self.clauses if text and re.search(c.pattern, text, re.IGNORECASE)), None)
            if found is not None:
                return found
        return None


# What the plugin's own fixtures check for every test, whatever its scenario (the service
# fixture's teardown fails a test whose secrets reached a log).
FIXTURE_CLAUSES = (Clause(r"secrets reached a log", "a secret reached a log or the audit file"),)


def function_name(test_name: str) -> str:
    """`test_feedback` of `test_feedback[bash-success]` or `TestX::test_feedback`."""
    return test_name.split("[", 1)[0].rsplit("::", 1)[-1]


def capability_of(
    letter: str, test_name: str, table: Mapping[str, Sequence[Capability]] | None = None
) -> Capability | None:
    """The registry entry of scenario `letter` that covers this test, if any."""
    if table is None:
        from .playbook_capabilities import PLAYBOOK_CAPABILITIES

        table = PLAYBOOK_CAPABILITIES
    name = function_name(test_name)
    return next((c for c in table.get(letter, ()) if c.covers(name)), None)


def _texts(evidence: Iterable[EvidenceItem], kind: str) -> list[str]:
    return [e.text for e in evidence if e.kind == kind and e.text.strip()]


def _last(evidence: Iterable[EvidenceItem], kind: str) -> str:
    return next(reversed(_texts(evidence, kind)), "")


def what_broke(
    letter: str,
    test_name: str,
    evidence: Sequence[EvidenceItem],
    reason: str,
    scenario: Scenario | None = None,
    table: Mapping[str, Sequence[Capability]] | None = None,
) -> str:
    """The red row's first words: `B: stall detected but 命令卡顿 not delivered` (see the
    module docstring for where it comes from)."""
    label = letter.upper()
    said = _last(evidence, IF_FAILS_EVIDENCE)
    if said:
        return f"{label}: {said}"
    entry = capability_of(letter, test_name, table)
    statement = next(iter(_texts(evidence, FAILURE_EVIDENCE)), "")  # the first failure's, as `reason` is
    fixtures = Capability((), "", FIXTURE_CLAUSES)
    candidates = [entry] if entry is not None else []
    # no statement of the test's own: it failed in a fixture, whose message says more than the entry's clauses
    candidates = [fixtures, *candidates] if not statement else [*candidates, fixtures]
    clause = next((c for cap in candidates if (c := cap.clause_for(statement, reason))), None)
    if clause is not None:
        return f"{label}: {clause.broke}"
    proves = _last(evidence, CAPABILITY_EVIDENCE) or (entry.proves if entry is not None else "")
    if not proves:
        proves = scenario.title if scenario is not None else function_name(test_name)
    return f"{label}: {proves} — broken"
