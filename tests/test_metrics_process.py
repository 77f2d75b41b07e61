"""`/metrics` carries the standard process_* series (CPU, memory, fds, start time) next to ours:
the orchestrator serves its own registry, which has no collectors unless it registers them."""

from __future__ import annotations

import os
import urllib.request

from orchestrator.adapters.metrics import OrchestratorMetrics, serve


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
