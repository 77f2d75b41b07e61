"""Shell panes as people use them, against real parts: an isolated tmux server, the real
`tmux-agent-orchestrator` subprocess and a real bash in each pane (the plugin's fixtures).

One test (or a few) per numbered case of the issue "shell panes as people use them"; each
docstring says what the previous design did. Cases covered elsewhere:

- 7 (two orchestrators on one state DB): tests/test_orchestrator_lock.py
  (`test_a_second_orchestrator_on_the_same_db_exits_2_naming_the_first`, and `tmux-agent run`).
- 8 (`send` keeps quoting; warns without an orchestrator): tests/test_cli_send_status.py
  (`test_several_words_reach_the_shell_as_the_user_typed_them`,
  `test_without_an_orchestrator_send_still_queues_and_warns_once`).
- 9 (stale advice): tests/test_assist.py (`test_advice_made_while_its_blockers_went_away_is_dropped`,
  `test_advice_for_a_failure_streak_is_cleared_after_unblock_and_successes`).
- 10 (doctor): tests/test_doctor.py.

Timing: nothing here sleeps to synchronise; `wait_until` waits for a fact, and `holds_for`
watches an invariant over a window sized from the configured timeouts.
"""

from __future__ import annotations

import collections
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_tmuxagent import (
    AgentPane,
    AgentPaneFactory,
    OrchestratorService,
    OrchestratorServiceFactory,
    TmuxTestServer,
    WeComMock,
    wait_until,
)

S = "weather/bot"
STALL = 2.0  # the compressed stall timeout every service here gets (COMPRESSED_SETTINGS)


# helpers ---------------------------------------------------------------------------------------
def screen(pane: AgentPane) -> list[str]:
    """The pane's non-blank lines, history included (capture -J keeps trailing blanks: dropped)."""
    return [line.rstrip() for line in pane.capture(200) if line.strip()]


def last_line(pane: AgentPane) -> str:
    lines = screen(pane)
    return lines[-1] if lines else ""


def at_prompt(pane: AgentPane) -> None:
    wait_until(lambda: last_line(pane) == "$", timeout=15, message=f"a bare prompt in {pane.target}")


def tmux(pane: AgentPane, *args: str) -> list[str]:
    result = pane.server.server.cmd(*args)
    assert result.returncode == 0, result.stderr
    return list(result.stdout)


def pane_pid(pane: AgentPane) -> int:
    return int(tmux(pane, "display-message", "-p", "-t", pane.pane_id, "#{pane_pid}")[0])


def session_meta(service: OrchestratorService, session: str, state: str, detail: str = "") -> dict[str, Any]:
    def matches() -> dict[str, Any] | None:
        meta = service.metadata(session)
        ok = meta.get("state") == state and detail in str(meta.get("state_detail") or "")
        return meta if ok else None

    found: dict[str, Any] = wait_until(
        matches,
        timeout=20,
        message=f"{session} in state {state} ({detail!r}); metadata now {service.metadata(session)}",
    )
    return found


def holds_for(seconds: float, invariant: Callable[[], None]) -> None:
    """Check `invariant` (it asserts) over a whole window, not just once."""
    end = time.monotonic() + seconds
    while True:
        invariant()
        if time.monotonic() >= end:
            return
        time.sleep(0.1)


def status_of(service: OrchestratorService, command_id: int) -> tuple[str, int]:
    row = service.command(command_id)
    assert row is not None
    return row.status, row.attempts


def run_dir(service: OrchestratorService) -> Path:
    return service.state_db.parent / "run"


def results_per_command(service: OrchestratorService) -> collections.Counter[int]:
    return collections.Counter(e["command_id"] for e in service.audit_events(event="command_result"))


def stall_events(service: OrchestratorService) -> list[str]:
    names = ("stall_detected", "stall_interrupt", "stall_retry")
    return [e["event"] for e in service.audit_events() if e["event"] in names]


def enqueue(service: OrchestratorService, session: str, command: str) -> int:
    """Straight into the DB (`tmux-agent send` refuses a target that names no pane)."""
    store = service.store()
    try:
        return store.enqueue(session, command)
    finally:
        store.close()


def hold_output(pane: AgentPane) -> None:
    """XOFF (C-s): the terminal stops output, so the shell blocks echoing the first key of
    whatever is typed next — the typed line waits in its input, not yet run."""
    tmux(pane, "send-keys", "-t", pane.pane_id, "C-s")


