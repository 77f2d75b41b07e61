"""Scenario A (命令执行反馈) in shells as people really use them.

The panes run `pytest_tmuxagent.shells`: `bash-rc` (coloured PS1 with `\\[\\e[..m\\]` escapes, a
PROMPT_COMMAND that sets the window title and runs `history -a`, HISTCONTROL unset, HISTFILE in
the tmp dir, `set -o vi`, `set -u`), `bash-errexit` (the same rc ending in `set -e`), `zsh`
(coloured PROMPT, `bindkey -v`, a title-setting precmd, HISTFILE in the tmp dir, no
HIST_IGNORE_SPACE) and `dash`, which the orchestrator does not type into. What a person at the
pane must see: a dim `▶ #N command` header in place of the typed line, never the internal
script path, and their history holding their commands.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_tmuxagent import SHELL_NAMES, wait_until
from tmuxagent_scenarios.common import loop_ran

pytestmark = pytest.mark.scenario_a

SESSION = "weather/bot"
COMMANDS = ("echo first-out", "false", "echo third-out")
INTERNAL = re.compile(r"/run/|\bc-[0-9a-f]{8}-\d+-\d+\.sh|\bp-[0-9a-f]{8}-\d+-\d+\.sh")


def run_all(service, commands=COMMANDS):
    ids = [service.send(SESSION, command) for command in commands]
    return ids, [service.wait_result(command_id) for command_id in ids]


def screen_after_prompt(pane) -> list[str]:
    """The pane's screen and scrollback once its shell has drawn the prompt again."""
    pane.wait_prompt()
    return pane.capture(500)


@pytest.mark.parametrize("shell", ["bash-errexit"])
def test_a_failure_under_set_e_keeps_its_exit_code_and_the_shell(shell, agent_pane, orchestrator_service) -> None:
    pane = agent_pane(SESSION, shell=shell)
    service = orchestrator_service([pane])
    pane_pid = tmux_pane_pid(pane)

    ids, rows = run_all(service, ("echo pid=$$", "false", "(exit 7)", "echo still-here pid=$$"))

    assert [(r.status, r.exit_code) for r in rows] == [("succeeded", 0), ("failed", 1), ("failed", 7), ("succeeded", 0)]
    assert rows[0].output_tail == f"pid={pane_pid}"
    assert rows[3].output_tail == f"still-here pid={pane_pid}"  # the same shell ran the next command
    assert tmux_pane_pid(pane) == pane_pid
    assert service.metadata(SESSION)["last_command_result"]["exit_code"] == 0
    # the user's `set -e` is back in force at the prompt (our scripts turn it off only while they run)
    pane.wait_prompt()
    pane.type('echo "flags:$-"')
    flags = wait_until(
        lambda: next((line for line in pane.capture() if line.startswith("flags:")), None),
        timeout=10,
        message="the shell's option flags",
    )
    assert "e" in flags.removeprefix("flags:")


def tmux_pane_pid(pane) -> int:
    return int(pane.server.server.cmd("display-message", "-p", "-t", pane.pane_id, "#{pane_pid}").stdout[0])


@pytest.mark.parametrize("shell", ["bash", "bash-rc", "bash-errexit", "zsh"])
def test_the_pane_shows_the_header_never_the_script(shell, agent_pane, orchestrator_service) -> None:
    pane = agent_pane(SESSION, shell=None if shell == "bash" else shell)
    service = orchestrator_service([pane])

    ids, rows = run_all(service)

    assert [r.exit_code for r in rows] == [0, 1, 0]
    screen = screen_after_prompt(pane)
    headers = [line for line in screen if line.startswith("▶ #")]
    assert headers == [f"▶ #{i} {command}" for i, command in zip(ids, COMMANDS, strict=True)]
    assert [line for line in screen if INTERNAL.search(line)] == []
    assert "first-out" in screen and "third-out" in screen


