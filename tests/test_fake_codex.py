"""Tests for the fake ``codex`` executable, run as a real subprocess: its replies, and that it
refuses exactly the options the pinned real ``codex exec`` refuses."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_tmuxagent.agents import AGENT_PACKAGES
from pytest_tmuxagent.agents_plugin import require_agent
from pytest_tmuxagent.fake_codex import DEFAULT_REPLY, VERSION_TEXT, FakeCodex, exec_flags, exec_flags_of

DECISION = {"next_actions": ["run tests"], "blockers": []}


@pytest.fixture
def codex(tmp_path: Path) -> FakeCodex:
    fake = FakeCodex(tmp_path / "bin")
    fake.install()
    return fake


def run(
    codex: FakeCodex, *args: str, stdin: str = "", env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "CODEX_TIMEOUT_SECONDS")}
    full_env.update(env or {})
    return subprocess.run(
        [str(codex.path), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=20,
        env=full_env,
        cwd=cwd or codex.bin_dir,
    )


def fenced_json(text: str) -> Any:
    match = re.search(r"```json\n(.*?)\n```", text, re.S)
    assert match, text
    return json.loads(match.group(1))


def test_install_writes_an_executable_found_on_path(codex: FakeCodex) -> None:
    assert codex.path.name == "codex" and os.access(codex.path, os.X_OK)
    assert codex.path.read_text().splitlines()[0] == f"#!{sys.executable}"
    assert shutil.which("codex", path=str(codex.bin_dir)) == str(codex.path)


def test_version_does_not_consume_a_reply(codex: FakeCodex) -> None:
    codex.script([{"kind": "json", "payload": DECISION}])
    result = run(codex, "--version")
    assert (result.returncode, result.stdout.strip()) == (0, VERSION_TEXT)
    assert json.loads(run(codex, "exec", "-").stdout) == DECISION
    assert [c.get("reply_index") for c in codex.calls()] == [None, 0]


def test_replies_are_consumed_in_order_and_the_last_repeats(codex: FakeCodex) -> None:
    codex.script([{"kind": "json", "payload": {"n": 1}}, {"kind": "json", "payload": {"n": 2}}])
    assert [json.loads(run(codex, "exec").stdout)["n"] for _ in range(3)] == [1, 2, 2]
    codex.script([{"kind": "json", "payload": {"n": 9}}])  # re-scripting starts over
    assert json.loads(run(codex, "exec").stdout) == {"n": 9}


def test_without_a_script_the_default_reply_is_used(codex: FakeCodex) -> None:
    result = run(codex, "exec")
    assert result.returncode == 0 and json.loads(result.stdout) == DEFAULT_REPLY["payload"]


def test_fenced_and_garbage_replies(codex: FakeCodex) -> None:
    codex.script(
        [{"kind": "fenced", "payload": DECISION}, {"kind": "garbage"}, {"kind": "garbage", "payload": "{oops"}]
    )
    fenced = run(codex, "exec").stdout
    assert fenced_json(fenced) == DECISION and not fenced.lstrip().startswith(("{", "```"))
    for _ in range(2):
        out = run(codex, "exec").stdout
        assert out.strip()
        with pytest.raises(ValueError):
            json.loads(out)


def test_exit_reply_writes_stderr_and_exit_code(codex: FakeCodex) -> None:
    codex.script([{"kind": "exit", "payload": "error: 401 Unauthorized", "exit_code": 7}, {"kind": "exit"}])
    first = run(codex, "exec")
    assert (first.returncode, first.stdout, first.stderr.strip()) == (7, "", "error: 401 Unauthorized")
    assert run(codex, "exec").returncode == 1


def test_slow_reply_waits_then_answers(codex: FakeCodex) -> None:
    codex.script([{"kind": "slow", "payload": DECISION, "delay": 0.3}])
    start = time.monotonic()
    result = run(codex, "exec")
    assert time.monotonic() - start >= 0.3
    assert json.loads(result.stdout) == DECISION


def test_hang_reply_runs_until_killed(codex: FakeCodex) -> None:
    codex.script([{"kind": "hang"}])
    proc = subprocess.Popen(
        [str(codex.path), "exec"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert codex.wait_for_calls(1, timeout=10)[0]["reply_kind"] == "hang"
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.3)
    finally:
        proc.kill()
    assert proc.wait(timeout=10) != 0
    assert proc.stdout.read() == b""  # type: ignore[union-attr]
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("flag", [["-o", "{p}"], ["--output-last-message", "{p}"], ["--output-last-message={p}"]])
def test_output_last_message_file(codex: FakeCodex, tmp_path: Path, flag: list[str]) -> None:
    target = tmp_path / "last.txt"
    codex.script([{"kind": "fenced", "payload": DECISION}])
    result = run(codex, "exec", *[f.format(p=target) for f in flag], "-")
    assert target.read_text() == result.stdout.rstrip("\n")
    assert fenced_json(target.read_text()) == DECISION


def test_calls_log_records_argv_stdin_cwd_and_env_without_secrets(codex: FakeCodex, tmp_path: Path) -> None:
    secret = "sk-test-DO-NOT-LOG-1234"
    run(
        codex,
        "exec",
        "--json",
        "-",
        stdin="prompt: summarise pane",
        cwd=tmp_path,
        env={"OPENAI_API_KEY": secret, "CODEX_TIMEOUT_SECONDS": "15"},
    )
    run(codex, "exec")
    first, second = codex.calls()
    assert first["argv"] == ["exec", "--json", "-"]
    assert first["stdin"] == "prompt: summarise pane"
    assert first["cwd"] == str(tmp_path)
    assert first["env"] == {"CODEX_TIMEOUT_SECONDS": "15", "OPENAI_API_KEY": True}
    assert second["env"] == {"CODEX_TIMEOUT_SECONDS": None, "OPENAI_API_KEY": False}
    assert first["time"] <= second["time"] and isinstance(first["pid"], int)
    log_text = "".join(p.read_text() for p in codex.bin_dir.iterdir() if p.is_file())
    assert secret not in log_text


def test_open_stdin_pipe_does_not_block_forever(codex: FakeCodex) -> None:
    proc = subprocess.Popen(
        [str(codex.path), "exec"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "FAKE_CODEX_STDIN_GRACE": "0.1"},
    )
    try:  # stdin is never written nor closed: the fake must still finish on its own
        assert proc.wait(timeout=10) == 0
        assert json.loads(proc.stdout.read()) == DEFAULT_REPLY["payload"]  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.stdin.close()  # type: ignore[union-attr]
        proc.stdout.close()  # type: ignore[union-attr]


def test_concurrent_calls_consume_each_reply_exactly_once(codex: FakeCodex) -> None:
    n = 6
    codex.script([{"kind": "json", "payload": {"n": i}} for i in range(n)] + [{"kind": "exit", "payload": "spent"}])
    procs = [
        subprocess.Popen([str(codex.path), "exec"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    outputs = [p.communicate(timeout=20)[0] for p in procs]
    assert sorted(json.loads(o)["n"] for o in outputs) == list(range(n))
    assert sorted(c["reply_index"] for c in codex.calls()) == list(range(n))


def test_script_rejects_unknown_kinds(codex: FakeCodex) -> None:
    with pytest.raises(ValueError, match="reply 1"):
        codex.script([{"kind": "json"}, {"kind": "explode"}])
    assert codex.calls() == []


# the real CLI's options -------------------------------------------------------------------------
def test_the_stored_options_are_the_pinned_real_codex_exec_help() -> None:
    """codex_exec_flags.json is `codex exec --help` of the pinned version, regenerated here from the
    real binary (.ci/run installs it); a new pin that drops or adds an option fails until the file
    is regenerated (`exec_flags_of(binary)`)."""
    binary = require_agent("codex")
    assert exec_flags_of(binary) == exec_flags()
    assert exec_flags()["version"] == f"codex-cli {AGENT_PACKAGES['codex'][1]}"


def test_options_the_product_passes_are_real_ones() -> None:
    longs = {o["long"] for o in exec_flags()["options"]}
    assert {"--sandbox", "--ephemeral", "--skip-git-repo-check", "--json", "--output-schema"} <= longs
    assert {"--config", "--output-last-message", "--dangerously-bypass-approvals-and-sandbox"} <= longs
    assert "--ask-for-approval" not in longs and "--full-auto" not in longs  # gone from exec in 0.171


REFUSED = [
    (["exec", "--ask-for-approval", "never", "-"], "error: unexpected argument '--ask-for-approval' found"),
    (["exec", "--bogus", "-"], "error: unexpected argument '--bogus' found"),
    (["exec", "one", "two"], "error: unexpected argument 'two' found"),
    (["exec", "--json", "--json", "-"], "error: the argument '--json' cannot be used multiple times"),
    (["exec", "--sandbox", "nope", "-"], "error: invalid value 'nope' for '--sandbox <SANDBOX_MODE>'"),
    (["exec", "--output-schema"], "error: a value is required for '--output-schema <FILE>' but none was supplied"),
    (["exec", "--json=yes", "-"], "error: unexpected value 'yes' for '--json' found; no more were expected"),
]


@pytest.mark.parametrize("argv,first", REFUSED)
def test_flags_the_real_cli_refuses_are_refused_alike(codex: FakeCodex, argv: list[str], first: str) -> None:
    result = run(codex, *argv)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[0] == first
    assert result.stderr.endswith("For more information, try '--help'.\n")
    [call] = codex.calls()
    assert call["refused"] == first and "reply_index" not in call  # no reply consumed


def test_refusals_match_the_real_cli_byte_for_byte(codex: FakeCodex, tmp_path: Path) -> None:
    binary = require_agent("codex")
    env = {"HOME": str(tmp_path), "CODEX_HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    for argv, _ in REFUSED:
        real = subprocess.run([str(binary), *argv], capture_output=True, text=True, timeout=30, env=env)
        real_err = "".join(line for line in real.stderr.splitlines(keepends=True) if not line.startswith("WARNING"))
        fake = run(codex, *argv)
        assert (fake.returncode, fake.stderr) == (real.returncode, real_err), argv


def test_accepted_forms_of_options(codex: FakeCodex, tmp_path: Path) -> None:
    out = tmp_path / "o.txt"
    for argv in (
        ["exec", "-sread-only", "-c", "a=1", "-c", "b=2", f"-o{out}", "-"],
        ["exec", "--sandbox=workspace-write", "--add-dir", "/a", "--add-dir", "/b", "--", "--not-a-flag"],
        ["e", "-m", "gpt-5", "prompt text"],
    ):
        assert run(codex, *argv).returncode == 0, argv


def test_event_error_reports_like_codex_then_fails_or_retries_for_ever(codex: FakeCodex) -> None:
    codex.script([{"kind": "event_error", "payload": "unexpected status 500", "then": "fail", "retries": 2}])
    failed = run(codex, "exec", "--json", "-")
    events = [json.loads(line) for line in failed.stdout.splitlines()]
    assert [e["type"] for e in events] == ["thread.started", "turn.started", "error", "error", "error", "turn.failed"]
    assert events[2]["message"] == "Reconnecting... 1/5 (unexpected status 500)"
    assert events[-1]["error"]["message"] == "unexpected status 500" and failed.returncode == 1
    codex.script([{"kind": "event_error", "payload": "Connection failed"}])
    proc = subprocess.Popen([str(codex.path), "exec", "--json", "-"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert json.loads(lines[2])["message"] == "Reconnecting... 1/5 (Connection failed)"
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.3)  # retrying for ever, as codex does while the network is down
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]