def release_output(pane: AgentPane) -> None:
    tmux(pane, "send-keys", "-t", pane.pane_id, "C-q")


# 1 — typed text on the command line -------------------------------------------------------------
@pytest.mark.parametrize("clear", ["C-u", "Enter"])
def test_1_half_typed_text_holds_the_command_until_the_line_is_cleared(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory, clear: str
) -> None:
    """Before: the command was appended to the user's half-typed text and recorded succeeded."""
    pane = agent_pane(S)
    at_prompt(pane)
    pane.type("echo half-typed", enter=False)
    wait_until(lambda: last_line(pane) == "$ echo half-typed", timeout=10)
    service = orchestrator_service([pane])

    command_id = service.send(S, "echo from-orchestrator")
    meta = session_meta(service, S, "idle", "command line holds typed text")
    assert "echo half-typed" in meta["state_detail"]

    def untouched() -> None:
        assert status_of(service, command_id) == ("queued", 0)
        assert last_line(pane) == "$ echo half-typed"  # nothing appended
        assert not any("from-orchestrator" in line for line in screen(pane))

    holds_for(2 * STALL, untouched)

    tmux(pane, "send-keys", "-t", pane.pane_id, clear)
    row = service.wait_result(command_id)
    assert (row.status, row.exit_code, row.output_tail) == ("succeeded", 0, "from-orchestrator")
    ran_users_line = "half-typed" in screen(pane)
    assert ran_users_line == (clear == "Enter")  # Enter ran the user's own line, as typed; C-u dropped it


def test_1_a_line_that_did_not_start_its_command_is_cancelled_not_accepted(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory
) -> None:
    """Real-shell variant of the unit test of the same name in tests/test_engine_recovery.py: the line is
    typed (held in the shell's input by XOFF), its body script is deleted before the shell
    sources it, then output resumes: the epilogue runs without a start record. Before: the
    epilogue's `$?` (the failed source) was accepted as the command's result."""
    pane = agent_pane(S)
    at_prompt(pane)
    service = orchestrator_service([pane])
    hold_output(pane)
    command_id = service.send(S, "echo never-runs")
    wait_until(lambda: service.audit_events(event="command_dispatched"), timeout=15, message="the line typed")
    [body] = run_dir(service).glob("c-*.sh")
    body.unlink()
    release_output(pane)

    row = service.wait_result(command_id, timeout=30)
    assert (row.status, row.exit_code) == ("cancelled", None)
    assert not any(line == "never-runs" for line in screen(pane))
    [result] = service.audit_events(event="command_result")
    assert "did not start" in str(result.get("detail"))


# 2 — output on the pane's terminal -------------------------------------------------------------
def test_2_commands_run_on_the_panes_terminal(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory
) -> None:
    """Before: stdin/stdout were pipes, so `test -t` failed and Python block-buffered its output:
    six lines over six seconds looked like six seconds of silence, a stall."""
    service = orchestrator_service([agent_pane(S)])
    tty = service.wait_result(service.send(S, "test -t 0 -a -t 1 && echo tty"))
    assert (tty.status, tty.output_tail) == ("succeeded", "tty")

    script = r"import time\nfor i in range(6): print(i); time.sleep(1)"  # bash's $'…' makes the newline
    started = time.monotonic()
    command_id = service.send(S, f"env -u PYTHONUNBUFFERED python3 -c $'{script}'")
    row = service.wait_result(command_id, timeout=40)
    assert time.monotonic() - started >= 5  # it really ran its six seconds, 3 × the stall timeout
    assert (row.status, row.exit_code) == ("succeeded", 0)
    assert (row.output_tail or "").splitlines() == [str(i) for i in range(6)]
    assert stall_events(service) == []
    assert "stall_count" not in service.metadata(S) or service.metadata(S)["stall_count"] == 0