def test_bash_history_holds_the_users_commands(agent_pane, orchestrator_service) -> None:
    """bash-rc keeps every line (HISTCONTROL unset), so the internal line would be there if the
    driver did not replace it: `history` and the HISTFILE (appended by PROMPT_COMMAND's
    `history -a`) hold exactly the commands sent."""
    pane = agent_pane(SESSION, shell="bash-rc")
    histfile = pane.shell.histfile
    assert histfile is not None
    service = orchestrator_service([pane])

    run_all(service)
    listed = service.wait_result(service.send(SESSION, "history")).output_tail

    assert [line.split(None, 1)[1] for line in listed.splitlines()] == [*COMMANDS, "history"]
    written = wait_until(
        lambda: lines if (lines := read_lines(histfile))[-1:] == ["history"] else None,
        timeout=10,
        message="PROMPT_COMMAND's history -a to write the HISTFILE",
    )
    assert written == [*COMMANDS, "history"]


@pytest.mark.parametrize("shell", ["bash-rc", "zsh"])
def test_a_builtin_command_forks_nothing_in_the_pane(shell, agent_pane, orchestrator_service) -> None:
    """Everything the driver runs in the pane around a command is a builtin (bash's history
    fix-up included: it reads the last entry back through a file, not `$(…)`), so a command that
    is itself a builtin makes the pane's shell fork nothing. Counted by the kernel: a child the
    shell reaped adds its page faults to the shell's `cminflt` (`/proc/PID/stat`); a command that
    does fork (`/bin/true`) shows the count moves."""
    pane = agent_pane(SESSION, shell=shell)
    service = orchestrator_service([pane])
    pid = tmux_pane_pid(pane)
    service.wait_result(service.send(SESSION, "true"))  # the first dispatch sets the pane up
    pane.wait_prompt()
    before = reaped_children_faults(pid)

    _, rows = run_all(service, ("true", "echo builtin-out", "cd . && (( 1 + 1 ))"))
    pane.wait_prompt()
    after = reaped_children_faults(pid)
    service.wait_result(service.send(SESSION, "/bin/true"))
    pane.wait_prompt()

    assert [(r.status, r.exit_code) for r in rows] == [("succeeded", 0)] * 3
    assert rows[1].output_tail == "builtin-out"
    assert after == before
    assert reaped_children_faults(pid) > after  # the measure sees a fork


