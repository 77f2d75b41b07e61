"""Live mode, tested by pointing it at a tmux server, a codex and a WeCom that this
test starts as if they were the user's: scenarios run in a scratch session of the
user's server, leave the user's agent pane alone, and deliver to the "real" WeCom."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import tmuxagent_scenarios
from pytest_tmuxagent.waiting import wait_until

SCENARIOS = Path(tmuxagent_scenarios.__file__).parent
SELECTION = "(test_command_feedback and success) or test_failure_streak_alerts_once_blocks_and_resumes"


def users_setup(home: Path, tmux_server, agent, wecom_mock) -> Path:
    (home / ".tmuxagent").mkdir(parents=True)
    wecom_mock.add_webhook_key("live-user-key-42")  # the user's own robot, as WeCom knows it
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
    assert "live (your tmux, codex and WeCom)" in report and "live plan" in report
    assert "live-user-key-42" not in report and "sk-live-user-000111" not in report


# live agent tests: opt-in to spend tokens, live-capable tests, the user's own agent -------------

LIVE_AGENT_TESTS = """
import json
import os
import subprocess

import pytest


@pytest.mark.tmuxagent_live_capable
@pytest.mark.parametrize("provider", ["claude", "codex"])
def test_live_capable(provider, tmuxagent_agent_home, agent_session, model_server, tmp_path):
    home = tmuxagent_agent_home(provider, tmp_path, model_server)
    entry = agent_session(provider, tmp_path, model_server)
    # an agent left running: teardown must find it by its tag and end it
    sleeper = subprocess.Popen(["sleep", "300"], env={**os.environ, **home.env}, start_new_session=True)
    record = {
        "binary": str(home.binary),
        "env": home.env,
        "entry": dict(entry),
        "home": str(home.home),
        "my_home": os.environ["HOME"],
        "scripted": [model_server.anthropic_base_url, model_server.openai_base_url],
        "sleeper": sleeper.pid,
    }
    with open(f"{os.environ['RECORD_DIR']}/{provider}.json", "w") as out:
        json.dump(record, out)


@pytest.mark.scenario_a
@pytest.mark.parametrize("provider", ["claude"])
def test_scripted_agent_case(provider, tmuxagent_agent_home, model_server, tmp_path):
    model_server.script()  # replies a real account cannot be made to give
    tmuxagent_agent_home(provider, tmp_path, model_server)
"""


def live_user(home: Path, env_lines: str) -> Path:
    """A user's live setup: agent-config.yaml, orchestrator.toml and an env file with `env_lines`."""
    (home / ".tmuxagent").mkdir(parents=True)
    (home / ".env").write_text(env_lines)
    (home / "agent-config.yaml").write_text(
        "tmux:\n  socket_name: live-user-tmux\nsessions:\n  - name: weather/bot\n    target: 'weather:bot'\n"
    )
    (home / ".tmuxagent" / "orchestrator.toml").write_text(f'env_file = "{home / ".env"}"\n')
    return home / "agent-config.yaml"