# 3 — a question is not a stall ------------------------------------------------------------------
def test_3_a_question_waits_for_a_person_and_reply_answers_it(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory, wecom_mock: WeComMock
) -> None:
    """Before: a `read -p` prompt printed nothing more, so it was interrupted and retried as a stall."""
    service = orchestrator_service(
        [agent_pane(S)], env=wecom_mock.env("webhook"), session_overrides={S: {"retry_safe": True}}
    )
    command_id = service.send(S, "read -p 'continue? [y/N] ' a && echo \"answer=$a\"")
    meta = session_meta(service, S, "waiting_input")
    assert "continue? [y/N]" in meta["state_detail"]
    [asked] = [m for m in wecom_mock.wait_for_messages(1) if "需要输入" in m]
    assert "continue? [y/N]" in asked and f"tmux-agent reply {S}" in asked

    def still_waiting() -> None:
        assert service.metadata(S).get("state") == "waiting_input"
        assert status_of(service, command_id) == ("running", 1)
        assert stall_events(service) == []

    holds_for(3 * STALL + 1, still_waiting)  # several stall timeouts
    assert not service.metadata(S).get("stall_count")
    assert not service.metrics or not service.metrics.value("orchestrator_stall_count_total", session=S)

    service.cli("reply", S, "--", "y")
    row = service.wait_result(command_id)
    assert (row.status, row.exit_code) == ("succeeded", 0)
    assert (row.output_tail or "").splitlines()[-1] == "answer=y"
    assert len([m for m in wecom_mock.messages() if "需要输入" in m]) == 1
    assert stall_events(service) == []


@pytest.mark.parametrize(("retry_safe", "minimum"), [(False, STALL), (True, 2 * STALL)])
def test_3_a_real_stall_alert_states_the_time_really_waited(
    agent_pane: AgentPaneFactory,
    orchestrator_service: OrchestratorServiceFactory,
    wecom_mock: WeComMock,
    retry_safe: bool,
    minimum: float,
) -> None:
    """Before: the alert's "waited" was the last attempt's idle time only."""
    service = orchestrator_service(
        [agent_pane(S)], env=wecom_mock.env("webhook"), session_overrides={S: {"retry_safe": retry_safe}}
    )
    started = time.monotonic()
    command_id = service.send(S, "sleep 600")
    row = service.wait_result(command_id, timeout=60)
    elapsed = time.monotonic() - started
    assert row.status == "stalled"
    [alert] = [m for m in wecom_mock.wait_for_messages(1, timeout=30) if "命令卡顿" in m]
    found = re.search(r"已等待 waited: ([0-9.]+)s", alert)
    assert found, alert
    waited = float(found.group(1))
    assert minimum <= waited <= elapsed + 1, (waited, elapsed)
    assert row.attempts == (2 if retry_safe else 1)
    assert len(service.audit_events(event="stall_retry")) == (1 if retry_safe else 0)


# 4 — the pane shows the command -----------------------------------------------------------------
def test_4_the_pane_shows_the_command_not_the_internal_line(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory
) -> None:
    """Before: the pane showed the internal `. …/c-….sh` line the orchestrator typed."""
    pane = agent_pane(S)
    service = orchestrator_service([pane])
    command_id = service.send(S, "echo hi")
    assert service.wait_result(command_id).output_tail == "hi"
    wait_until(lambda: f"▶ #{command_id} echo hi" in screen(pane), timeout=10, message=f"header in {screen(pane)}")
    lines = screen(pane)
    assert not [line for line in lines if ".sh" in line or str(run_dir(service)) in line], lines
    assert lines[lines.index(f"▶ #{command_id} echo hi") + 1] == "hi"


# 5 — copy mode ----------------------------------------------------------------------------------
def test_5_copy_mode_holds_the_command_without_a_dispatch_failure_loop(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory
) -> None:
    """Before: keys sent into copy mode were eaten; every poll was a dispatch_failed."""
    pane = agent_pane(S)
    at_prompt(pane)
    service = orchestrator_service([pane])
    tmux(pane, "copy-mode", "-t", pane.pane_id)
    command_id = service.send(S, "echo after-copy-mode")
    meta = session_meta(service, S, "idle", "copy-mode")
    assert "dispatch waits" in meta["state_detail"]

    def held() -> None:
        assert status_of(service, command_id) == ("queued", 0)
        assert service.audit_events(event="dispatch_failed") == []

    holds_for(2 * STALL, held)
    assert service.metrics is not None
    assert not service.metrics.value("orchestrator_dispatch_errors_total", session=S)

    tmux(pane, "send-keys", "-t", pane.pane_id, "-X", "cancel")
    row = service.wait_result(command_id)
    assert (row.status, row.output_tail, row.attempts) == ("succeeded", "after-copy-mode", 1)
    assert service.audit_events(event="dispatch_failed") == []


