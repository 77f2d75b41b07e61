"""The supervisor after a restart or a tmux server change (the rig: `engine_rig`): a started command
resumed and never typed again, a line never typed queued again, a line that did not start its
command cancelled, a pane missing at start, a restarted server never taken for the old one."""

from __future__ import annotations

from pathlib import Path

from orchestrator.state.db_faults import StateDBError

from .engine_fakes import session
from .engine_rig import make_rig


def test_recovery_resumes_a_started_command_and_never_retypes_one_that_did_not_start(tmp_path: Path) -> None:
    two = [session(), session("weather/api", "weather:api")]
    rig = make_rig(tmp_path, two)
    started, lost = rig.send("sleep 5"), rig.send("sleep 5", "weather/api")
    rig.driver.starts_on_delivery = False
    rig.sup.step()

    again = make_rig(tmp_path, two, started=frozenset({started}), typed=frozenset({lost}))
    assert again.driver.delivered == []  # nothing typed again
    assert again.status(lost) == "running"  # its line may still sit in a busy shell's input
    again.advance(3.0)
    assert again.status(lost) == "running"  # the shell is still busy: keep waiting
    again.driver.shell_is_idle = True
    again.advance(1.0)
    row = again.store.command(lost)
    assert row is not None and row.status == "cancelled" and again.driver.delivered == []
    again.driver.end(started, 0)
    again.sup.step()
    assert again.status(started) == "succeeded"


def test_a_command_whose_line_was_never_typed_is_queued_again_after_a_restart(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    cid = rig.send("echo once")
    rig.store.mark_running(cid, "2026-01-01T00:00:00.000000Z")  # the previous run died right here
    again = make_rig(tmp_path)
    assert again.status(cid) == "queued"
    again.sup.step()
    assert again.driver.delivered == [(cid, "%0")]


def test_a_line_that_did_not_start_its_command_is_cancelled_not_accepted(tmp_path: Path) -> None:
    """A result needs the attempt's own start record: a typed line that ran something else (text
    already on the prompt) ends cancelled once the shell is back at its prompt."""
    rig = make_rig(tmp_path)
    rig.driver.starts_on_delivery = False
    cid = rig.send("echo from-orchestrator")
    rig.sup.step()
    rig.driver.end(cid, 0)  # an exit without a start record is not a result
    rig.sup.step()
    assert rig.status(cid) == "running"
    rig.driver.shell_is_idle = True
    rig.advance(2.5)
    row = rig.store.command(cid)
    assert row is not None and (row.status, row.exit_code) == ("cancelled", None)


def test_a_missing_pane_at_start_leaves_the_other_sessions_running(tmp_path: Path) -> None:
    two = [session(), session("weather/api", "weather:api")]
    rig = make_rig(tmp_path, two, missing=frozenset({"weather:api"}))
    assert rig.store.metadata("weather/api")["state"] == "pane_missing"
    a, b = rig.send("echo a"), rig.send("echo b", "weather/api")
    rig.sup.step()
    assert rig.status(a) == "running" and rig.status(b) == "queued"
    assert rig.metrics.session_state.labels(session="weather/api", state="pane_missing")._value.get() == 1
    rig.panes.alive.add("%1")  # the pane appears
    rig.advance(2.5)
    assert rig.status(b) == "running"
    assert rig.store.metadata("weather/api")["state"] == "working"
    assert rig.audit().count("session_state") >= 1


def test_a_restarted_tmux_server_is_never_taken_for_the_old_one(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.sup.step()
    rig.advance(1.1)  # a liveness round learns the server's identity
    rig.panes.identity = "200 2"  # a new server; its %0 may be another session's pane
    rig.panes.targets["weather:bot"] = "%7"
    rig.panes.alive.add("%7")
    rig.advance(1.1)
    cid = rig.send("echo hi")
    rig.sup.step()
    assert rig.driver.delivered == [(cid, "%7")]


def test_a_server_restarted_between_liveness_rounds_is_caught_before_typing(tmp_path: Path) -> None:
    """No liveness round has run since the restart: the cached %0 is another session's pane now,
    and the target is looked up again right before anything is typed."""
    rig = make_rig(tmp_path)
    rig.sup.step()
    rig.panes.identity = "200 2"
    rig.panes.targets["weather:bot"] = "%7"
    rig.panes.alive.add("%7")  # %0 still answers: on the new server it is someone else's pane
    cid = rig.send("echo hi")
    rig.sup.step()
    rig.sup.step()
    assert rig.driver.delivered == [(cid, "%7")]
    assert "%0" in rig.driver.forgotten


def test_a_dispatch_the_state_db_fails_after_the_typing_is_still_audited_once(tmp_path: Path) -> None:
    """The state DB refuses every read from the moment the line is typed (a PostgreSQL restart,
    a locked SQLite file): the command runs, so its `command_dispatched` line must be written —
    once — and its result recorded when the DB is back (the fleet restart test found it lost)."""
    rig = make_rig(tmp_path)
    down = {"now": False}
    real_depth, real_command = rig.store.queue_depth, rig.store.command
    fault = StateDBError(rig.store.path, "io", "server closed the connection unexpectedly")

    def refusing(real):  # type: ignore[no-untyped-def]
        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            if down["now"]:
                raise fault
            return real(*args, **kwargs)

        return call

    rig.store.queue_depth = refusing(real_depth)  # type: ignore[method-assign]
    rig.store.command = refusing(real_command)  # type: ignore[method-assign]
    real_deliver = rig.driver.deliver

    def deliver_then_fail(row, pane_id):  # type: ignore[no-untyped-def]
        real_deliver(row, pane_id)
        down["now"] = True

    rig.driver.deliver = deliver_then_fail  # type: ignore[method-assign]
    command_id = rig.send("echo hi")
    try:
        rig.sup.step()
    except StateDBError:
        pass  # the loop's fault boundary (Supervisor.run) waits it out
    down["now"] = False
    rig.driver.end(command_id, 0)
    for _ in range(3):
        rig.advance(0.1)
    assert rig.status(command_id) == "succeeded"
    assert rig.audit().count("command_dispatched") == 1
    assert [e for e in rig.audit() if e.startswith("command_")] == ["command_dispatched", "command_result"]
