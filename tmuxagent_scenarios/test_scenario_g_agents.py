"""Scenario G (通知降级验证) for agent sessions: WeCom is removed from the env file while the real
Claude Code or codex asks to run a tool the safety policy escalates. The `需要确认` notification
waits in the outbox, and the agent keeps waiting: the session stays `waiting_approval`, nothing
is approved because the person could not be told, and the file the tool would make does not
exist. WeCom restored in the env file (no restart), the notification is delivered; still nothing
is approved until `tmux-agent approve SESSION`, which lets the turn finish.
"""

from __future__ import annotations

import pytest

from pytest_tmuxagent.model_server import text
from pytest_tmuxagent.waiting import wait_until
from tmuxagent_scenarios.agent_cases import PROVIDERS, TURN_TIMEOUT, approve_and_finish, script, shell_call
from tmuxagent_scenarios.common import supervised_for

pytestmark = pytest.mark.scenario_g

SESSION = "weather/agent"
FAST_NOTIFY = {
    "notifications": {
        "retry_backoff_seconds": 0.2,
        "rate_limit_backoff_seconds": 0.5,
        "request_timeout_seconds": 1,
        "env_reload_seconds": 0.2,
    },
}
STORY = (
    "notifications_degraded",
    "approval_requested",
    "notification_queued",
    "notifications_recovered",
    "notification_sent",
    "approval_queued",
    "approval_answered",
    "command_result",
)
TOOL_COMMAND = "touch release.txt"  # neither allowlisted nor destructive: a person decides


def write_env(service, values: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    service.env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def notifications(service) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return service.status()["notifications"]  # type: ignore[no-any-return]


def still_waiting(service, pane, command_id: int) -> None:  # type: ignore[no-untyped-def]
    """The agent waits for a person: nothing approved, nothing run."""
    meta = service.metadata(SESSION)
    assert meta["state"] == "waiting_approval", meta.get("state_detail")
    assert meta["pending_approval"]["command"] == TOOL_COMMAND
    assert service.command(command_id).status == "running"
    assert service.audit_events(event="approval_answered", session=SESSION) == []
    assert not (pane.workdir / "release.txt").exists()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_escalation_while_wecom_is_down_waits_in_the_outbox_and_the_agent_waits_for_a_person(  # type: ignore[no-untyped-def]
    provider, agent_under_test, model_server, wecom_mock
) -> None:
    pane, service = agent_under_test(provider, SESSION, settings=FAST_NOTIFY)
    pid = service.process.pid
    write_env(service, wecom_mock.env("webhook"))
    wait_until(
        lambda: (health := notifications(service))["state"] == "ok" and "webhook" in health["channels"],
        timeout=10,
        message="WeCom configured",
    )
    write_env(service, {})  # WeCom removed, no restart
    assert service.metrics.wait_until_value("orchestrator_notifications_degraded", 1.0) == 1.0

    script(model_server, provider, shell_call(provider, TOOL_COMMAND, escalate=True, why="release"), text("Released."))
    command_id = service.send(SESSION, "release the weather bot")
    wait_until(
        lambda: service.metadata(SESSION).get("state") == "waiting_approval",
        timeout=TURN_TIMEOUT,
        message="waiting_approval",
    )
    wait_until(lambda: notifications(service)["pending"] == 1, timeout=10, message="需要确认 kept in the outbox")
    health = notifications(service)
    assert health["state"] == "degraded" and "WECOM_WEBHOOK" in health["reason"]
    [queued] = service.audit_events(event="notification_queued", session=SESSION)
    assert queued["detail"] == f"approval: 需要确认 · {SESSION}"
    assert wecom_mock.messages() == []
    # a while later the agent still waits: the person could not be told, so nothing is decided
    supervised_for(service, 3, "three seconds of supervisor rounds")
    still_waiting(service, pane, command_id)
    assert notifications(service)["pending"] == 1 and wecom_mock.messages() == []

    write_env(service, wecom_mock.env("webhook"))  # restored, no restart
    [alert] = wecom_mock.wait_for_messages(1, timeout=15)
    assert alert.startswith(f"## 需要确认 · {SESSION}")
    assert TOOL_COMMAND in alert and f"tmux-agent approve {SESSION}" in alert
    wait_until(
        lambda: notifications(service)["state"] == "ok" and notifications(service)["pending"] == 0,
        timeout=10,
        message="notifications recovered and the outbox empty",
    )
    assert service.metrics.wait_until_value("orchestrator_notifications_degraded", 0.0) == 0.0
    still_waiting(service, pane, command_id)  # delivered is not approved

    approve_and_finish(service, SESSION, command_id, pane.workdir / "release.txt", "Released.", TOOL_COMMAND)
    assert service.process.pid == pid and service.process.poll() is None  # never restarted

    # the audit log tells the same story, in order, from WeCom's removal on
    wait_until(  # the audit line follows the DB commit of the result
        lambda: service.audit_events(event="command_result", session=SESSION),
        timeout=10,
        message="the command_result audit line",
    )
    events = [e["event"] for e in service.audit_events()]
    removed = len(events) - 1 - events[::-1].index("notifications_degraded")
    assert [e for e in events[removed:] if e in STORY] == list(STORY)
