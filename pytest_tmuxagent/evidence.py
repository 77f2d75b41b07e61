"""Evidence: what decided a scenario (metric values, notification texts, audit
excerpts, pane output), recorded per test.

Evidence rides on `item.user_properties`, which pytest-xdist ships from each
worker to the controller with the test report — so the controller can write one
report for the whole run. Every text is redacted before it is stored, and the
same text is attached to Allure when allure-pytest is active.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pytest

from orchestrator.redact import redact

if TYPE_CHECKING:
    from _pytest.nodes import Node  # what `request.node` is; pytest exports no public name for it

__all__ = [
    "EVIDENCE_KEY",
    "FIGURES",
    "Evidence",
    "EvidenceItem",
    "allure",
    "evidence_from_properties",
    "step",
]

EVIDENCE_KEY = "tmuxagent_evidence"
MAX_TEXT = 4000
# The report's figures: name -> what the "Figures" table calls it (a scenario may record others).
FIGURES = {
    "feedback_latency": "feedback latency (command exit → result recorded)",
    "stall_detection": "stall detection (dispatch → stall detected)",
    "stall_alert_delivery": "stall alert delivery (stall detected → 命令卡顿 at WeCom)",
    "streak_to_alert": "streak-to-alert (last failure → 命令连续失败 at WeCom)",
    "degradation_to_delivery": "degradation-to-delivery (channel restored → first alert at WeCom)",
    "decision_to_delivery": "decision-to-delivery (blocker set → 下一步建议 at WeCom)",
}

allure: Any
try:  # allure-pytest is optional; evidence works without it
    allure = importlib.import_module("allure")
except ImportError:  # pragma: no cover
    allure = None


@dataclass(frozen=True)
class EvidenceItem:
    kind: str  # decision | figure | metrics | notifications | audit | pane | log | note | image | if fails | capability | failure
    title: str
    text: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> EvidenceItem:
        return cls(**json.loads(text))


class Evidence:
    """Per-test recorder; the `tmuxagent_evidence` fixture and the other fixtures use it."""

    def __init__(self, node: pytest.Item | Node) -> None:
        self.node = node

    def add(self, kind: str, title: str, text: str) -> None:
        """Record one piece of evidence (redacted; long texts keep their tail) for the report and Allure.

        `kind` is metrics, notifications, audit, pane, log or note; the report's scenario row
        quotes the first notifications/metrics/note item."""
        text = redact(text)
        if len(text) > MAX_TEXT:
            text = "…" + text[-MAX_TEXT:]
        item = EvidenceItem(kind=kind, title=redact(title), text=text)
        properties: list[tuple[str, object]] = getattr(self.node, "user_properties", [])
        properties.append((EVIDENCE_KEY, item.to_json()))
        if allure is not None:
            allure.attach(text, name=f"{kind}: {item.title}", attachment_type=allure.attachment_type.TEXT)

    def lines(self, kind: str, title: str, lines: Iterable[str]) -> None:
        """`add` with the lines joined."""
        self.add(kind, title, "\n".join(lines))

    def decide(self, sentence: str, *, headline: bool = False) -> None:
        """The fact that decided this test, in one whole sentence with its real figures, e.g.
        "`weather/bot` ran `(exit 7)`: exit_code 7 recorded 31 ms after it exited, counter +1."
        The report's scenario row quotes the scenario's `headline` decision (else its first one),
        never cut; its section lists every test's."""
        sentence = " ".join(sentence.split())
        if sentence and sentence[-1] not in ".!?。":
            sentence += "."
        self.add("decision", "headline" if headline else "decision", sentence)

    def if_fails(self, sentence: str) -> None:
        """What a failure from here on means, in the playbook's words, e.g. "stall detected but
        命令卡顿 not delivered": if the test then fails, the report's red row starts with the
        last such sentence (before the assertion); a passing test's are never shown. Optional —
        the scenario registry (capabilities.py) names a capability for every scenario test."""
        self.add("if fails", "if fails", " ".join(sentence.split()))

    def figure(self, name: str, seconds: float) -> None:
        """One measured time, in seconds (`feedback_latency`, `stall_detection`, `streak_to_alert`,
        `degradation_to_delivery`, … see FIGURES); the report gives per scenario its count,
        p50, p95 and max."""
        self.add("figure", name, repr(float(seconds)))

    def image(self, path: str, title: str) -> None:
        """An image file (a screenshot, a plot): linked from the report relative to it, and
        attached to Allure as a PNG."""
        properties: list[tuple[str, object]] = getattr(self.node, "user_properties", [])
        item = EvidenceItem(kind="image", title=redact(title), text=str(path))
        properties.append((EVIDENCE_KEY, item.to_json()))
        if allure is not None:
            with contextlib.suppress(OSError):
                allure.attach.file(str(path), name=item.title, attachment_type=allure.attachment_type.PNG)


def evidence_from_properties(properties: Iterable[tuple[str, Any]]) -> list[EvidenceItem]:
    items: list[EvidenceItem] = []
    for key, value in properties:
        if key == EVIDENCE_KEY:
            try:
                items.append(EvidenceItem.from_json(value))
            except (TypeError, ValueError):
                continue
    return items


def step(title: str) -> AbstractContextManager[Any]:
    """An Allure step when allure is active, a no-op context otherwise."""
    if allure is not None:
        manager: AbstractContextManager[Any] = allure.step(title)
        return manager
    return contextlib.nullcontext()
