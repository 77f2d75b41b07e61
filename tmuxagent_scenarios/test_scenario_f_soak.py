"""Scenario F, 回归测试 四.2 (导出 Prometheus/Grafana 10 分钟数据): a mixed workload runs for the
soak duration (`--tmuxagent-soak`, default 20 s; `tmux-agent validate --soak` alone: 10 min)
against an orchestrator scraped by a real Prometheus from the shipped config; its range queries
are exported as CSV and one PNG, beside the report and linked from it.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from pytest_tmuxagent import options
from pytest_tmuxagent.soak import export, parse_duration, plot, run_workload
from pytest_tmuxagent.waiting import wait_until
from tmuxagent_scenarios.test_scenario_f_metrics import PROMETHEUS_YML

pytestmark = [pytest.mark.scenario_f, pytest.mark.tmuxagent_soak]

SESSIONS = ("weather/bot", "ops/deploy", "weather/api")
SETTINGS = {
    "stall_timeout_seconds": 2,
    "stall_retries_before_notify": 0,
    "cooldown_seconds": 1,
    "failure_alert_threshold": 3,
    "notifications": {"retry_backoff_seconds": 0.2, "request_timeout_seconds": 1, "env_reload_seconds": 0.2},
}


def test_soak_exports_the_playbook_range_queries_as_csv_and_png(
    request, agent_pane, orchestrator_service, wecom_mock, tmuxagent_prometheus_server, tmuxagent_evidence
) -> None:
    seconds = parse_duration(options.soak(request.config))
    panes = [agent_pane(name) for name in SESSIONS]
    service = orchestrator_service(panes, settings=SETTINGS, env=wecom_mock.env("webhook"))
    prom = tmuxagent_prometheus_server(
        PROMETHEUS_YML, {"tmux_orchestrator": [urlsplit(service.metrics.url).netloc]}, scrape_interval="1s"
    )
    prom.wait_scraped("tmux_orchestrator")

    def streak() -> None:  # three failures in a row block ops/deploy; unblocked once alerted
        for i in range(3):
            service.send("ops/deploy", f"echo boom {i}; (exit {11 + i})")
        wait_until(lambda: service.metadata("ops/deploy").get("blocked"), timeout=30, message="ops/deploy blocked")
        service.cli("unblock", "ops/deploy")

    def outage(down: bool) -> None:
        wecom_mock.set_mode("http_500") if down else wecom_mock.reset()

    start = time.time()
    done = run_workload(service, SESSIONS[:2], seconds, stall_session="weather/api", streak=streak, outage=outage)
    wait_until(
        lambda: (
            service.status()["sessions"]
            and all(s["queue_depth"] == 0 for s in service.status()["sessions"] if s["name"] != "weather/api")
        ),
        timeout=60,
        message="the queues drained",
    )
    time.sleep(2.5)  # two more scrapes after the last result
    end = time.time()

    folder = options.artifacts_dir(request.config) / "soak"
    series = export(prom, start, end, folder, scrape=1.0)
    png = plot(series, folder / "soak.png", f"tmuxagent soak: {seconds:g} s mixed workload, {len(SESSIONS)} sessions")

    results = {
        (r["metric"]["session"], r["metric"]["result"]): float(r["value"][1])
        for r in prom.query("sum by (session, result) (orchestrator_commands_total)")
    }
    total = sum(results.values())
    by_result = {k: sum(v for (_, res), v in results.items() if res == k) for k in ("succeeded", "failed", "stalled")}
    assert total >= done.sent * 0.9 and by_result["stalled"] >= 1 and by_result["failed"] >= 3
    assert all((folder / f"{q.name}.csv").stat().st_size > 40 for q in series)
    assert png.stat().st_size > 10_000
    points = sum(len(p) for s in series.values() for _, p in s)

    tmuxagent_evidence.decide(
        f"A {seconds:g} s mixed soak sent {done.sent} commands to {len(SESSIONS)} sessions "
        f"(bursts of 5: {done.bursts}, stalls: {done.stalls}, failure streaks: {done.streaks}, WeCom outages: {done.outages}); "
        f"Prometheus counted {by_result['succeeded']:.0f} succeeded, {by_result['failed']:.0f} failed and "
        f"{by_result['stalled']:.0f} stalled, and {len(series)} range queries ({points} points) were exported "
        f"as CSV and PNG",
        headline=True,
    )
    for query in series:
        tmuxagent_evidence.add("export", f"{query.title} [{query.unit}]", str(folder / f"{query.name}.csv"))
    tmuxagent_evidence.image(str(png), f"soak: {seconds:g} s of Prometheus range queries")
