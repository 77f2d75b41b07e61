"""Scenario G (通知降级验证): with WeCom missing or failing, the orchestrator keeps
running, says "notifications degraded" once, keeps every alert in the outbox, and
delivers them when the channel works again — no restart, no secret in any log.
"""

from __future__ import annotations

import time

import pytest

from pytest_tmuxagent.waiting import wait_until

pytestmark = pytest.mark.scenario_g

FAST_NOTIFY = {
    "failure_alert_threshold": 1,
    "notifications": {
        "retry_backoff_seconds": 0.2,
        "rate_limit_backoff_seconds": 0.5,
        "request_timeout_seconds": 1,
        "env_reload_seconds": 0.2,
    },
}
SECRETS = ("test-webhook-key-0001", "test-app-secret-0001")


def streak_alert(service, session: str) -> int:
    """Induce one "命令连续失败" alert (threshold 1) in `session`."""
    command_id = service.send(session, "false")
    assert service.wait_result(command_id).status == "failed"
    wait_until(lambda: service.audit_events(event="notification_queued", session=session), timeout=10)
    return command_id


def write_env(service, values: dict[str, str]) -> None:
    service.env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def assert_no_secret_leaked(service, wecom_mock) -> None:
    texts = [service.log_text(), service.audit_log.read_text(), (service.host_log_dir / "orchestrator.log").read_text()]
    leaked = [s for s in (*SECRETS, wecom_mock.access_token) for t in texts if s in t]
    assert leaked == []


def degraded_lines(service) -> list[str]:
    return [
        line
        for line in (service.host_log_dir / "orchestrator.log").read_text().splitlines()
        if "notifications degraded" in line
    ]


@pytest.mark.parametrize("mode", ["webhook", "app"])
@pytest.mark.tmuxagent_each_store
def test_removed_channel_degrades_then_recovers_and_flushes(
    mode, agent_pane, orchestrator_service, wecom_mock, tmuxagent_evidence
) -> None:
    panes = [agent_pane("weather/bot"), agent_pane("weather/api")]
    service = orchestrator_service(panes, settings=FAST_NOTIFY)  # no WeCom variable anywhere
    streak_alert(service, "weather/bot")
    streak_alert(service, "weather/api")

    assert service.process.poll() is None
    wait_until(lambda: service.status()["notifications"]["pending"] == 2, timeout=10)
    health = service.status()["notifications"]
    assert health["state"] == "degraded" and "WECOM_WEBHOOK" in health["reason"]
    assert len(degraded_lines(service)) == 1  # one line per episode, not one per message
    assert service.metrics.value("orchestrator_notifications_degraded") == 1.0
    assert wecom_mock.requests == []

    restored = time.time()
    write_env(service, wecom_mock.env(mode))  # restore: no restart
    messages = wecom_mock.wait_for_messages(2, timeout=10)
    first_s = min(r.time for r in wecom_mock.requests if r.message) - restored
    assert {m.split("\n")[0] for m in messages} == {"## 命令连续失败 · weather/bot", "## 命令连续失败 · weather/api"}
    wait_until(lambda: service.status()["notifications"]["state"] == "ok", timeout=10)
    assert service.metrics.wait_until_value("orchestrator_notifications_degraded", 0.0) == 0.0

    service.cli("unblock", "weather/bot")
    streak_alert(service, "weather/bot")  # later alerts flow too
    assert len(wecom_mock.wait_for_messages(3, timeout=10)) == 3
    assert_no_secret_leaked(service, wecom_mock)
    tmuxagent_evidence.figure("degradation_to_delivery", first_s)
    tmuxagent_evidence.decide(
        f"With no WeCom variable the orchestrator kept running, logged `notifications degraded` once and held 2 "
        f"alerts in the outbox; {first_s:.1f} s after the {mode} variables were restored (no restart) both were "
        "delivered and a later alert flowed too, with no secret in any log",
        headline=mode == "webhook",
    )


FAILURES = [
    ("webhook", "http_500"),
    ("webhook", "rate_limit"),
    ("webhook", "slow"),
    ("webhook", "refuse"),
    ("app", "http_500"),
    ("app", "token_expired"),
    ("app", "rate_limit"),
    ("app", "refuse"),
]


