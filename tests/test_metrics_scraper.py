"""Tests for MetricsScraper against a real prometheus_client HTTP exporter per test."""

from __future__ import annotations

import socket
import threading
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from pytest_tmuxagent.metrics_scraper import MetricsScraper, MetricsSnapshot
from pytest_tmuxagent.waiting import WaitTimeout


@dataclass
class Exporter:
    url: str
    commands: Counter
    streak: Gauge
    duration: Histogram


def serve(registry: CollectorRegistry, port: int = 0):  # type: ignore[no-untyped-def]
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    return server, thread


def shutdown(server, thread) -> None:  # type: ignore[no-untyped-def]
    # serve_forever only notices shutdown() every 0.5 s; shutting the listening socket down
    # first wakes its select() at once, keeping each test's teardown fast.
    server.socket.shutdown(socket.SHUT_RDWR)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    reg = CollectorRegistry()
    commands = Counter("orchestrator_commands", "Commands by result", ["session", "result"], registry=reg)
    streak = Gauge("orchestrator_failure_streak", "Consecutive failures", ["session"], registry=reg)
    duration = Histogram(
        "orchestrator_command_duration_seconds", "Duration", ["session"], buckets=(0.5, 5.0), registry=reg
    )
    server, thread = serve(reg)
    try:
        yield Exporter(f"http://127.0.0.1:{server.server_port}", commands, streak, duration)
    finally:
        shutdown(server, thread)


def test_value_picks_the_sample_whose_labels_are_a_superset(exporter: Exporter) -> None:
    exporter.commands.labels("weather/bot", "succeeded").inc(2)
    exporter.commands.labels("weather/bot", "failed").inc()
    exporter.commands.labels("other/agent", "succeeded").inc(7)
    snap = MetricsScraper(exporter.url).scrape()
    assert snap.value("orchestrator_commands_total", session="weather/bot", result="succeeded") == 2.0
    assert snap.value("orchestrator_commands_total", session="other/agent") == 7.0
    assert snap.value("orchestrator_commands_total", session="weather/bot", result="stalled") is None
    assert snap.value("no_such_metric") is None


def test_ambiguous_lookup_raises_and_names_the_candidates(exporter: Exporter) -> None:
    exporter.commands.labels("weather/bot", "succeeded").inc()
    exporter.commands.labels("weather/bot", "failed").inc()
    with pytest.raises(ValueError) as info:
        MetricsScraper(exporter.url).value("orchestrator_commands_total", session="weather/bot")
    assert 'result="succeeded"' in str(info.value) and 'result="failed"' in str(info.value)


def test_samples_histograms_and_raw_text(exporter: Exporter) -> None:
    exporter.duration.labels("weather/bot").observe(1.0)
    exporter.duration.labels("weather/bot").observe(0.1)
    snap = MetricsScraper(exporter.url + "/metrics").scrape()
    buckets = snap.samples("orchestrator_command_duration_seconds_bucket")
    assert [(s.labels["le"], s.value) for s in buckets] == [("0.5", 1.0), ("5.0", 2.0), ("+Inf", 2.0)]
    assert snap.value("orchestrator_command_duration_seconds_bucket", le="+Inf") == 2.0
    assert snap.value("orchestrator_command_duration_seconds_bucket", le=0.5) == 1.0  # non-str labels ok
    assert snap.value("orchestrator_command_duration_seconds_count", session="weather/bot") == 2.0
    assert "# HELP orchestrator_command_duration_seconds Duration" in snap.text


def test_base_url_and_metrics_url_are_equivalent() -> None:
    assert MetricsScraper("http://h:1").url == "http://h:1/metrics"
    assert MetricsScraper("http://h:1/").url == "http://h:1/metrics"
    assert MetricsScraper("http://h:1/custom/path").url == "http://h:1/custom/path"


def test_parse_rejects_invalid_exposition() -> None:
    snap = MetricsSnapshot.parse("# TYPE up gauge\nup 1\n")
    assert snap.value("up") == 1.0
    with pytest.raises(ValueError):
        MetricsSnapshot.parse("this is { not metrics")


def test_wait_until_value_sees_concurrent_updates(exporter: Exporter) -> None:
    writer = threading.Thread(target=lambda: [exporter.commands.labels("a", "failed").inc() for _ in range(5)])
    writer.start()
    scraper = MetricsScraper(exporter.url)
    assert scraper.wait_until_value("orchestrator_commands_total", 5, timeout=5, session="a") == 5.0
    writer.join()
    assert scraper.wait_until_value("orchestrator_commands_total", lambda v: v >= 3, timeout=5, session="a") == 5.0


def test_wait_until_value_handles_zero_and_reports_last_value(exporter: Exporter) -> None:
    exporter.streak.labels("weather/bot").set(0)
    scraper = MetricsScraper(exporter.url)
    assert scraper.wait_until_value("orchestrator_failure_streak", 0, timeout=2, session="weather/bot") == 0.0
    exporter.streak.labels("weather/bot").set(2)
    with pytest.raises(WaitTimeout) as info:
        scraper.wait_until_value("orchestrator_failure_streak", 3, timeout=0.2, session="weather/bot")
    assert "orchestrator_failure_streak" in str(info.value) and "current value 2.0" in str(info.value)


def test_wait_until_value_retries_until_the_exporter_is_up() -> None:
    # Hold a free port without listening on it, so the first scrape is refused for certain.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    scraper = MetricsScraper(f"http://127.0.0.1:{port}", timeout=2)
    reg = CollectorRegistry()
    Gauge("orchestrator_heartbeat_timestamp_seconds", "Heartbeat", registry=reg).set(42)
    started: list = []
    real_scrape = scraper.scrape

    def scrape_then_start_server() -> MetricsSnapshot:
        try:
            return real_scrape()
        except urllib.error.URLError:
            if not started:  # the exporter comes up only after a refused attempt
                holder.close()
                started.extend(serve(reg, port))
            raise

    scraper.scrape = scrape_then_start_server  # type: ignore[method-assign]
    try:
        assert scraper.wait_until_value("orchestrator_heartbeat_timestamp_seconds", 42, timeout=5) == 42.0
        assert started, "the first scrape should have been refused"
    finally:
        holder.close()
        if started:
            shutdown(*started)
