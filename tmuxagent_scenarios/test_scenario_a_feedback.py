"""Scenario A (命令执行反馈): a command injected into the `weather/bot` pane lands its
exact result in `last_command_result`, in Prometheus counters scraped over HTTP,
and in schema-valid audit events.

Each test runs in several pane shells (the `shell` parameter): `bash` is the project's
`tmuxagent_pane_shell` (the bare bash without rc files unless a conftest overrides it);
`bash-rc` and `zsh` are shells as people configure them (coloured prompts, a title-setting
PROMPT_COMMAND / precmd, vi keys, history kept, `set -u`); `bash-errexit` (its rc ends in
`set -e`) runs the failure cases. Live mode (`--tmuxagent-live`) uses only the project's pane
shell: the rc shells test the driver, not the user's setup.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from orchestrator.clock import parse_iso_utc
from pytest_tmuxagent import options

pytestmark = pytest.mark.scenario_a

SESSION = "weather/bot"
SHELLS = ("bash", "bash-rc", "zsh")  # every test here runs in each
ERREXIT_CASES = ("plain-failure", "chosen-exit-code", "fake-result-marker")  # also under `set -e`


@dataclass(frozen=True)
class Case:
    command: str
    exit_code: int
    tail_endswith: str

    @property
    def status(self) -> str:
        return "succeeded" if self.exit_code == 0 else "failed"


CASES = {
    "success": Case("true", 0, ""),
    "plain-failure": Case("false", 1, ""),
    "chosen-exit-code": Case("(exit 7)", 7, ""),
    "compound": Case('mkdir -p sub && cd sub && echo in-$(basename "$PWD") || echo fallback', 0, "in-sub"),
    "quotes-unicode-var": Case(
        "export GREETING='héllo \"wörld\"'; echo \"$GREETING\" '$HOME' 天气预报", 0, 'héllo "wörld" $HOME 天气预报'
    ),
    "five-thousand-lines": Case("seq 1 5000", 0, "4999\n5000"),
    "fake-result-marker": Case(
        "echo '__TMUXAGENT_RC__ 0'; echo 'exit_code=0 status=succeeded'; (exit 3)",
        3,
        "__TMUXAGENT_RC__ 0\nexit_code=0 status=succeeded",
    ),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`shell` for every test that asks for it; `test_command_feedback` gets (shell, case) pairs."""
    if "shell" not in metafunc.fixturenames:
        return
    shells = ("bash",) if options.live(metafunc.config) else SHELLS
    if "case" in metafunc.fixturenames:
        pairs = [(shell, name) for shell in shells for name in CASES]
        if not options.live(metafunc.config):
            pairs += [("bash-errexit", name) for name in ERREXIT_CASES]
        metafunc.parametrize(
            ("shell", "case"), [pytest.param(shell, CASES[name], id=f"{shell}-{name}") for shell, name in pairs]
        )
    else:
        metafunc.parametrize("shell", shells)


def pane_in(agent_pane, shell: str):
    """The session's pane running `shell`; `bash` is the project's `tmuxagent_pane_shell`."""
    return agent_pane(SESSION, shell=None if shell == "bash" else shell)


def test_command_feedback(shell: str, case: Case, agent_pane, orchestrator_service, tmuxagent_evidence) -> None:
    pane = pane_in(agent_pane, shell)
    service = orchestrator_service([pane])

    command_id = service.send(SESSION, case.command)
    row = service.wait_result(command_id)

    assert (row.exit_code, row.status) == (case.exit_code, case.status)
    assert row.output_tail.endswith(case.tail_endswith)
    assert 0 <= row.duration_s < 10
    assert parse_iso_utc(row.started_at) <= parse_iso_utc(row.finished_at)

    last = service.metadata(SESSION)["last_command_result"]
    assert last == {
        "command_id": command_id,
        "command": case.command,
        "exit_code": case.exit_code,
        "status": case.status,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "duration_s": row.duration_s,
        "output_tail": row.output_tail,
    }

    metrics = service.metrics
    assert metrics.wait_until_value("orchestrator_commands_total", 1.0, session=SESSION, result=case.status)
    other = "failed" if case.status == "succeeded" else "succeeded"
    assert metrics.value("orchestrator_commands_total", session=SESSION, result=other) == 0.0
    assert metrics.value("orchestrator_command_duration_seconds_count", session=SESSION) == 1.0

    events = service.audit_events(session=SESSION)  # every line schema-validated
    kinds = [(e["event"], e.get("command_id")) for e in events if e.get("command_id") == command_id]
    assert kinds == [("command_queued", command_id), ("command_dispatched", command_id), ("command_result", command_id)]
    result_event = events[-1]
    assert (result_event["exit_code"], result_event["status"]) == (case.exit_code, case.status)
    latency = parse_iso_utc(result_event["ts"]) - parse_iso_utc(row.finished_at)
    tmuxagent_evidence.figure("feedback_latency", latency)
    tmuxagent_evidence.decide(
        f"`{SESSION}` ({shell}) ran `{case.command}`: exit_code {row.exit_code} ({row.status}) in "
        f"last_command_result {latency * 1000:.0f} ms after it exited, "
        f'orchestrator_commands_total{{result="{case.status}"}} +1, 3 schema-valid audit events',
        headline=(shell, case.exit_code) == ("bash", 7),
    )


@pytest.mark.tmuxagent_each_store
def test_five_thousand_lines_keep_only_the_configured_tail(agent_pane, orchestrator_service) -> None:
    pane = agent_pane(SESSION)
    service = orchestrator_service([pane], settings={"output_tail_lines": 5})
    row = service.wait_result(service.send(SESSION, "seq 1 5000"))
    assert row.output_tail.splitlines() == ["4996", "4997", "4998", "4999", "5000"]


def test_cd_and_export_keep_their_effect_on_the_pane_shell(shell: str, agent_pane, orchestrator_service) -> None:
    pane = pane_in(agent_pane, shell)
    service = orchestrator_service([pane])
    first = service.send(SESSION, "mkdir -p deep/er && cd deep/er && export WEATHER_CITY=Shenzhen")
    second = service.send(SESSION, 'echo "$(basename "$PWD") $WEATHER_CITY"')
    assert service.wait_result(first).status == "succeeded"
    assert service.wait_result(second).output_tail == "er Shenzhen"


def test_duration_is_measured_by_the_pane_shell(shell: str, agent_pane, orchestrator_service) -> None:
    pane = pane_in(agent_pane, shell)
    service = orchestrator_service([pane])
    row = service.wait_result(service.send(SESSION, "sleep 0.4"))
    assert 0.4 <= row.duration_s < 0.4 + 10  # room for a machine at load 15 on 2 cores to start `sleep`


@pytest.mark.tmuxagent_each_store
def test_commands_run_one_at_a_time_in_fifo_order(shell: str, agent_pane, orchestrator_service) -> None:
    pane = pane_in(agent_pane, shell)
    service = orchestrator_service([pane], start=False)
    ids = [service.send(SESSION, f"echo step-{i} >> order.log; sleep 0.1") for i in range(4)]
    assert service.status()["sessions"][0]["queue_depth"] == 4
    service.start()
    rows = [service.wait_result(i) for i in ids]
    assert (pane.workdir / "order.log").read_text().split() == [f"step-{i}" for i in range(4)]
    for earlier, later in zip(rows, rows[1:], strict=False):
        assert parse_iso_utc(earlier.finished_at) <= parse_iso_utc(later.started_at)
    assert service.metrics.wait_until_value("orchestrator_queue_depth", 0.0, session=SESSION) == 0.0
