"""Live mode, tested by pointing it at a tmux server, a codex and a WeCom that this
test starts as if they were the user's: scenarios run in a scratch session of the
user's server, leave the user's agent pane alone, and deliver to the "real" WeCom."""

from __future__ import annotations

from pathlib import Path

import pytest

import tmuxagent_scenarios
from pytest_tmuxagent.waiting import wait_until

SCENARIOS = Path(tmuxagent_scenarios.__file__).parent
SELECTION = "(test_command_feedback and success) or test_failure_streak_alerts_once_blocks_and_resumes"


def users_setup(home: Path, tmux_server, agent, wecom_mock) -> Path:
    (home / ".tmuxagent").mkdir(parents=True)
    (home / ".env").write_text(
        "WECOM_WEBHOOK=https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=live-user-key-42\n"
        f"WECOM_API_BASE={wecom_mock.url}\nOPENAI_API_KEY=sk-live-user-000111\n"
    )
    (home / "agent-config.yaml").write_text(
        f"tmux:\n  socket_name: {tmux_server.socket_name}\nstate_db: state/state.db\nlog_dir: logs\n"
        f"sessions:\n  - name: weather/bot\n    target: '{agent.target}'\n"
    )
    (home / ".tmuxagent" / "orchestrator.toml").write_text(f'env_file = "{home / ".env"}"\n[codex]\nbin = "codex"\n')
    return home / "agent-config.yaml"


def test_live_mode_uses_the_users_server_codex_and_wecom(
    pytester: pytest.Pytester, tmp_path: Path, tmux_server, agent_pane, fake_codex, wecom_mock
) -> None:
    agent = agent_pane("weather/bot")
    agent.type("echo AGENT-WORK-IN-PROGRESS")
    wait_until(lambda: any(line == "AGENT-WORK-IN-PROGRESS" for line in agent.capture()), timeout=10)
    before = agent.capture()
    config = users_setup(tmp_path / "home", tmux_server, agent, wecom_mock)

    result = pytester.runpytest_subprocess(
        str(SCENARIOS),
        "--tmuxagent-live",
        "--tmuxagent-config",
        str(config),
        "-k",
        SELECTION,
        "--tmuxagent-report",
        str(tmp_path / "report.md"),
    )
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*[[]live[]] *test_failure_streak*: live: tmux server*scratch session*",
            "*[[]live[]] *: sending `*` to session weather/bot (pane tmuxagent-live-*",
        ]
    )

    delivered = [r for r in wecom_mock.requests if r.message]
    assert len(delivered) == 2 and all("命令连续失败" in r.message for r in delivered)
    assert {r.query.get("key") for r in delivered} == {"live-user-key-42"}  # the user's real webhook
    assert agent.capture() == before  # the user's agent pane was not touched
    sessions = tmux_server.server.cmd("list-sessions", "-F", "#{session_name}").stdout
    assert sessions == ["weather"]  # every scratch session was closed
    report = (tmp_path / "report.md").read_text()
    assert "LIVE (your tmux, codex and WeCom)" in report and "live plan" in report
    assert "live-user-key-42" not in report and "sk-live-user-000111" not in report