# 6 — one missing pane does not stop everything ---------------------------------------------------
def test_6_a_missing_pane_leaves_the_other_session_running_until_it_appears(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory
) -> None:
    """Before: the orchestrator refused to start (exit 2) when any session's pane was missing."""
    pane = agent_pane(S)
    gone = agent_pane("news/feed")
    gone.kill()
    service = orchestrator_service([pane, gone])
    assert service.wait_result(service.send(S, "echo fine")).status == "succeeded"
    waiting = enqueue(service, "news/feed", "echo back > back.txt")

    meta = session_meta(service, "news/feed", "pane_missing")
    assert "news:feed" in meta["state_detail"]
    assert service.metrics is not None
    service.metrics.wait_until_value("orchestrator_session_state", 1.0, session="news/feed", state="pane_missing")

    def missing_once() -> None:
        states = service.audit_events(event="session_state", session="news/feed")
        assert [e["state"] for e in states] == ["pane_missing"]
        assert status_of(service, waiting) == ("queued", 0)

    holds_for(STALL, missing_once)
    assert service.process is not None and service.process.poll() is None

    back = agent_pane("news/feed")  # the same target, a new pane
    assert back.target == gone.target
    row = service.wait_result(waiting, timeout=20)
    assert row.status == "succeeded"
    assert (back.workdir / "back.txt").read_text() == "back\n"
    session_meta(service, "news/feed", "idle")


# 11 — the wrong pane after a tmux restart --------------------------------------------------------
def test_11_after_a_tmux_restart_the_command_reaches_its_targets_new_pane(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory, tmux_server: TmuxTestServer
) -> None:
    """Before: the cached pane id (%0) was trusted; on the new server %0 was another session's pane."""
    pane = agent_pane(S)
    service = orchestrator_service([pane])
    assert service.wait_result(service.send(S, "echo first")).status == "succeeded"
    old_id = pane.pane_id

    tmux_server.kill()
    other = agent_pane("other/main")  # the new server's first pane: it gets the old id
    assert other.pane_id == old_id
    again = agent_pane(S, workdir=pane.workdir)
    assert again.pane_id != old_id
    at_prompt(other)
    at_prompt(again)

    command_id = service.send(S, "pwd > where.txt; echo here-$TMUX_PANE")
    row = service.wait_result(command_id, timeout=20)
    assert (row.status, row.output_tail) == ("succeeded", f"here-{again.pane_id}")
    assert (again.workdir / "where.txt").read_text().strip() == str(again.workdir)
    assert not (other.workdir / "where.txt").exists()
    assert screen(other) == ["$"]  # nothing was typed into the other session's pane
    assert service.wait_result(service.send(S, "echo second")).output_tail == "second"
    assert screen(other) == ["$"]


# 12 — a command run twice after a restart ---------------------------------------------------------
def test_12_a_line_typed_before_a_restart_runs_once_and_is_not_typed_again(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory
) -> None:
    """The line is typed but the shell has not run it yet when the orchestrator is SIGKILLed (XOFF
    holds it in the shell's input: the new design never types into a busy shell, so this is how a
    typed-not-started line is made on purpose). Before: the restarted orchestrator typed it again,
    and it ran twice."""
    pane = agent_pane(S)
    at_prompt(pane)
    service = orchestrator_service([pane])
    hold_output(pane)
    command_id = service.send(S, "echo once >> once.log")
    wait_until(lambda: service.audit_events(event="command_dispatched"), timeout=15, message="the line typed")
    assert status_of(service, command_id) == ("running", 1)
    assert not (pane.workdir / "once.log").exists()  # typed, not run: the shell is stuck echoing it
    service.kill()

    service.start()
    wait_until(lambda: service.audit_events(event="command_recovered"), timeout=15)
    [recovered] = service.audit_events(event="command_recovered")
    assert "not re-typed" in recovered["detail"]

    def waits_for_the_typed_line() -> None:  # past the never-started grace, and a stall timeout
        assert status_of(service, command_id) == ("running", 1)

    holds_for(STALL + 1.5, waits_for_the_typed_line)
    release_output(pane)
    row = service.wait_result(command_id, timeout=20)
    assert (row.status, row.exit_code) == ("succeeded", 0)
    assert (pane.workdir / "once.log").read_text() == "once\n"
    assert results_per_command(service) == {command_id: 1}
    assert len(service.audit_events(event="command_dispatched")) == 1  # the first run's only
    assert screen(pane).count(f"▶ #{command_id} echo once >> once.log") == 1


