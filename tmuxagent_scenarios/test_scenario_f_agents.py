"""Scenario F (指标与审计) for agent sessions: the real Claude Code or codex, driven by the scripted
model server, runs three turns whose tool requests are approved by the safety policy, denied by
it, and escalated to a person who approves; beside it a shell command asks a question a person
replies to. What happened shows in `/metrics` (clean under `promtool check metrics`), in a real
Prometheus server's queries (turns by provider, approvals by decision and by whom, the time
people were waited for, both waiting states at once, no alert), and in
`tmux-agent-orchestrator-replay`: the turns, each approval with who decided and how long the
agent waited, and the time each session spent waiting for a person — the same figures as the
metrics, and `--verify-db` finds the state DB identical.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pytest_tmuxagent.model_server import text
from pytest_tmuxagent.waiting import wait_until
from tmuxagent_scenarios.agent_cases import PROVIDERS, TURN_TIMEOUT, script, shell_call
from tmuxagent_scenarios.common import replay_cli, replay_verified

pytestmark = pytest.mark.scenario_f

PROMETHEUS_YML = Path(__file__).parent / "deploy" / "prometheus" / "prometheus.yml"
AGENT, SHELL = "weather/agent", "weather/bot"
APPROVALS = {"approvals": {"allowlist": [r"touch \S+\.txt"]}}
PROMPTS = ("make the notes file", "clean the build folder", "deploy the weather bot")
QUESTION = "read -p 'ship it? [y/N] ' answer; echo \"answer=$answer\""

# The PromQL this scenario asserts on (also recorded as evidence for the report).
TURNS_BY_PROVIDER = (
    "sum by (provider, result) (orchestrator_commands_total"
    ' * on (session) group_left (provider) orchestrator_session_info{kind="agent"})'
)
REQUESTS = "sum by (session, verdict) (orchestrator_approval_requests_total)"
DECISIONS = "sum by (session, decision, by) (orchestrator_approvals_total)"
WAIT_SUM = "sum by (session, by) (orchestrator_approval_wait_seconds_sum)"
WAIT_COUNT = "sum by (session, by) (orchestrator_approval_wait_seconds_count)"
WAITING = 'orchestrator_session_state{state=~"waiting_approval|waiting_input"} == 1'
QUESTIONS = "sum by (session) (orchestrator_input_requests_total)"
SESSIONS = "orchestrator_session_info"
ALL_ALERTS = 'ALERTS{alertname=~"TmuxAgent.*"}'


def promtool_check(exposition: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: install Debian's `prometheus` package (.ci/run does)")
    return subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=30)


def nonzero(prom, expr: str, *labels: str) -> dict[tuple[str, ...], float]:  # type: ignore[no-untyped-def]
    """An instant query as {label values: value}, leaving out the series at zero."""
    found = {tuple(r["metric"].get(k, "") for k in labels): float(r["value"][1]) for r in prom.query(expr)}
    return {k: v for k, v in found.items() if v}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_agent_turns_approvals_questions_and_states_in_metrics_prometheus_and_replay(  # type: ignore[no-untyped-def]
    provider,
    agent_pane,
    agent_session,
    orchestrator_service,
    model_server,
    tmuxagent_prometheus_server,
    wecom_mock,
    tmuxagent_evidence,
) -> None:
    agent, shell = agent_pane(AGENT), agent_pane(SHELL)
    (agent.workdir / "build").mkdir()
    service = orchestrator_service(
        [agent, shell],
        session_overrides={AGENT: dict(agent_session(provider, agent, model_server))},
        settings={"stall_timeout_seconds": 120, **APPROVALS},
        env=wecom_mock.env("webhook"),
    )
    prom = tmuxagent_prometheus_server(PROMETHEUS_YML, {"tmux_orchestrator": [urlsplit(service.metrics.url).netloc]})
    evidence: list[str] = []

    def record(expr: str, value: object) -> None:
        evidence.append(f"{expr}\n  => {value}")

    # approved by the policy (allowlisted), denied by it (destructive), escalated to a person
    script(
        model_server,
        provider,
        shell_call(provider, "touch notes.txt", escalate=True, why="notes"),
        text("Notes made."),
        shell_call(provider, "rm -rf build", escalate=True, why="clean up"),
        text("I left build alone."),
        shell_call(provider, "touch deploy.log", escalate=True, why="deploy"),
        text("Deployed."),
    )
    turns = [service.send(AGENT, prompt) for prompt in PROMPTS]
    question = service.send(SHELL, QUESTION)

    # both sessions wait for a person at once, and Prometheus sees both states
    wait_until(
        lambda: (service.metadata(AGENT).get("pending_approval") or {}).get("verdict") == "escalate",
        timeout=3 * TURN_TIMEOUT,
        message="the third turn's tool request escalated to a person",
    )
    prom.wait_scraped("tmux_orchestrator")
    waiting = wait_until(
        lambda: len(found := nonzero(prom, WAITING, "session", "state")) == 2 and found,
        timeout=20,
        message="the agent waiting_approval and the shell waiting_input, in Prometheus",
    )
    assert waiting == {(AGENT, "waiting_approval"): 1.0, (SHELL, "waiting_input"): 1.0}
    record(WAITING, waiting)
    assert [service.command(i).status for i in turns] == ["succeeded", "succeeded", "running"]  # type: ignore[union-attr]
    assert service.metadata(AGENT)["pending_approval"]["command"] == "touch deploy.log"
    scraped = service.metrics.scrape()
    assert scraped.value("orchestrator_session_state", session=AGENT, state="waiting_approval") == 1.0
    assert scraped.value("orchestrator_session_state", session=AGENT, state="working") == 0.0
    assert scraped.value("orchestrator_session_state", session=SHELL, state="waiting_input") == 1.0
    assert not (agent.workdir / "deploy.log").exists()

    service.cli("reply", SHELL, "--", "y")
    service.cli("approve", AGENT)
    rows = [service.wait_result(i, timeout=TURN_TIMEOUT) for i in (*turns, question)]
    assert [r.status for r in rows] == ["succeeded"] * 4
    assert (agent.workdir / "notes.txt").exists() and (agent.workdir / "deploy.log").exists()
    assert (agent.workdir / "build").is_dir()

    # /metrics: every series, promtool-clean
    service.metrics.wait_until_value("orchestrator_session_state", 1.0, session=AGENT, state="idle")
    service.metrics.wait_until_value("orchestrator_session_state", 1.0, session=SHELL, state="idle")
    scraped = service.metrics.scrape()
    checked = promtool_check(scraped.text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert scraped.value("orchestrator_commands_total", session=AGENT, result="succeeded") == 3.0
    assert scraped.value("orchestrator_session_info", session=AGENT, kind="agent", provider=provider) == 1.0
    assert scraped.value("orchestrator_session_info", session=SHELL, kind="shell") == 1.0
    for verdict in ("approve", "deny", "escalate"):
        assert scraped.value("orchestrator_approval_requests_total", session=AGENT, verdict=verdict) == 1.0
    for decision, by in (("approved", "policy"), ("denied", "policy"), ("approved", "person")):
        assert scraped.value("orchestrator_approvals_total", session=AGENT, decision=decision, by=by) == 1.0
    assert scraped.value("orchestrator_approvals_total", session=AGENT, decision="denied", by="person") == 0.0
    assert scraped.value("orchestrator_approval_wait_seconds_count", session=AGENT, by="policy") == 2.0
    assert scraped.value("orchestrator_approval_wait_seconds_count", session=AGENT, by="person") == 1.0
    person_wait = scraped.value("orchestrator_approval_wait_seconds_sum", session=AGENT, by="person")
    assert person_wait is not None and person_wait > 0
    assert scraped.value("orchestrator_input_requests_total", session=SHELL) == 1.0

    # the real Prometheus: the same figures through PromQL, and no alert on this healthy run
    prom.wait_value(f'sum(orchestrator_commands_total{{session="{AGENT}"}})', 3.0)
    prom.wait_value(f'sum(orchestrator_approval_wait_seconds_count{{session="{AGENT}"}})', 3.0)
    prom.wait_value(f'sum(orchestrator_session_state{{session="{AGENT}", state="idle"}})', 1.0)
    by_provider = nonzero(prom, TURNS_BY_PROVIDER, "provider", "result")
    assert by_provider == {(provider, "succeeded"): 3.0}
    requests = nonzero(prom, REQUESTS, "session", "verdict")
    assert requests == {(AGENT, "approve"): 1.0, (AGENT, "deny"): 1.0, (AGENT, "escalate"): 1.0}
    decisions = nonzero(prom, DECISIONS, "session", "decision", "by")
    assert decisions == {
        (AGENT, "approved", "policy"): 1.0,
        (AGENT, "denied", "policy"): 1.0,
        (AGENT, "approved", "person"): 1.0,
    }
    waits = nonzero(prom, WAIT_SUM, "session", "by")
    assert waits[(AGENT, "person")] == pytest.approx(person_wait)
    assert nonzero(prom, WAIT_COUNT, "session", "by") == {(AGENT, "policy"): 2.0, (AGENT, "person"): 1.0}
    assert nonzero(prom, QUESTIONS, "session") == {(SHELL,): 1.0}
    sessions = {
        (r["metric"]["session"], r["metric"]["kind"], r["metric"].get("provider", "")) for r in prom.query(SESSIONS)
    }
    assert sessions == {(AGENT, "agent", provider), (SHELL, "shell", "")}
    assert prom.alerts() == [] and prom.query(ALL_ALERTS) == []
    for expr, value in (
        (TURNS_BY_PROVIDER, by_provider),
        (REQUESTS, requests),
        (DECISIONS, decisions),
        (WAIT_SUM, waits),
        (QUESTIONS, {SHELL: 1.0}),
        (ALL_ALERTS, "[] (nothing pending or firing)"),
    ):
        record(expr, value)

    # replay: the turns, who decided each approval and how long the agent waited, the time each
    # session waited for a person — the metrics' figures — and the DB identical to the log
    summary = replay_verified(service)
    mine = summary["sessions"][AGENT]
    assert (mine["kind"], mine["turns"], mine["results"]) == ("agent", 3, {"succeeded": 3})
    assert mine["tool_calls"] >= 2  # the two tools that ran (a refused one may be listed too)
    approvals = mine["approvals"]
    assert approvals["by_verdict"] == {"approve": 1, "deny": 1, "escalate": 1}
    assert approvals["decisions"] == {"approved": {"person": 1, "policy": 1}, "denied": {"policy": 1}}
    assert approvals["open"] == 0
    assert approvals["wait_s"]["person"]["total_s"] == pytest.approx(person_wait, abs=1e-5)
    episodes = [(e["tool_command"], e["verdict"], e["decision"], e["by"]) for e in summary["approval_episodes"]]
    assert episodes == [
        ("touch notes.txt", "approve", "approved", "policy"),
        ("rm -rf build", "deny", "denied", "policy"),
        ("touch deploy.log", "escalate", "approved", "person"),
    ]
    escalated = summary["approval_episodes"][2]
    assert escalated["requested"] < escalated["queued"] < escalated["answered"]
    assert mine["person_wait"]["approvals"] == 1
    assert mine["person_wait"]["seconds"] == pytest.approx(person_wait, abs=1e-5)
    theirs = summary["sessions"][SHELL]
    assert (theirs["kind"], theirs["questions"]["asked"], theirs["questions"]["replied"]) == ("shell", 1, 1)
    [asked] = summary["input_episodes"]
    assert asked["question"].startswith("ship it? [y/N]") and asked["outcome"] == "replied"
    assert theirs["person_wait"]["seconds"] == pytest.approx(asked["waited_s"]) and asked["waited_s"] > 0
    assert summary["agents"]["sessions"] == [AGENT] and summary["agents"]["turns"] == 3
    assert summary["agents"]["person_wait_s"] == pytest.approx(person_wait + asked["waited_s"], abs=1e-5)

    text_report = replay_cli("--log", str(service.audit_log)).stdout
    assert f"approved by person after {escalated['waited_s']:.1f} s" in text_report
    tmuxagent_evidence.add("metrics", "PromQL queries against the real Prometheus server", "\n".join(evidence))
    tmuxagent_evidence.add("audit", "tmux-agent-orchestrator-replay (agent turns, approvals, waits)", text_report)
