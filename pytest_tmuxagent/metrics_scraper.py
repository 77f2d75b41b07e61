"""Scrape a Prometheus ``/metrics`` endpoint the way Prometheus would, and query the result.

Tests check the orchestrator through its public surface, and metrics are part of that contract.
Scraping over real HTTP (rather than reading the in-process registry) proves the exporter is up,
serves valid text exposition, and carries the expected labels. Parsing uses prometheus_client's
own parser so what passes here is what a Prometheus server would ingest.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional, Union
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from .waiting import wait_until

__all__ = ["MetricsScraper", "MetricsSnapshot"]

Expected = Union[float, int, Callable[[float], bool]]


@dataclass(frozen=True)
class MetricsSnapshot:
    """One scrape: the raw exposition text and every sample in it.

    Lookups are by *sample* name (``orchestrator_commands_total``, ``..._bucket``), not family
    name, because that is what appears on the wire and in PromQL.
    """

    text: str
    all_samples: tuple[Sample, ...] = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> MetricsSnapshot:
        """Parse exposition text; raises ValueError if it is not valid Prometheus text."""
        samples = tuple(s for fam in text_string_to_metric_families(text) for s in fam.samples)
        return cls(text=text, all_samples=samples)

    def samples(self, name: str) -> list[Sample]:
        """All samples with exactly this sample name, in exposition order."""
        return [s for s in self.all_samples if s.name == name]

    def value(self, name: str, **labels: object) -> Optional[float]:
        """Value of the one sample named ``name`` whose labels include ``labels``.

        Returns None when no sample matches (a labelled series that was never touched is simply
        absent). Raises ValueError when several match, since silently picking or summing one
        would hide an under-specified query; the message lists them so the fix is obvious.
        """
        wanted = {k: str(v) for k, v in labels.items()}
        matches = [s for s in self.samples(name) if wanted.items() <= s.labels.items()]
        if len(matches) > 1:
            found = ", ".join(_format(s) for s in matches)
            raise ValueError(f"{len(matches)} samples match {name}{wanted}; add labels to pick one: {found}")
        return matches[0].value if matches else None


def _format(sample: Sample) -> str:
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
    return f"{sample.name}{{{labels}}} {sample.value}"


class _NotYet(Exception):
    """Raised inside a wait to report the last value seen when the deadline passes."""


class MetricsScraper:
    """HTTP client for one metrics endpoint.

    ``url`` may be the exporter's base (``http://127.0.0.1:9108``) or the full ``/metrics`` URL.
    """

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        self.url = url.rstrip("/") + "/metrics" if parts.path in ("", "/") else url
        self.timeout = timeout

    def scrape(self) -> MetricsSnapshot:
        """GET the endpoint and parse it. HTTP and connection errors propagate (URLError)."""
        request = urllib.request.Request(self.url, headers={"Accept": "text/plain"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            text = response.read().decode("utf-8")
        return MetricsSnapshot.parse(text)

    def value(self, name: str, **labels: object) -> Optional[float]:
        """Scrape now and return ``MetricsSnapshot.value(name, **labels)``."""
        return self.scrape().value(name, **labels)

    def wait_until_value(
        self,
        name: str,
        predicate_or_expected: Expected,
        timeout: float = 10.0,
        **labels: object,
    ) -> float:
        """Scrape repeatedly until the sample satisfies the condition; return its value.

        ``predicate_or_expected`` is either a number (equality) or a callable on the float
        value. An absent sample counts as "not yet" and the predicate is not called with None.
        Connection errors are retried, so this can also wait for the exporter to come up.
        """
        if callable(predicate_or_expected):
            check = predicate_or_expected
            wanted = getattr(predicate_or_expected, "__name__", "predicate")
        else:
            expected = float(predicate_or_expected)
            check, wanted = (lambda v: v == expected), f"== {expected}"
        what = f"{name}{labels or ''} {wanted} at {self.url}"

        def attempt() -> tuple[float]:
            current = self.value(name, **labels)
            if current is None or not check(current):
                raise _NotYet(f"{what}: current value {current}")
            return (current,)  # a 1-tuple is truthy even when the value is 0.0

        return wait_until(attempt, timeout=timeout, interval=0.05, message=what)[0]