def test_12_a_command_queued_behind_a_busy_shell_runs_once_after_a_restart(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory
) -> None:
    """The user's own `sleep 6` holds the shell; the queued command is not typed into the busy
    shell's input at all, and after a SIGKILL and restart it runs exactly once. Before: it was
    typed behind the sleep, and typed again after the restart."""
    pane = agent_pane(S)
    at_prompt(pane)
    pane.type("sleep 6")
    service = orchestrator_service([pane])
    command_id = service.send(S, "echo once >> once.log")
    session_meta(service, S, "unsupported", "running sleep")
    assert status_of(service, command_id) == ("queued", 0)
    service.kill()

    service.start()
    row = service.wait_result(command_id, timeout=30)
    assert (row.status, row.exit_code, row.attempts) == ("succeeded", 0, 1)
    assert (pane.workdir / "once.log").read_text() == "once\n"
    assert results_per_command(service) == {command_id: 1}
    assert service.audit_events(event="command_recovered") == []


# 13 — non-shell panes get no blind typing; `set -e` --------------------------------------------------
PROGRAMS: dict[str, tuple[str, Callable[[list[str]], bool]]] = {
    "python3": ("python3", lambda lines: bool(lines) and lines[-1] == ">>>"),
    "less": ("less /etc/hostname", lambda lines: bool(lines) and "(END)" in lines[-1]),
    "vim": ("vim -u NONE", lambda lines: sum(line == "~" for line in lines) >= 3),
    "dash": ("exec dash", lambda lines: len(lines) >= 2 and lines[-1] == "$" and lines[-2] == "$ exec dash"),
}


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_13_a_pane_at_another_program_gets_nothing_typed(
    agent_pane: AgentPaneFactory,
    orchestrator_service: OrchestratorServiceFactory,
    wecom_mock: WeComMock,
    program: str,
) -> None:
    """Before: the command line was typed blindly into whatever ran in the pane."""
    if program == "vim" and shutil.which("vim") is None:
        pytest.skip("vim is not installed")
    launch, ready = PROGRAMS[program]
    pane = agent_pane(S)
    at_prompt(pane)
    pane.type(launch)
    wait_until(lambda: ready(screen(pane)), timeout=15, message=f"{program} ready; screen {screen(pane)}")
    before = pane.capture(200)
    service = orchestrator_service([pane], env=wecom_mock.env("webhook"))

    command_id = service.send(S, "echo must-not-be-typed")
    meta = session_meta(service, S, "unsupported")
    assert "commands are typed only into bash" in meta["state_detail"] or "nothing is typed" in meta["state_detail"]

    def untouched() -> None:
        assert pane.capture(200) == before
        assert status_of(service, command_id) == ("queued", 0)
        assert service.metadata(S).get("state") == "unsupported"
        assert stall_events(service) == []

    holds_for(2 * STALL + 1, untouched)
    assert not [m for m in wecom_mock.messages() if "命令卡顿" in m]
    assert service.audit_events(event="command_dispatched") == []


def test_13_set_e_in_the_users_shell_survives_a_failing_command(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory
) -> None:
    """Before: under the user's `set -e` a failing command ended the pane's shell."""
    pane = agent_pane(S)
    at_prompt(pane)
    pane.type("set -e")
    wait_until(lambda: screen(pane)[-2:] == ["$ set -e", "$"], timeout=10)
    shell = pane_pid(pane)
    service = orchestrator_service([pane])
    first, second = service.send(S, "false"), service.send(S, "echo alive $$")
    failed = service.wait_result(first)
    assert (failed.status, failed.exit_code) == ("failed", 1)
    row = service.wait_result(second)
    assert (row.status, row.exit_code, row.output_tail) == ("succeeded", 0, f"alive {shell}")
    assert pane_pid(pane) == shell
    wait_until(lambda: last_line(pane) == "$", timeout=10)
    pane.type("case $- in *e*) echo still-e;; esac")
    wait_until(lambda: "still-e" in screen(pane), timeout=10)  # the user's own `set -e` is kept
