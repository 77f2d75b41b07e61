"""The agent fixtures, proven with the real agents and no orchestrator: Claude Code and codex
start in a real tmux pane with the prepared home and env, answer a typed prompt from the
`model_server`, show no onboarding or trust screen, and leave no process behind (codex's
app-server daemons included). The rest checks the files, the env, the session entry, the
missing-agent rule (skip; fail under CI) and the reaper without starting an agent."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from pytest_tmuxagent import AgentPane, AgentPaneFactory, Evidence, WaitTimeout, wait_until
from pytest_tmuxagent.agents import (
    PROVIDERS,
    AgentHome,
    AgentHomeFactory,
    AgentProvider,
    AgentSessionFactory,
    find_agent,
    processes_under,
)
from pytest_tmuxagent.model_server import ModelServer, text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROMPT = "Please answer with the scripted sentence"
REPLY = {"claude": "Claude here: the tangerine is ripe", "codex": "Codex here: the walnut is cracked"}
# What the agents draw once their prompt takes input (codex: Enter is dropped until its footer
# names the model, ~3 s after "? for shortcuts").
READY = {"claude": "? for shortcuts", "codex": "gpt-5-codex"}
FIRST_RUN_SCREENS = (
    "choose the text style",  # Claude Code's onboarding (theme)
    "select login method",
    "trust the files",  # Claude Code's trust dialog
    "trust this folder",  # codex's
    "detected a custom api key",
    "sign in with chatgpt",
    "welcome to codex",
)
LAUNCH_TIMEOUT = 60.0
ANSWER_TIMEOUT = 60.0


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def app_servers(root: Path) -> list[int]:
    """`codex app-server` processes living under `root` (scanning /proc)."""
    return [pid for pid in processes_under(root) if "app-server" in cmdline(pid)]


def first_run_screen(screen: str) -> str | None:
    lowered = screen.lower()
    return next((marker for marker in FIRST_RUN_SCREENS if marker in lowered), None)


@pytest.fixture
def nothing_left_behind(tmp_path: Path) -> Iterator[None]:
    """Asked for first, so its teardown runs last: after the panes' tmux server is killed and
    the agent homes are reaped, no process may live under the test's tmp_path."""
    yield
    # a process killed a moment ago may still be exiting: allow it a deadline, not a sleep
    try:
        wait_until(lambda: not (processes_under(tmp_path) or codex_app_servers_in(tmp_path)), timeout=5)
    except WaitTimeout:
        left = {pid: cmdline(pid) for pid in {*processes_under(tmp_path), *codex_app_servers_in(tmp_path)}}
        pytest.fail(f"processes left under {tmp_path}: {left}")


