"""Scenario C, the dashboard part (Dashboard 推荐卡片需更新): when a session's
`next_actions` changes in the state DB (here written with `tmux-agent meta set`, as any
producer may), its recommendation cards update on the open page without a reload."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.scenario_c

SESSION = "weather/bot"
BLOCKER = "weather API calls fail with 401 Unauthorized: OPENAI_API_KEY is missing"


def advice(*titles: str) -> dict:
    return {
        "generated_at": "2026-11-01T08:00:00Z",
        "source": "rules",
        "blockers": [BLOCKER],
        "recommendations": [
            {"title": t, "detail": f"why: {t}", "command": f"echo {i}", "priority": "high", "risk": "low"}
            for i, t in enumerate(titles)
        ],
    }


def test_recommendation_cards_follow_next_actions(
    agent_pane, orchestrator_service, tmuxagent_dashboard_page, tmuxagent_save_screenshot
) -> None:
    service = orchestrator_service([agent_pane(SESSION)])
    page = tmuxagent_dashboard_page(service)
    cards = page.locator(f'[data-session="{SESSION}"] .rec-card')
    expect(page.locator(f'[data-session="{SESSION}"]')).to_be_visible()
    expect(cards).to_have_count(0)

    service.cli("meta", "set", SESSION, "next_actions", json.dumps(advice("Add OPENAI_API_KEY to ~/.env")))
    expect(cards.locator(".rec-title")).to_have_text(["Add OPENAI_API_KEY to ~/.env"])
    expect(page.locator(".rec-blockers li")).to_have_text([BLOCKER])

    service.cli(
        "meta",
        "set",
        SESSION,
        "next_actions",
        json.dumps(advice("Confirm the key is visible to the bot", "Restart the bot")),
    )
    expect(cards.locator(".rec-title")).to_have_text(["Confirm the key is visible to the bot", "Restart the bot"])
    expect(cards.first.locator(".rec-command")).to_have_text("echo 0")
    assert page.evaluate("window.__sameDocument") is True
    assert page.errors == []
    tmuxagent_save_screenshot(page, "scenario-c-cards")
