"""Fixtures for the observability side: a real Prometheus server, the real
dashboard process, and a headless Chromium page. Loaded by the tmuxagent plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .dashboard import DashboardProcess, launch_chromium
from .prometheus import PrometheusServer

SCREENSHOT_DIR = Path("reports") / "dashboard"


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """Factory: `prometheus_server(base_config, {"job": ["127.0.0.1:port"]})` starts a real Prometheus."""
    started: list[PrometheusServer] = []

    def factory(base_config: Path, targets: dict[str, list[str]], **kwargs: Any) -> PrometheusServer:
        server = PrometheusServer(
            root=tmp_path / f"prometheus{len(started)}", base_config=Path(base_config), targets=targets, **kwargs
        )
        started.append(server)
        try:
            return server.start()
        except RuntimeError as exc:
            pytest.fail(str(exc))

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def dashboard_server(tmp_path: Path) -> Iterator[Callable[..., DashboardProcess]]:
    """Factory: `dashboard_server(db, audit_log, token=None)` runs `tmux-agent dashboard` on a free port."""
    started: list[DashboardProcess] = []

    def factory(db: Path, audit_log: Path, **kwargs: Any) -> DashboardProcess:
        process = DashboardProcess(
            root=tmp_path / f"dashboard{len(started)}", db=Path(db), audit_log=Path(audit_log), **kwargs
        )
        started.append(process)
        return process.start()

    yield factory
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def chromium_browser() -> Iterator[Any]:
    """One headless Debian Chromium per test worker."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        try:
            browser = launch_chromium(playwright)
        except RuntimeError as exc:
            pytest.fail(str(exc))
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium_browser: Any) -> Iterator[Any]:
    """A fresh page (own context, no shared cookies); page errors are collected on `page.errors`."""
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def dashboard_page(dashboard_server: Callable[..., DashboardProcess], browser_page: Any) -> Callable[[Any], Any]:
    """Factory: `dashboard_page(service)` serves an orchestrator service's DB and audit log and
    opens the page once it is live; `window.__sameDocument` is true until the page reloads."""

    def open_page(service: Any) -> Any:
        browser_page.goto(dashboard_server(service.state_db, service.audit_log).url)
        browser_page.locator("#live.ok").wait_for()
        browser_page.evaluate("window.__sameDocument = true")
        return browser_page

    return open_page


@pytest.fixture
def save_screenshot(request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    """`save_screenshot(page, "name")` writes reports/dashboard/<name>.png and prints its path."""

    def save(page: Any, name: str) -> Path:
        path = (request.config.rootpath / SCREENSHOT_DIR / f"{name}.png").resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        print(f"dashboard screenshot: {path}")
        request.node.user_properties.append(("dashboard_screenshot", str(path)))
        return path

    return save
