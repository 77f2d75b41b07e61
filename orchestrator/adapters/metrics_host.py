"""Every exported series carries `host`: the fleet's metrics from several orchestrators land in
one Prometheus, and a rule or a Grafana panel picks a host by label, not by scrape target.

The label is added on the way out (a `Collector` over the instance's own registry), so the
metrics code keeps its per-session label sets and the in-process registry its plain names; a
series that already names a `host` keeps its own. A Prometheus `host` target label (the fleet
scrape config sets one so that `up` has it too) then agrees with it; `honor_labels` keeps ours.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

HOST_LABEL = "host"


class HostLabelled:
    """A collector that yields `inner`'s families with `host=HOST` on every sample.

    >>> from prometheus_client import Counter, generate_latest
    >>> inner = CollectorRegistry()
    >>> Counter("jobs", "Jobs.", ["session"], registry=inner).labels(session="build").inc()
    >>> text = generate_latest(host_registry(inner, "gpu-2")).decode()
    >>> 'jobs_total{host="gpu-2",session="build"} 1.0' in text
    True
    """

    def __init__(self, inner: CollectorRegistry, host: str) -> None:
        self.inner = inner
        self.host = host

    def collect(self) -> Iterable[Metric]:
        for family in self.inner.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            labelled.samples = [
                sample
                if HOST_LABEL in sample.labels
                else sample._replace(labels={HOST_LABEL: self.host, **sample.labels})
                for sample in family.samples
            ]
            yield labelled


def host_registry(inner: CollectorRegistry, host: str) -> CollectorRegistry:
    """The registry to serve: `inner`'s series, each with `host` (nothing when `host` is empty)."""
    if not host:
        return inner
    served = CollectorRegistry(auto_describe=False)
    served.register(HostLabelled(inner, host))
    return served