def codex_app_servers_in(root: Path) -> list[int]:
    """Independent of the reaper's scan: every live `codex app-server` whose command line names `root`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            line = cmdline(int(entry.name))
            if "app-server" in line and str(root) in line:
                found.append(int(entry.name))
    return found


class Screen:
    """Reads a pane while waiting, and remembers any first-run screen it saw."""

    def __init__(self, pane: AgentPane) -> None:
        self.pane = pane
        self.first_run: list[str] = []

    def text(self) -> str:
        screen = "\n".join(self.pane.capture(60))
        marker = first_run_screen(screen)
        if marker:
            self.first_run.append(f"{marker!r} on screen:\n{screen}")
        return screen

    def check(self) -> None:
        assert not self.first_run, self.first_run[0]


def enter(pane: AgentPane) -> None:
    pane.server.server.cmd("send-keys", "-t", pane.pane_id, "Enter")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_real_agent_answers_from_the_model_server(
    nothing_left_behind: None,
    provider: AgentProvider,
    agent_pane: AgentPaneFactory,
    model_server: ModelServer,
    tmuxagent_agent_home: AgentHomeFactory,
    tmuxagent_evidence: Evidence,
) -> None:
    wire: Literal["anthropic", "openai"] = "anthropic" if provider == "claude" else "openai"
    model_server.script(text(REPLY[provider]), provider=wire)
    pane = agent_pane(f"agents/{provider}")
    home: AgentHome = tmuxagent_agent_home(provider, pane, model_server)
    screen = Screen(pane)

    started = time.monotonic()
    pane.type(home.launch_line())  # the shell pane starts the agent, as the orchestrator does
    wait_until(
        lambda: screen.first_run or READY[provider] in screen.text(),
        timeout=LAUNCH_TIMEOUT,
        message=f"{provider} to draw its ready prompt ({READY[provider]!r})",
    )
    screen.check()
    ready = time.monotonic()

    # send-keys -l, then Enter once the text is in the input box: codex takes text and Enter
    # arriving together as a paste (the Enter becomes a newline)
    pane.type(PROMPT, enter=False)
    wait_until(lambda: PROMPT in screen.text(), timeout=10, message="the prompt in the input box")
    enter(pane)
    submitted = last_enter = time.monotonic()
    presses = 1

    def answered() -> bool:
        nonlocal last_enter, presses
        shown = screen.text()
        if screen.first_run:
            return True
        turns = model_server.requests(kind="turn", provider=wire)
        if not turns and time.monotonic() - last_enter > 3 and PROMPT in shown:
            enter(pane)  # the Enter was taken before the agent was ready for it: press it again
            last_enter, presses = time.monotonic(), presses + 1
        return bool(turns) and REPLY[provider] in shown

    wait_until(answered, timeout=ANSWER_TIMEOUT, message=f"{provider}'s scripted reply on the screen")
    screen.check()
    answer = time.monotonic()

    [turn] = model_server.requests(kind="turn", provider=wire)
    assert turn.last_user_text() == PROMPT
    assert turn.headers.get("Authorization") or turn.headers.get("authorization")  # a credential went, redacted
    timing = (
        f"{provider}: ready {ready - started:.1f} s after launch, answered {answer - submitted:.1f} s after "
        f"Enter ({presses} press(es)), {answer - started:.1f} s in all"
    )
    tmuxagent_evidence.add("note", f"{provider} timing", timing)
    print(timing)

    if provider == "codex":
        # what the reaper is for: the app-server daemons outlive codex's pane
        codex_home = home.codex_home
        assert codex_home is not None
        wait_until(lambda: app_servers(codex_home), timeout=10, message="codex's app-server daemons")
        pane.kill()
        wait_until(
            lambda: all("app-server" in cmdline(p) for p in home.processes()),
            timeout=10,
            message="the codex TUI to exit with its pane",
        )
        survivors = app_servers(codex_home)
        assert survivors, "codex 0.171.0 leaves its app-server daemons running; none found"
        tmuxagent_evidence.add("note", "left by codex", "\n".join(f"{p} {cmdline(p)}" for p in survivors))


# ---------------------------------------------------------------------------------------------
# without starting an agent


class Endpoints:
    anthropic_base_url = "http://127.0.0.1:9"
    openai_base_url = "http://127.0.0.1:9/v1"


def test_claude_home_skips_onboarding_and_trust(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    home = AgentHome.prepare("claude", workdir, Endpoints(), tmp_path / "home-root")
    state = json.loads((home.home / ".claude.json").read_text())
    assert state == {
        "hasCompletedOnboarding": True,
        "theme": "dark",
        "projects": {str(workdir.resolve()): {"hasTrustDialogAccepted": True}},
    }
    assert home.env == {
        "HOME": str(home.home),
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        "ANTHROPIC_AUTH_TOKEN": home.token,
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    assert home.home.is_relative_to(tmp_path) and home.codex_home is None


def test_codex_home_points_at_the_server_and_trusts_the_workdir(tmp_path: Path) -> None:
    workdir = tmp_path / "work dir"  # a space: the TOML key is quoted
    workdir.mkdir()
    home = AgentHome.prepare("codex", workdir, Endpoints(), tmp_path / "home-root", model="gpt-5-codex")
    assert home.codex_home is not None
    config = tomllib.loads((home.codex_home / "config.toml").read_text())
    assert config == {
        "model": "gpt-5-codex",
        "model_provider": "tmuxagent",
        "model_providers": {
            "tmuxagent": {
                "name": "tmuxagent scripted model server",
                "base_url": "http://127.0.0.1:9/v1",
                "wire_api": "responses",
                "env_key": "TMUXAGENT_MODEL_KEY",
            }
        },
        "projects": {str(workdir.resolve()): {"trust_level": "trusted"}},
    }
    assert home.env == {"CODEX_HOME": str(home.codex_home), "TMUXAGENT_MODEL_KEY": home.token, "HOME": str(home.home)}


def fake_agent(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho '9.9.9 (fake {name})'\n")
    path.chmod(0o755)
    return path


def test_the_env_variable_wins_and_a_wrong_one_finds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_agent(tmp_path / "bin", "codex")
    monkeypatch.setenv("TMUXAGENT_CODEX_BIN", str(fake))
    assert find_agent("codex") == fake
    monkeypatch.setenv("TMUXAGENT_CODEX_BIN", str(tmp_path / "nowhere" / "codex"))
    assert find_agent("codex") is None  # no silent fallback to another copy


def test_agent_session_is_the_orchestrator_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_session: AgentSessionFactory, model_server: ModelServer
) -> None:
    fake = fake_agent(tmp_path / "bin", "claude")
    monkeypatch.setenv("TMUXAGENT_CLAUDE_BIN", str(fake))
    entry = agent_session("claude", tmp_path, model_server)
    assert entry["kind"] == "agent" and entry["provider"] == "claude"
    assert entry["launch"] == str(fake) and Path(entry["launch"]).is_absolute()
    assert entry["env"]["ANTHROPIC_BASE_URL"] == model_server.anthropic_base_url
    assert "ANTHROPIC_API_KEY" not in entry["env"]
    assert json.loads(json.dumps(entry)) == entry  # plain data, fit for a config file


def test_reap_ends_what_lives_under_the_home_even_if_it_ignores_sigterm(tmp_path: Path) -> None:
    home = AgentHome.prepare("codex", tmp_path / "work", Endpoints(), tmp_path / "root")
    assert home.codex_home is not None
    daemon_dir = home.codex_home / "packages" / "bin"
    daemon_dir.mkdir(parents=True)
    sleeper = daemon_dir / "sleep"
    sleeper.write_bytes(Path("/bin/sleep").read_bytes())
    sleeper.chmod(0o755)
    polite = subprocess.Popen([str(sleeper), "300"], start_new_session=True)
    stubborn = subprocess.Popen(["sh", "-c", f"trap '' TERM; exec {sleeper} 301"], start_new_session=True)
    wait_until(lambda: {polite.pid, stubborn.pid} <= set(home.processes()), timeout=10)
    started = time.monotonic()
    ended = home.reap(timeout=2)
    assert {polite.pid, stubborn.pid} <= set(ended)
    assert time.monotonic() - started < 3
    assert polite.wait(5) == -signal.SIGTERM and stubborn.wait(5) == -signal.SIGKILL
    assert home.processes() == []


MISSING_AGENT_TEST = """
def test_uses_claude(tmuxagent_agent_home, model_server, tmp_path):
    home = tmuxagent_agent_home("claude", tmp_path, model_server)
    assert home.binary is not None
