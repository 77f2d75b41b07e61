"""Scenario A, the dashboard part (Dashboard 反馈): with the real orchestrator and the
real dashboard running, each command's result appears in the session's row of an
open page, in place, as the pane's shell reports it."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.scenario_a

SESSION = "weather/bot"


def test_results_appear_on_the_open_dashboard(
    agent_pane, orchestrator_service, tmuxagent_dashboard_page, tmuxagent_save_screenshot
) -> None:
    service = orchestrator_service([agent_pane(SESSION)])
    page = tmuxagent_dashboard_page(service)
    row = page.locator(f'[data-session="{SESSION}"]')
    expect(row.locator(".last-none")).to_be_visible()

    ok = service.wait_result(service.send(SESSION, "echo 天气 ok"))
    expect(row.locator(".last-status")).to_have_text("succeeded")
    expect(row.locator(".last-command")).to_have_text("echo 天气 ok")
    expect(row.locator(".last-line")).to_contain_text(f"#{ok.id}")

    bad = service.wait_result(service.send(SESSION, "echo failing; (exit 5)"))
    expect(row.locator(".last-status")).to_have_text("failed")
    expect(row.locator(".last-exit")).to_have_text("exit 5")
    expect(row.locator(".streak")).to_have_text("failure streak 1")
    expect(row.locator(".last-line")).to_contain_text(f"#{bad.id}")
    expect(page.locator("#totals")).to_contain_text("failure 50.0%")
    assert page.evaluate("window.__sameDocument") is True
    assert page.errors == []
    tmuxagent_save_screenshot(page, "scenario-a-feedback")
