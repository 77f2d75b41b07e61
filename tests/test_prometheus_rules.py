"""The shipped deploy/ files: the scrape config and alert rules pass promtool, every
alert has a `promtool test rules` case that fires and one that stays quiet, and
every metric the rules and the Grafana dashboard name is one we export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.dashboard.server import DashboardApp

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana" / "tmuxagent-orchestrator.json"
METRIC_NAME = re.compile(r"\b((?:orchestrator|tmuxagent_dashboard)_[a-z_]+)\b")
SELECTOR = re.compile(r"\b(orchestrator_[a-z_]+)(\{[^}]*\}|)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: install Debian's `prometheus` package (.ci/run does)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd=PROMETHEUS)


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
    "unknown": ("",),
}


def exported_names(tmp_path: Path) -> set[str]:
    """Every sample name the orchestrator and the dashboard export, labelled or not."""
    app = DashboardApp(db=tmp_path / "missing.db", audit_log=tmp_path / "log.jsonl")
    names = set()
    for registry in (OrchestratorMetrics().registry, app.metrics.registry):
        for family in registry.collect():
            names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def test_scrape_config_is_valid_and_names_both_services() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {"tmux_orchestrator": ["127.0.0.1:9108"], "tmux_dashboard": ["127.0.0.1:8702"]}


def test_the_fleet_scrape_config_is_valid_and_labels_every_orchestrator_with_its_host() -> None:
    result = promtool("check", "config", "fleet.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS / "fleet.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "tmux_orchestrator"]
    assert job["honor_labels"] is True  # the served host label wins over the target's
    hosts = [(static["labels"]["host"], len(static["targets"])) for static in job["static_configs"]]
    assert len(hosts) >= 2 and all(count == 1 for _, count in hosts) and len({h for h, _ in hosts}) == len(hosts)


def test_alert_rules_pass_promtool_unit_tests() -> None:
    check = promtool("check", "rules", "alerts.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text(encoding="utf-8"))["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']}: no case where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']}: no case where it stays quiet"


def test_the_alerts_the_issue_asks_for_exist_with_a_severity() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name in (
        "TmuxAgentFailureStreak",
        "TmuxAgentCommandStalled",
        "TmuxAgentNotificationsDegraded",
        "TmuxAgentHeartbeatStale",
        "TmuxAgentQueueStuck",
        "TmuxAgentQueueBackingUp",
    ):
        assert name in rules
    assert {rule["labels"]["severity"] for rule in rules.values()} == {"critical", "warning"}
    assert "orchestrator_failure_alert_threshold" in rules["TmuxAgentFailureStreak"]["expr"]
    assert "命令连续失败" in rules["TmuxAgentFailureStreak"]["annotations"]["summary"]
    assert "命令卡顿" in rules["TmuxAgentCommandStalled"]["annotations"]["summary"]
    # the fleet's (issue 17): any live host reports a silent one, once per host however many report
    assert "主机失联" in rules["TmuxAgentHostDown"]["annotations"]["summary"]
    assert rules["TmuxAgentHostDown"]["expr"].startswith("max by (peer_host) (orchestrator_fleet_host_down)")
    assert "by" not in rules["TmuxAgentFleetFailureRate"]["expr"]  # fleet-wide: one sum over every host


def test_grafana_dashboard_is_well_formed() -> None:
    dashboard = json.loads(GRAFANA.read_text(encoding="utf-8"))
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in ("success rate", "failure rate", "queue depth", "stalls", "failure streaks"):
        assert topic in titles
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "host", "session", "window"}
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])
        for target in panel["targets"]:  # every series picked by the host variable
            for name, selector in SELECTOR.findall(target["expr"]):
                assert 'host=~"$host"' in selector or 'peer_host=~"$host"' in selector, (panel["title"], name)


def test_rules_and_dashboard_name_only_exported_metrics(tmp_path: Path) -> None:
    exported = exported_names(tmp_path)
    texts = [rule["expr"] for rule in alert_rules()]
    texts += [t["expr"] for p in json.loads(GRAFANA.read_text())["panels"] for t in p["targets"]]
    named = {name for text in texts for name in METRIC_NAME.findall(text)}
    assert named and named <= exported, sorted(named - exported)