@pytest.mark.parametrize("mode,kind", FAILURES, ids=[f"{m}-{k}" for m, k in FAILURES])
def test_failing_channel_keeps_the_alert_until_it_works(
    mode, kind, agent_pane, orchestrator_service, wecom_mock
) -> None:
    wecom_mock.slow_seconds = 2.5
    service = orchestrator_service([agent_pane("weather/bot")], settings=FAST_NOTIFY, env=wecom_mock.env(mode))
    wecom_mock.set_mode(kind)
    streak_alert(service, "weather/bot")

    wait_until(lambda: service.status()["notifications"]["state"] == "degraded", timeout=15)
    assert service.process.poll() is None
    assert service.status()["notifications"]["pending"] == 1
    assert wecom_mock.messages() == [] or kind == "slow"  # a slow reply may land after the client gave up

    wecom_mock.reset()
    [first, *_] = wecom_mock.wait_for_messages(1, timeout=15)
    assert first.startswith("## 命令连续失败 · weather/bot")
    wait_until(
        lambda: service.status()["notifications"] == {**service.status()["notifications"], "state": "ok", "pending": 0},
        timeout=15,
    )
    assert len(degraded_lines(service)) == 1
    assert service.metrics.value("orchestrator_notifications_total", channel=mode, result="failed") >= 1
    assert_no_secret_leaked(service, wecom_mock)


def test_an_expired_app_token_is_refreshed_without_degrading(agent_pane, orchestrator_service, wecom_mock) -> None:
    service = orchestrator_service([agent_pane("weather/bot")], settings=FAST_NOTIFY, env=wecom_mock.env("app"))
    wecom_mock.fail_next("token_expired")
    streak_alert(service, "weather/bot")
    assert len(wecom_mock.wait_for_messages(1, timeout=10)) == 1
    gettokens = [r for r in wecom_mock.requests if r.path == "/cgi-bin/gettoken"]
    assert len(gettokens) == 2  # the first token, then a fresh one after 42001
    assert degraded_lines(service) == []


def health_in(service, state: str) -> dict[str, object]:
    """The status's notifications part once it is in `state`; a wait that times out shows the last one."""
    health: dict[str, object] = service.status()["notifications"]
    assert health["state"] == state, f"notifications {health}"
    return health


@pytest.mark.parametrize("mode", ["webhook", "app"])
def test_restored_channel_recovers_with_nothing_pending(mode, agent_pane, orchestrator_service, wecom_mock) -> None:
    """Issue 18 hole 6: recovery must not wait for a delivery. With the outbox empty, no message
    goes out when the channel comes back, so only the notifier's own check can end the episode;
    a notifier that recovers on delivery alone stays degraded (status and gauge) until the next alert."""
    service = orchestrator_service([agent_pane("weather/bot")], settings=FAST_NOTIFY, start=False)
    write_env(service, wecom_mock.env(mode))  # in the env file from the start: its removal is the only episode
    service.start()
    wait_until(lambda: mode in str(health_in(service, "ok")["channels"]), timeout=10, message=f"{mode} configured")

    write_env(service, {})  # removed, no restart, and no alert raised meanwhile
    assert service.metrics.wait_until_value("orchestrator_notifications_degraded", 1.0) == 1.0
    health = service.status()["notifications"]
    assert health["state"] == "degraded" and "WECOM_WEBHOOK" in health["reason"] and health["pending"] == 0

    write_env(service, wecom_mock.env(mode))  # restored, still nothing pending
    recovered = wait_until(lambda: health_in(service, "ok"), timeout=10, message="status back to ok, outbox empty")
    assert recovered["pending"] == 0 and mode in str(recovered["channels"])
    assert service.metrics.wait_until_value("orchestrator_notifications_degraded", 0.0, timeout=10) == 0.0
    assert service.metrics.value("orchestrator_notifications_pending") == 0.0
    assert wecom_mock.messages() == []  # nothing was delivered: the recovery came from the channel alone
    [event] = service.audit_events(event="notifications_recovered")
    assert mode in event["detail"]
    assert len(degraded_lines(service)) == 1
