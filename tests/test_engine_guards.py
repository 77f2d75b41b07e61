"""The supervisor with its guards (the rig: `engine_rig`): a stall interrupted, retried, given up
and cooled down (a cooldown that survives a restart), a failure streak that blocks and alerts
once, and a question that is waiting_input, never a stall."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.events import (
    StallGaveUp,
    StallRetried,
)

from .engine_fakes import session, settings
from .engine_rig import Rig, S, make_rig


def test_stall_interrupts_retries_then_alerts_and_cools_down(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, [session(retry_safe=True)])
    stuck, after = rig.send("sleep 600"), rig.send("echo recovered")
    rig.sup.step()
    rig.driver.emit(stuck, "waiting-for-weather-api")
    rig.advance(0.1)
    rig.advance(9.0)
    assert rig.driver.interrupts == []  # 9 s without output: not yet

    rig.advance(1.5)  # past the 10 s stall timeout
    assert rig.driver.interrupts == [(stuck, ("C-c",))]
    rig.advance(1.0)  # the grace runs out without an exit record: retry
    assert rig.status(stuck) == "running" and [c for c, _ in rig.driver.delivered] == [stuck, stuck]
    assert [e.attempt for e in rig.log.of(StallRetried)] == [1]  # type: ignore[attr-defined]

    rig.advance(10.5)
    rig.driver.end(stuck, 130)  # this time the interrupted command reports its end
    rig.sup.step()
    row = rig.store.command(stuck)
    assert row is not None and (row.status, row.exit_code, row.attempts) == ("stalled", 130, 2)
    [gave_up] = rig.log.of(StallGaveUp)
    assert gave_up.waited_s == pytest.approx(22.2, abs=0.2)  # type: ignore[attr-defined]  # both attempts
    [alert] = rig.notify.sent
    assert alert["title"] == f"命令卡顿 · {S}" and "sleep 600" in alert["body"] and "waited" in alert["body"]
    assert rig.store.metadata(S)["stall_count"] == 2

    rig.advance(4.0)  # inside the 5 s cooldown: the next command waits
    assert rig.status(after) == "queued"
    rig.advance(1.5)
    assert rig.status(after) == "running"
    assert rig.store.metadata(S)["cooldown_until"] is None
    events = rig.audit()
    assert events.index("cooldown_started") < events.index("cooldown_ended")


def test_output_keeps_a_long_command_from_stalling(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    cid = rig.send("make build")
    rig.sup.step()
    for i in range(30):
        rig.driver.emit(cid, f"step {i}")
        rig.advance(2.0)
    assert rig.driver.interrupts == [] and rig.status(cid) == "running"


def given_up_stall(tmp_path: Path) -> tuple[Rig, int]:
    """A rig without retries whose one command stalled, was interrupted once and given up."""
    rig = make_rig(tmp_path, cfg=settings(stall_retries_before_notify=0))
    cid = rig.send("sleep 600")
    rig.sup.step()
    rig.advance(10.5)  # past the stall timeout: interrupted
    rig.advance(1.0)  # no retry: given up
    return rig, cid


def test_without_retries_a_stall_gives_up_after_the_first_interrupt(tmp_path: Path) -> None:
    rig, cid = given_up_stall(tmp_path)
    row = rig.store.command(cid)
    assert row is not None and (row.status, row.exit_code) == ("stalled", None)
    assert len(rig.notify.sent) == 1


def test_a_cooldown_survives_a_restart(tmp_path: Path) -> None:
    rig, cid = given_up_stall(tmp_path)
    assert rig.status(cid) == "stalled"
    until = rig.store.metadata(S)["cooldown_until"]
    assert until

    again = make_rig(tmp_path, cfg=settings(stall_retries_before_notify=0))
    again.clock.advance(rig.clock.now() - again.clock.now())  # the same wall clock as the first run
    nxt = again.send("echo next")
    again.sup.step()
    assert again.status(nxt) == "queued"
    again.advance(5.0)
    assert again.status(nxt) == "running"


def test_a_failure_streak_blocks_alerts_once_and_unblock_resumes(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, cfg=settings(failure_alert_threshold=2))
    ids = [rig.send("false") for _ in range(3)]
    for cid in ids[:2]:
        rig.sup.step()
        rig.driver.end(cid, 1)
        rig.sup.step()
    assert rig.store.metadata(S)["blocked"] is True
    assert rig.store.metadata(S)["failure_streak"] == 2
    rig.sup.step()
    assert rig.status(ids[2]) == "queued"  # blocked: waits, is not lost
    assert [n["title"] for n in rig.notify.sent] == [f"命令连续失败 · {S}"]
    assert rig.metrics.blocked.labels(session=S)._value.get() == 1

    rig.store.update_metadata(S, {"blocked": False, "failure_streak": 0})  # what `tmux-agent unblock` writes
    rig.sup.step()
    assert rig.status(ids[2]) == "running"
    assert rig.metrics.blocked.labels(session=S)._value.get() == 0


def test_a_success_resets_the_streak(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, cfg=settings(failure_alert_threshold=2))
    for code in (1, 0, 1):
        cid = rig.send("x")
        rig.sup.step()
        rig.driver.end(cid, code)
        rig.sup.step()
    assert rig.store.metadata(S)["failure_streak"] == 1 and not rig.store.metadata(S).get("blocked")
    assert rig.notify.sent == []


def test_a_bad_stored_streak_is_counted_from_zero(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, cfg=settings(failure_alert_threshold=2))
    rig.store.update_metadata(S, {"failure_streak": "abc", "blocked": "no"})
    cid = rig.send("false")
    rig.sup.step()
    assert rig.status(cid) == "running"  # "no" is not a block
    rig.driver.end(cid, 1)
    rig.sup.step()
    assert rig.store.metadata(S)["failure_streak"] == 1


def test_without_retry_safe_a_stall_is_not_run_again(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)  # retry_safe defaults to false
    cid = rig.send("deploy --once")
    rig.sup.step()
    rig.advance(10.5)
    rig.advance(1.0)
    row = rig.store.command(cid)
    assert row is not None and (row.status, row.attempts) == ("stalled", 1)
    assert [c for c, _ in rig.driver.delivered] == [cid]


def test_a_question_is_not_a_stall_and_a_reply_is_typed(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    cid = rig.send("read -p 'continue? [y/N] ' ans")
    rig.sup.step()
    rig.driver.asking.add(cid)
    for _ in range(40):  # 40 s: four stall timeouts
        rig.advance(1.0)
    assert rig.driver.interrupts == [] and rig.status(cid) == "running"
    meta = rig.store.metadata(S)
    assert meta["state"] == "waiting_input" and meta["running"]["question"] == "continue? [y/N]"
    assert [n["title"] for n in rig.notify.sent] == [f"需要输入 · {S}"]
    assert rig.audit().count("input_requested") == 1

    rig.store.update_metadata(S, {"pending_reply": {"text": "y", "queued_at": "x"}})
    rig.driver.asking.discard(cid)
    rig.sup.step()
    assert rig.driver.replies == [("%0", "y")]
    assert rig.store.metadata(S)["pending_reply"] is None
    assert rig.store.metadata(S)["state"] == "working"
    rig.advance(9.0)
    assert rig.driver.interrupts == []  # the stall clock started again at the answer
    rig.advance(1.5)
    assert rig.driver.interrupts == [(cid, ("C-c",))]


def test_a_question_that_starts_between_liveness_rounds_is_still_not_a_stall(tmp_path: Path) -> None:
    """The stall timeout may run out between two liveness rounds: the engine asks the driver about
    input before it interrupts, not only once a round."""
    rig = make_rig(tmp_path)
    cid = rig.send("read -p 'continue? [y/N] ' ans")
    rig.sup.step()
    for _ in range(14):  # 0.7 s steps: a liveness round every other step, the last at 9.8 s
        rig.advance(0.7)
    rig.driver.asking.add(cid)  # the question appears right after that round
    rig.advance(0.7)  # 10.5 s without output: past the timeout, not a liveness round
    assert rig.driver.interrupts == []
    assert rig.store.metadata(S)["state"] == "waiting_input"


def test_the_question_is_in_metadata_before_the_state_says_waiting_input(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    seen: list[object] = []
    original = rig.store.update_metadata

    def spy(name: str, changes: dict[str, object]) -> None:
        original(name, changes)
        if changes.get("state") == "waiting_input":
            running = rig.store.metadata(name).get("running")
            seen.append(running.get("question") if isinstance(running, dict) else None)

    rig.store.update_metadata = spy  # type: ignore[method-assign]
    cid = rig.send("read -p 'continue? [y/N] ' ans")
    rig.sup.step()
    rig.driver.asking.add(cid)
    rig.advance(1.0)
    assert seen == ["continue? [y/N]"]
