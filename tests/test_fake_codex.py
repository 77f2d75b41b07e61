"""Tests for the fake ``codex`` executable, run as a real subprocess."""

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

from pytest_tmuxagent.fake_codex import DEFAULT_REPLY, VERSION_TEXT, FakeCodex

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
