"""Scenario F (指标与审计): a real Prometheus server, configured from the shipped
`deploy/prometheus/` files, scrapes a running orchestrator and dashboard while
scenario-A-style commands run. Its HTTP API then shows the success and failure
rates and queue depth that were dispatched, no alert at all on the healthy run
("指标无红色告警"), the failure-streak alert firing once a streak is induced, and
every Grafana panel query evaluating. Finally `tmux-agent-orchestrator-replay
--verify-db` replays the audit log and finds the state DB identical.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pytest_tmuxagent.waiting import wait_until
from tmuxagent_scenarios.common import replay_cli, replay_verified

pytestmark = pytest.mark.scenario_f

# The repo's deploy/ (a symlink in the checkout; copied into the wheel as package data).
DEPLOY = Path(__file__).parent / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
GRAFANA_JSON = DEPLOY / "grafana" / "tmuxagent-orchestrator.json"
BOT, OPS = "weather/bot", "ops/deploy"

# The PromQL this scenario asserts on (also recorded as evidence for the report).
SUCCESS_RATE = (
    'sum by (session) (increase(orchestrator_commands_total{result="succeeded"}[5m]))'
    " / sum by (session) (increase(orchestrator_commands_total[5m]))"
)
FAILURE_RATE = (
    'sum by (session) (increase(orchestrator_commands_total{result="failed"}[5m]))'
    " / sum by (session) (increase(orchestrator_commands_total[5m]))"
)
RESULTS = "sum by (session, result) (orchestrator_commands_total)"
DISPATCHED = "sum by (session) (orchestrator_commands_dispatched_total)"
QUEUE_NOW = f'orchestrator_queue_depth{{session="{BOT}"}}'
QUEUE_MAX = f'max_over_time(orchestrator_queue_depth{{session="{BOT}"}}[5m])'
DURATIONS = "sum(orchestrator_command_duration_seconds_count)"
ALL_ALERTS = 'ALERTS{alertname=~"TmuxAgent.*"}'
STREAK = f'orchestrator_failure_streak{{session="{OPS}"}}'
BLOCKED = f'orchestrator_session_blocked{{session="{OPS}"}}'
FIRING_STREAK = 'ALERTS{alertname="TmuxAgentFailureStreak", alertstate="firing"}'

GATE = "while [ ! -e gate ]; do sleep 0.05; done; echo gate-open"
QUEUED_BEHIND_GATE = ["echo one", "false", "echo two", "true", "(exit 4)", "echo three", "echo four"]


def by_session(prom, expr: str) -> dict[str, float]:
    return {r["metric"].get("session", ""): float(r["value"][1]) for r in prom.query(expr)}


def grafana_queries() -> list[tuple[str, str]]:
    """Every panel query of the shipped Grafana dashboard, with its variables filled in."""
    dashboard = json.loads(GRAFANA_JSON.read_text(encoding="utf-8"))
    fill = {"$host": ".*", "$session": ".*", "$window": "5m", "$__rate_interval": "1m"}
    out = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for var, value in fill.items():
                expr = expr.replace(var, value)
            out.append((panel["title"], expr))
    return out


def test_prometheus_sees_rates_and_queue_alerts_only_on_a_streak_and_replay_verifies(
    agent_pane,
    orchestrator_service,
    tmuxagent_dashboard_server,
    tmuxagent_prometheus_server,
    wecom_mock,
    tmuxagent_evidence,
    tmuxagent_browser_page,
    tmuxagent_save_screenshot,
) -> None:
    bot, ops = agent_pane(BOT), agent_pane(OPS)
    service = orchestrator_service(
        [bot, ops], settings={"stall_timeout_seconds": 30, "failure_alert_threshold": 3}, env=wecom_mock.env("webhook")
    )
    dashboard = tmuxagent_dashboard_server(service.state_db, service.audit_log)
    prom = tmuxagent_prometheus_server(
        PROMETHEUS_YML,
        {"tmux_orchestrator": [urlsplit(service.metrics.url).netloc], "tmux_dashboard": [dashboard.hostport]},
    )
    evidence: list[str] = []

    def record(expr: str, value: object) -> None:
        evidence.append(f"{expr}\n  => {value}")

    # A gate holds the pane while seven commands queue behind it (Prometheus discovers its
    # targets ~5 s after start, so its first samples see every counter at 0).
    gate = service.send(BOT, GATE)
    wait_until(lambda: service.command(gate).status == "running", timeout=10, message="the gate command running")
    queued = [service.send(BOT, command) for command in QUEUED_BEHIND_GATE]
    prom.wait_scraped("tmux_orchestrator")
    prom.wait_scraped("tmux_dashboard")
    record(QUEUE_NOW, prom.wait_value(QUEUE_NOW, 7.0))
    ops_ok = [service.send(OPS, "echo deploy ok"), service.send(OPS, "echo deploy ok again")]

    (bot.workdir / "gate").touch()
    rows = [service.wait_result(i) for i in [gate, *queued, *ops_ok]]
    assert [r.status for r in rows[:8]].count("succeeded") == 6 and [r.status for r in rows[8:]] == ["succeeded"] * 2
    prom.wait_value(f'sum(orchestrator_commands_total{{session="{BOT}"}})', 8.0)
    prom.wait_value(f'sum(orchestrator_commands_total{{session="{OPS}"}})', 2.0)
    prom.wait_value(QUEUE_NOW, 0.0)

    # success rate, failure rate and queue depth match what was dispatched
    success, failure = by_session(prom, SUCCESS_RATE), by_session(prom, FAILURE_RATE)
    assert success == pytest.approx({BOT: 6 / 8, OPS: 1.0}) and failure == pytest.approx({BOT: 2 / 8, OPS: 0.0})
    results = {(r["metric"]["session"], r["metric"]["result"]): float(r["value"][1]) for r in prom.query(RESULTS)}
    assert {k: v for k, v in results.items() if v} == {(BOT, "succeeded"): 6, (BOT, "failed"): 2, (OPS, "succeeded"): 2}
    assert by_session(prom, DISPATCHED) == {BOT: 8.0, OPS: 2.0}
    assert prom.value(QUEUE_MAX) == 7.0
    assert prom.value(DURATIONS) == 10.0
    for expr, value in (
        (SUCCESS_RATE, success),
        (FAILURE_RATE, failure),
        (RESULTS, results),
        (DISPATCHED, by_session(prom, DISPATCHED)),
        (QUEUE_MAX, 7.0),
        (DURATIONS, 10.0),
    ):
        record(expr, value)

    # the healthy run: rules evaluated cleanly after the data, and no alert pending or firing
    prom.wait_rules_evaluated_after(time.time())
    rules = [r for g in prom.rule_groups() for r in g["rules"]]
    assert len(rules) >= 10 and all(r["health"] == "ok" for r in rules), [
        (r["name"], r.get("lastError")) for r in rules
    ]
    assert prom.alerts() == [] and prom.query(ALL_ALERTS) == []
    record(ALL_ALERTS, "[] (healthy run: nothing pending or firing)")

    # every Grafana panel query evaluates against the real data; the success-rate stat is 8/10
    panels = grafana_queries()
    for _title, expr in panels:
        prom.query(expr)  # raises with Prometheus's message on a bad expression
    assert prom.value(panels[0][1]) == pytest.approx(0.8)
    record(panels[0][1], 0.8)

    # induce a streak: three failures block ops/deploy; the streak alert fires for it alone
    failures = [service.send(OPS, f"echo boom {i}; (exit {11 + i})") for i in range(3)]
    held = service.send(OPS, "echo held")
    assert [service.wait_result(i).status for i in failures] == ["failed"] * 3
    record(STREAK, prom.wait_value(STREAK, 3.0))
    record(BLOCKED, prom.wait_value(BLOCKED, 1.0))
    firing = wait_until(lambda: prom.alerts("firing"), timeout=15, message="the failure-streak alert firing")
    assert [(a["labels"]["alertname"], a["labels"]["session"], a["labels"]["severity"]) for a in firing] == [
        ("TmuxAgentFailureStreak", OPS, "critical")
    ]
    assert firing[0]["annotations"]["summary"] == f"命令连续失败 · {OPS}: 3 consecutive failures"
    assert [r["metric"]["session"] for r in prom.query(FIRING_STREAK)] == [OPS]
    record(FIRING_STREAK, firing[0]["labels"])
    [alert] = wecom_mock.wait_for_messages(1)
    assert "命令连续失败" in alert and OPS in alert

    page = tmuxagent_browser_page
    page.goto(dashboard.url)
    page.locator(f'[data-session="{OPS}"] .blocked-badge').wait_for()
    assert page.errors == []
    shot = tmuxagent_save_screenshot(page, "scenario-f-streak")

    # replay the audit log of this mixed run and verify it against the state DB
    summary = replay_verified(service)
    assert summary["commands"]["results"] == {"succeeded": 8, "failed": 5}
    assert summary["commands"]["success_rate"] == pytest.approx(8 / 13)
    assert summary["sessions"][BOT]["max_queue_depth"] == 7
    ops_state = summary["sessions"][OPS]
    assert (ops_state["failure_streak"], ops_state["blocked"], ops_state["queued"]) == (3, True, [held])
    assert [(e["session"], e["failures"], e["outcome"]) for e in summary["streak_episodes"]] == [(OPS, 3, "open")]
    assert summary["sessions"][BOT]["last_command_result"]["command"] == "echo four"

    # the check is not vacuous: a DB that disagrees with the log fails it, naming the difference
    tampered = service.root / "tampered.db"
    with closing(sqlite3.connect(service.state_db)) as source, closing(sqlite3.connect(tampered)) as db:
        source.backup(db)  # the DB is in WAL mode: copying the file alone may miss the WAL
        db.execute("UPDATE commands SET status='queued' WHERE id=?", (queued[0],))
        db.commit()
    verdict = replay_cli("--log", str(service.audit_log), "--verify-db", str(tampered))
    assert verdict.returncode == 1
    assert (
        f"{BOT}: results by status" in verdict.stdout
        and f"{BOT}: queued commands: log [], DB [{queued[0]}]" in verdict.stdout
    )

    tmuxagent_evidence.add("metrics", "PromQL queries against the real Prometheus server", "\n".join(evidence))
    tmuxagent_evidence.add(
        "audit",
        "tmux-agent-orchestrator-replay --verify-db",
        replay_cli("--log", str(service.audit_log), "--verify-db", str(service.state_db)).stdout,
    )
    tmuxagent_evidence.decide(
        f"A real Prometheus scraped the orchestrator: success rate {BOT} {success[BOT]:.2f} and {OPS} "
        f"{success[OPS]:.2f}, failure rate {BOT} {failure[BOT]:.2f}, max queue depth 7, no alert on the healthy "
        f"run, TmuxAgentFailureStreak firing for {OPS} alone after 3 failures; replay --verify-db found the DB "
        "identical and caught a tampered copy",
        headline=True,
    )
    assert shot.exists()
