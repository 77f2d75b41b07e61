"""Fixtures for the observability side: a real Prometheus server, the real
dashboard process, and a headless Chromium page. Loaded by the tmuxagent plugin.

All of them carry the `tmuxagent_` prefix so they cannot clash with a project's own
`browser_page` or `prometheus_server` (or with another plugin's).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from . import options
from .dashboard import CHROMIUM, DashboardProcess, DashboardServerFactory, launch_chromium
from .evidence import Evidence
from .prometheus import PrometheusServer, PrometheusServerFactory
from .service import OrchestratorService

__all__ = [
    "SCREENSHOT_DIR",
    "skip_without",
    "DashboardServerFactory",
    "PrometheusServerFactory",
    "tmuxagent_browser_page",
    "tmuxagent_chromium_browser",
    "tmuxagent_dashboard_page",
    "tmuxagent_dashboard_server",
    "tmuxagent_prometheus_server",
    "tmuxagent_save_screenshot",
]

SCREENSHOT_DIR = Path("reports") / "dashboard"  # legacy name; screenshots go to options.artifacts_dir(config)

# optional tool -> what brings it (the one line a skip says)
PROVIDERS = {
    "prometheus": "Debian package `prometheus` (apt-get install prometheus)",
    "promtool": "Debian package `prometheus` (apt-get install prometheus)",
    "chromium": "Debian package `chromium` (apt-get install chromium)",
    "allure": "npm package `allure` (npm install -g allure@3)",
}


def skip_without(tool: str, present: bool | None = None) -> None:
    """Skip the test, in one line naming the package that brings `tool`, when it is missing
    (on PATH, or `present` says). The report counts such a scenario as not decided."""
    import shutil

    if present is None:
        present = shutil.which(tool) is not None
    if not present:
        pytest.skip(f"missing tool: {tool} — install the {PROVIDERS.get(tool, tool)}")


@pytest.fixture
def tmuxagent_prometheus_server(tmp_path: Path) -> Iterator[PrometheusServerFactory]:
    """Factory: `tmuxagent_prometheus_server(base_config, {"job": ["127.0.0.1:port"]})` starts a real Prometheus.
    Without Debian's `prometheus` on PATH the test skips (`missing tool: prometheus — …`)."""
    skip_without("prometheus")
    started: list[PrometheusServer] = []

    def factory(
        base_config: str | os.PathLike[str],
        targets: Mapping[str, Sequence[str]],
        *,
        scrape_interval: str = "500ms",
        evaluation_interval: str = "500ms",
    ) -> PrometheusServer:
        server = PrometheusServer(
            root=tmp_path / f"prometheus{len(started)}",
            base_config=Path(base_config),
            targets={job: list(hosts) for job, hosts in targets.items()},
            scrape_interval=scrape_interval,
            evaluation_interval=evaluation_interval,
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
def tmuxagent_dashboard_server(tmp_path: Path) -> Iterator[DashboardServerFactory]:
    """Factory: `tmuxagent_dashboard_server(db, audit_log, token=None, dsn=None)` runs `tmux-agent dashboard`
    on a free port (`dsn`: a fleet's PostgreSQL database instead of the `db` file)."""
    started: list[DashboardProcess] = []

    def factory(
        db: str | os.PathLike[str],
        audit_log: str | os.PathLike[str],
        *,
        token: str | None = None,
        extra_args: Sequence[str] = (),
        dsn: str | None = None,
    ) -> DashboardProcess:
        process = DashboardProcess(
            root=tmp_path / f"dashboard{len(started)}",
            db=Path(db),
            audit_log=Path(audit_log),
            token=token,
            extra_args=list(extra_args),
            dsn=dsn,
        )
        started.append(process)
        return process.start()

    yield factory
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def tmuxagent_chromium_browser() -> Iterator[Any]:
    """One headless Debian Chromium (a Playwright `Browser`) per test worker; the tests skip
    without it (`missing tool: chromium — …`)."""
    skip_without("chromium", Path(CHROMIUM).exists())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        try:
            browser = launch_chromium(playwright)
        except RuntimeError as exc:
            pytest.fail(str(exc))
        yield browser
        browser.close()


@pytest.fixture
def tmuxagent_browser_page(tmuxagent_chromium_browser: Any) -> Iterator[Any]:
    """A fresh Playwright `Page` (own context, no shared cookies); page errors are collected on `page.errors`."""
    context = tmuxagent_chromium_browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def tmuxagent_dashboard_page(
    tmuxagent_dashboard_server: DashboardServerFactory, tmuxagent_browser_page: Any
) -> Callable[[OrchestratorService], Any]:
    """Factory: `tmuxagent_dashboard_page(service)` serves an orchestrator service's DB and audit log and
    opens the page once it is live; `window.__sameDocument` is true until the page reloads."""

    def open_page(service: OrchestratorService) -> Any:
        tmuxagent_browser_page.goto(tmuxagent_dashboard_server(service.state_db, service.audit_log).url)
        tmuxagent_browser_page.locator("#live.ok").wait_for()
        tmuxagent_browser_page.evaluate("window.__sameDocument = true")
        return tmuxagent_browser_page

    return open_page


@pytest.fixture
def tmuxagent_save_screenshot(request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    """`tmuxagent_save_screenshot(page, "name")` writes `<name>.png` into the report's
    `<report stem>_files/dashboard/` folder, links it from the report (relative to it) and
    attaches it to Allure as an image."""

    def save(page: Any, name: str) -> Path:
        path = (options.artifacts_dir(request.config) / "dashboard" / f"{name}.png").resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        print(f"dashboard screenshot: {path}")
        Evidence(request.node).image(str(path), f"dashboard screenshot {name}")
        return path

    return save