def reaped_children_faults(pid: int) -> int:
    """`cminflt`: the minor page faults of the process's children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[8])


def test_zsh_history_holds_the_users_commands_from_the_second_dispatch_on(agent_pane, orchestrator_service) -> None:
    """zsh keeps every line (no HIST_IGNORE_SPACE). The driver adds the user's command with
    `print -s` and installs a zshaddhistory hook that drops its own lines — but zsh adds the
    first typed line before any script of ours runs, so the first internal line stays in the
    history; from the second dispatch on, only the user's commands are added. `fc -l` (run as
    a command of its own; like a typed `fc -l`, it does not list itself) shows exactly that."""
    pane = agent_pane(SESSION, shell="zsh")
    service = orchestrator_service([pane])

    ids, _ = run_all(service)
    first = service.wait_result(service.send(SESSION, "fc -ln 1")).output_tail.splitlines()
    second = service.wait_result(service.send(SESSION, "fc -ln 1")).output_tail.splitlines()

    first_internal, *rest = first
    assert INTERNAL.search(first_internal) and f"-{ids[0]}-" in first_internal  # the first dispatch's line
    assert rest == list(COMMANDS)
    assert second == [first_internal, *COMMANDS, "fc -ln 1"]


def test_an_unsupported_shell_gets_nothing_typed(agent_pane, orchestrator_service) -> None:
    pane = agent_pane(SESSION, shell="dash")
    service = orchestrator_service([pane])
    before = pane.capture()

    command_id = service.send(SESSION, "echo never-typed")

    metadata = wait_until(
        lambda: m if (m := service.metadata(SESSION)).get("state") == "unsupported" else None,
        timeout=10,
        message="the session's state to become unsupported",
    )
    assert "dash" in metadata["state_detail"]
    assert service.metrics.wait_until_value("orchestrator_session_state", 1.0, session=SESSION, state="unsupported")
    assert service.metrics.value("orchestrator_session_state", session=SESSION, state="idle") == 0.0
    loop_ran(service)  # the loop has looked at the queued command again and again
    row = service.command(command_id)
    assert row is not None and row.status == "queued"
    assert service.status()["sessions"][0]["queue_depth"] == 1
    assert service.audit_events(event="command_dispatched") == []
    assert pane.capture() == before  # nothing was typed


# Driver bugs the realistic shells exposed (orchestrator/drivers/shell_files.py), fixed: zsh's fatal
# errors abort the typed line (the epilogue now runs from an `always` block), zsh's `.` returns 126
# for an error inside (the epilogue reports 1, as typed), and error messages named the sourced file
# (the command now runs through `eval`).


def test_zsh_a_fatal_expansion_error_still_ends_the_command(agent_pane, orchestrator_service) -> None:
    pane = agent_pane(SESSION, shell="zsh")
    service = orchestrator_service([pane])
    row = service.wait_result(service.send(SESSION, "echo ${NOPE_UNSET:?missing}"), timeout=10)
    assert (row.status, row.exit_code) == ("failed", 1)  # what `echo $?` shows after typing it


def test_zsh_an_evaluation_error_keeps_the_exit_code_a_person_sees(agent_pane, orchestrator_service) -> None:
    pane = agent_pane(SESSION, shell="zsh")
    service = orchestrator_service([pane])
    row = service.wait_result(service.send(SESSION, "echo $((1/0))"))
    assert (row.status, row.exit_code) == ("failed", 1)


@pytest.mark.parametrize(("shell", "command"), [("zsh", "cd /nonexistent-dir"), ("bash-rc", "echo (")])
def test_error_messages_never_name_the_internal_script(shell, command, agent_pane, orchestrator_service) -> None:
    pane = agent_pane(SESSION, shell=shell)
    service = orchestrator_service([pane])
    row = service.wait_result(service.send(SESSION, command))
    assert row.status == "failed"
    assert not INTERNAL.search(row.output_tail), row.output_tail
    assert [line for line in screen_after_prompt(pane) if INTERNAL.search(line)] == []


@pytest.mark.parametrize("shell", SHELL_NAMES)
def test_no_rc_file_of_the_user_is_read(shell, tmp_path: Path, monkeypatch, agent_pane) -> None:
    """The test process's HOME, ZDOTDIR, ENV and BASH_ENV point at rc files that leave a mark;
    the panes' shells read none of them, and a realistic shell's HOME is its own tmp folder."""
    home = tmp_path / "users-home"
    home.mkdir()
    marks = tmp_path / "marks"
    for rc in (".bashrc", ".bash_profile", ".profile", ".zshrc", ".zshenv", ".zprofile", ".inputrc", "env.sh"):
        (home / rc).write_text(f"touch {marks}-{rc}\n" if rc != ".inputrc" else f"$include {marks}\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("ZDOTDIR", str(home))
    monkeypatch.setenv("ENV", str(home / "env.sh"))
    monkeypatch.setenv("BASH_ENV", str(home / "env.sh"))

    pane = agent_pane(SESSION, shell=shell)  # returns once the prompt is drawn: every rc has run
    pane.type('echo "home:$HOME"')
    seen = wait_until(
        lambda: next((line for line in pane.capture() if line.startswith("home:")), None),
        timeout=10,
        message="the pane's HOME",
    )

    assert sorted(p.name for p in tmp_path.glob("marks*")) == []
    if pane.shell.home is not None:
        assert seen == f"home:{pane.shell.home}"
        assert pane.shell.rc_file is not None and pane.shell.rc_file.is_relative_to(pane.shell.home)


@pytest.mark.parametrize("tmuxagent_pane_shell", ["zsh"])
def test_the_project_wide_pane_shell_may_name_a_shell(tmuxagent_pane_shell, agent_pane) -> None:
    pane = agent_pane(SESSION)
    assert pane.shell.name == "zsh"
    assert pane.prompt_line().endswith(("% ", "# "))  # drawn before agent_pane returned


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
