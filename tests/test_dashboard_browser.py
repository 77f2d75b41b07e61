"""The dashboard in a real browser (headless Debian Chromium via Playwright): it
updates live when the state DB changes, without a reload, and renders hostile
values as text. Each test saves a screenshot under reports/dashboard/."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from orchestrator.state.audit import AuditLog
from orchestrator.state.store import StateStore
from tests.test_dashboard_api import BOT, NEXT_ACTIONS, PLAN, finish

PANEL = f'[data-session="{BOT}"]'


@pytest.fixture
def seeded(tmp_path: Path):
    store = StateStore(tmp_path / "state.db")
    store.ensure_session(BOT, "weather:bot")
    audit = AuditLog(tmp_path / "logs" / "orchestrator-actions.jsonl")
    yield store, audit
    store.close()


def test_row_and_card_update_live_without_reload(
    seeded, tmuxagent_dashboard_server, tmuxagent_browser_page, tmuxagent_save_screenshot
) -> None:
    store, audit = seeded
    finish(store, BOT, "make build", 0, "built")
    store.update_metadata(BOT, {"next_actions": NEXT_ACTIONS, "task_decomposition": PLAN})
    page = tmuxagent_browser_page
    dashboard = tmuxagent_dashboard_server(store.path, audit.path)
    page.goto(dashboard.url)
    panel = page.locator(PANEL)
    expect(panel.locator(".last-status")).to_have_text("succeeded")
    expect(panel.locator(".rec-title")).to_have_text(["Set the key"])
    expect(panel.locator(".plan-count")).to_have_text("1/3 done")
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("window.__sameDocument = 'yes'")
    updates = int(page.evaluate("document.body.dataset.updates"))

    command_id = finish(store, BOT, "make test", 3, "FAILED test_weather.py::test_reply")
    store.update_metadata(
        BOT,
        {
            "failure_streak": 1,
            "next_actions": {
                **NEXT_ACTIONS,
                "recommendations": [
                    {
                        "title": "Fix the failing test",
                        "detail": "test_reply expects °C",
                        "command": "pytest -k test_reply",
                        "priority": "high",
                        "risk": "low",
                    }
                ],
            },
            "task_decomposition": {
                **PLAN,
                "steps": [{**s, "status": "done"} for s in PLAN["steps"][:2]] + PLAN["steps"][2:],
            },
        },
    )
    audit.record(
        "command_result",
        BOT,
        command_id=command_id,
        command="make test",
        status="failed",
        exit_code=3,
        duration_s=1.0,
        output_tail="FAILED",
    )

    expect(panel.locator(".last-status")).to_have_text("failed")
    expect(panel.locator(".last-exit")).to_have_text("exit 3")
    expect(panel.locator(".last-command")).to_have_text("make test")
    expect(panel.locator(".rec-title")).to_have_text(["Fix the failing test"])
    expect(panel.locator(".rec-command")).to_have_text(["pytest -k test_reply"])
    expect(panel.locator(".streak")).to_have_text("failure streak 1")
    expect(panel.locator(".plan-count")).to_have_text("2/3 done")
    expect(page.locator("#events tbody tr").first).to_contain_text("command_result")
    assert page.evaluate("window.__sameDocument") == "yes"  # updated in place, never reloaded
    assert int(page.evaluate("document.body.dataset.updates")) > updates
    assert page.errors == []
    tmuxagent_save_screenshot(page, "live-update")
    assert dashboard.stop() == 0  # SIGTERM ends it cleanly, even with the live stream open


HOSTILE = {
    "command": "echo <script>window.__xss = 1</script>",
    "tail": '<img src=x onerror="window.__xss = 2"></pre><b>not bold</b>',
    "title": "<img src=x onerror=window.__xss=3>",
    "detail": "</article><script>window.__xss = 4</script>",
    "step": "<b>step</b> & <i>more</i>",
    "blocker": '"><svg onload=window.__xss=5>',
}


def test_hostile_values_render_as_text(
    seeded, tmuxagent_dashboard_server, tmuxagent_browser_page, tmuxagent_save_screenshot
) -> None:
    store, audit = seeded
    finish(store, BOT, HOSTILE["command"], 1, HOSTILE["tail"])
    store.update_metadata(
        BOT,
        {
            "blockers": [HOSTILE["blocker"]],
            "next_actions": {
                "source": "<i>codex</i>",
                "blockers": [HOSTILE["blocker"]],
                "recommendations": [
                    {
                        "title": HOSTILE["title"],
                        "detail": HOSTILE["detail"],
                        "command": HOSTILE["command"],
                        "priority": 'high" onmouseover="x',
                        "risk": "<b>low</b>",
                    }
                ],
            },
            "task_decomposition": {
                "source": "plan",
                "steps": [{"id": "1", "title": HOSTILE["step"], "status": "<s>done</s>"}],
            },
        },
    )
    audit.record("metadata_set", BOT, detail=HOSTILE["detail"])
    page = tmuxagent_browser_page
    page.goto(tmuxagent_dashboard_server(store.path, audit.path).url)
    panel = page.locator(PANEL)
    expect(panel.locator(".last-command")).to_have_text(HOSTILE["command"])
    expect(panel.locator(".rec-title")).to_have_text([HOSTILE["title"]])
    expect(panel.locator(".rec-detail")).to_have_text([HOSTILE["detail"]])
    expect(panel.locator(".step-title")).to_have_text([HOSTILE["step"]])
    expect(page.locator("#events tbody tr").first).to_contain_text(HOSTILE["detail"])
    panel.locator("details summary").first.click()
    expect(panel.locator(".last-output")).to_have_text(HOSTILE["tail"])

    assert page.evaluate("typeof window.__xss") == "undefined"
    injected = "main img, main script, main svg, main b, main i, main s, #events img, #events script"
    assert page.locator(injected).count() == 0
    assert panel.locator(".rec-card").get_attribute("data-priority") == "highonmouseoverx"
    assert page.errors == []
    tmuxagent_save_screenshot(page, "escaping")
