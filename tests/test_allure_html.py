"""`tmux-agent validate --allure DIR` renders Allure Report 3 HTML that lists the
seven scenarios — checked in headless Chromium, as a person would see it."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from orchestrator.cli.validate import generate_allure_html
from pytest_tmuxagent.registry import BUILTIN_SCENARIOS

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def required(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"`{tool}` is not installed; .ci/run installs it (allure: npm -g allure; chromium: apt)")
    return path


def visible_text(url: str, profile: Path) -> str:
    dom = subprocess.run(
        [
            required("chromium"),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    ).stdout
    dom = re.sub(r"<(style|script)[^>]*>.*?</\1>", "", dom, flags=re.S)
    return re.sub(r"<[^>]+>", "\n", dom)


def test_allure_html_lists_the_seven_scenarios(pytester: pytest.Pytester, tmp_path: Path) -> None:
    required("allure")
    pytester.makepyfile(
        test_playbook="\n".join(
            ["import pytest"]
            + [f"@pytest.mark.{s.marker}\ndef test_{s.letter}():\n    pass\n" for s in BUILTIN_SCENARIOS]
        )
    )
    assert pytester.runpytest_subprocess("--alluredir", "allure-results").ret == 0

    html = generate_allure_html(pytester.path / "allure-results")
    assert html is not None and (html / "index.html").exists()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        text = visible_text(f"http://127.0.0.1:{server.server_port}/index.html", tmp_path / "profile")
    finally:
        server.shutdown()
        server.server_close()
    for scenario in BUILTIN_SCENARIOS:
        assert scenario.feature in text, text[:2000]
