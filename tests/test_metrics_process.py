"""`/metrics` carries the standard process_* series (CPU, memory, fds, start time) next to ours:
the orchestrator serves its own registry, which has no collectors unless it registers them."""

from __future__ import annotations

import os
import urllib.request

from orchestrator.adapters.metrics import OrchestratorMetrics, serve
from pytest_tmuxagent.metrics_scraper import MetricsScraper


def test_metrics_over_http_include_process_and_python_series() -> None:
    metrics = OrchestratorMetrics()
    server = serve(metrics, "127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    samples = {line.split(" ")[0].split("{")[0] for line in text.splitlines() if line and not line.startswith("#")}
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
    ):
        assert name in samples, name
    assert "orchestrator_notifications_dead_total" in text  # our families are still there
    start = metrics.registry.get_sample_value("process_start_time_seconds")
    assert start is not None and start > 0
    open_fds = metrics.registry.get_sample_value("process_open_fds")
    assert open_fds is not None and 0 < open_fds <= len(os.listdir("/proc/self/fd")) + 5


def test_every_served_series_names_the_host_and_a_reported_peer_keeps_its_own_label() -> None:
    metrics = OrchestratorMetrics(host="gpu-2")
    metrics.register_session("trainer")
    metrics.report_hosts({"gpu-1": (41.5, True), "gpu-2": (0.2, False)})
    server = serve(metrics, "127.0.0.1", 0)
    try:
        scraped = MetricsScraper(f"http://127.0.0.1:{server.server_port}").scrape()
    finally:
        server.shutdown()
        server.server_close()
    assert scraped.all_samples and {s.labels.get("host") for s in scraped.all_samples} == {"gpu-2"}
    assert scraped.value("orchestrator_commands_total", session="trainer", result="failed") == 0
    assert scraped.value("orchestrator_fleet_host_down", peer_host="gpu-1") == 1
    assert scraped.value("orchestrator_fleet_heartbeat_age_seconds", peer_host="gpu-1") == 41.5
    assert scraped.value("orchestrator_fleet_host_down", peer_host="gpu-2") == 0
    # the in-process registry keeps the plain label sets the engine writes
    assert metrics.registry.get_sample_value("orchestrator_fleet_host_down", {"peer_host": "gpu-1"}) == 1