"""


@pytest.mark.parametrize("ci", [False, True], ids=["local", "ci"])
def test_a_missing_agent_skips_locally_and_fails_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: bool
) -> None:
    pytester.makepyfile(test_missing=MISSING_AGENT_TEST)
    monkeypatch.setenv("TMUXAGENT_CLAUDE_BIN", str(pytester.path / "no-such-claude"))
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    hint = "claude not installed: run bash .ci/run (installs @anthropic-ai/claude-code@2.1.197 into .agents/)"
    result.stdout.fnmatch_lines([f"*{hint}*"])
    if ci:
        result.assert_outcomes(failed=1)
        assert result.ret == pytest.ExitCode.TESTS_FAILED
    else:
        result.assert_outcomes(skipped=1)
        assert result.ret == pytest.ExitCode.OK
    executed = json.loads((pytester.path / "reports" / "agents-executed.json").read_text())
    assert executed == {"claude": 0, "codex": 0}


def test_under_ci_a_skipped_agent_test_fails_the_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_agent(pytester.path / "bin", "claude")
    monkeypatch.setenv("TMUXAGENT_CLAUDE_BIN", str(fake))
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(
        test_agents="""
        import pytest

        def test_runs(tmuxagent_agent_home, model_server, tmp_path):
            assert tmuxagent_agent_home("claude", tmp_path, model_server).binary is not None

        def test_skipped_for_another_reason(agent_session, model_server, tmp_path):
            pytest.skip("the test chose to skip")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*agent tests skipped under CI*", "*test_skipped_for_another_reason*"])
    executed = json.loads((pytester.path / "reports" / "agents-executed.json").read_text())
    assert executed == {"claude": 1, "codex": 0}