def fake_agent(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho '9.9.9 (your own {name})'\n")
    path.chmod(0o755)
    return path


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie has ended; only its parent must reap it


def run_live(pytester: pytest.Pytester, config: Path, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_live_agents=LIVE_AGENT_TESTS)
    return pytester.runpytest_subprocess(
        "--tmuxagent-live",
        "--tmuxagent-config",
        str(config),
        "--tmuxagent-report",
        str(pytester.path / "report.md"),
        "-rs",
        *args,
    )


@pytest.fixture
def live_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pytester run's environment: CI set (a live skip the user chose must not fail it), the
    project's pinned agents hidden, records written to a folder."""
    monkeypatch.setenv("CI", "true")
    for name in ("TMUXAGENT_CLAUDE_BIN", "TMUXAGENT_CODEX_BIN", "TMUXAGENT_LIVE_SPEND_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    records = pytester.path / "records"
    records.mkdir()
    monkeypatch.setenv("RECORD_DIR", str(records))
    return records


def test_without_opt_in_live_agent_tests_skip_naming_the_key(
    pytester: pytest.Pytester, tmp_path: Path, live_env: Path
) -> None:
    claude = fake_agent(tmp_path / "bin", "claude")
    config = live_user(tmp_path / "user", f"TMUXAGENT_CLAUDE_BIN={claude}\n")
    result = run_live(pytester, config)
    result.assert_outcomes(skipped=3)
    assert result.ret == pytest.ExitCode.OK  # CI=true: a skip the user chose in live mode is no failure
    env_file = tmp_path / "user" / ".env"
    result.stdout.fnmatch_lines(
        [
            f"SKIPPED *: live: claude may not spend tokens on your account — set "
            f"TMUXAGENT_LIVE_SPEND_TOKENS=claude (a comma-separated list of providers) in {env_file} to run "
            "this agent test live",
            "SKIPPED *: live: codex may not spend tokens*TMUXAGENT_LIVE_SPEND_TOKENS=codex*",
        ]
    )
    assert list(live_env.iterdir()) == []
    # a test scripting the model server's replies cannot run live, whatever the opt-in says
    result.stdout.fnmatch_lines(["SKIPPED *: live: this agent test scripts the model server's replies*"])
    assert "| shell – not run · claude – skipped (1) · codex – not run |" in (pytester.path / "report.md").read_text()


def test_with_opt_in_the_fixture_gives_the_users_agent_and_env_not_the_scripted_server(
    pytester: pytest.Pytester, tmp_path: Path, live_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    claude = fake_agent(tmp_path / "bin", "claude")  # named by the env file
    codex = fake_agent(tmp_path / "path-bin", "codex")  # found on the user's PATH
    monkeypatch.setenv("PATH", f"{codex.parent}{os.pathsep}{os.environ['PATH']}")
    config = live_user(
        tmp_path / "user",
        f"TMUXAGENT_LIVE_SPEND_TOKENS=claude,codex\nTMUXAGENT_CLAUDE_BIN={claude}\n"
        "ANTHROPIC_API_KEY=sk-ant-users-own-key\nOPENAI_API_KEY=sk-users-openai-key\n",
    )
    result = run_live(pytester, config, "-k", "test_live_capable")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*[[]live[]] *test_live_capable?claude?: claude: your own *claude with your HOME*"])

    for provider, binary, key in (
        ("claude", claude, ("ANTHROPIC_API_KEY", "sk-ant-users-own-key")),
        ("codex", codex, ("OPENAI_API_KEY", "sk-users-openai-key")),
    ):
        record = json.loads((live_env / f"{provider}.json").read_text())
        assert record["binary"] == str(binary) and record["entry"]["launch"] == str(binary)
        assert record["entry"]["kind"] == "agent" and record["entry"]["provider"] == provider
        env = record["env"]
        assert env["HOME"] == record["my_home"] == record["home"]  # the user's own HOME and login
        assert env[key[0]] == key[1]  # the user's own model account
        assert not {"ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "CODEX_HOME", "TMUXAGENT_MODEL_KEY"} & env.keys()
        assert not [v for v in env.values() for url in record["scripted"] if url in v]  # no scripted server
        assert {k: v for k, v in record["entry"]["env"].items() if k != "TMUXAGENT_LIVE_AGENT_DIR"} == {
            k: v for k, v in env.items() if k != "TMUXAGENT_LIVE_AGENT_DIR"
        }
        assert not alive(record["sleeper"])  # ended at teardown: found by its tag
    # nothing was written into the user's home
    assert sorted(p.name for p in (tmp_path / "user").iterdir()) == [".env", ".tmuxagent", "agent-config.yaml"]


def test_an_opted_in_agent_that_is_missing_fails_under_ci(
    pytester: pytest.Pytester, tmp_path: Path, live_env: Path
) -> None:
    config = live_user(
        tmp_path / "user", f"TMUXAGENT_LIVE_SPEND_TOKENS=claude\nTMUXAGENT_CLAUDE_BIN={tmp_path / 'no-claude'}\n"
    )
    result = run_live(pytester, config, "-k", "test_live_capable and claude")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*live: your claude was not found on PATH*[[]CI=true: a missing agent fails[]]*"])


def test_an_unknown_provider_in_the_opt_in_is_named(pytester: pytest.Pytester, tmp_path: Path) -> None:
    config = live_user(tmp_path / "user", "TMUXAGENT_LIVE_SPEND_TOKENS=claude,cluade\n")
    result = run_live(pytester, config)
    result.assert_outcomes(errors=3)  # the live context fails to load, as for any bad live config
    result.stdout.fnmatch_lines(
        ["*--tmuxagent-live: TMUXAGENT_LIVE_SPEND_TOKENS=*names 'cluade', not an agent provider*"]
    )
