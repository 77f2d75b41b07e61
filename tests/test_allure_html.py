"""`tmux-agent validate --allure DIR` renders Allure Report 3 HTML that lists the
seven scenarios — checked in headless Chromium, as a person would see it."""

from __future__ import annotations

import functools
import http.server
import json
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
        package = "npm package `allure` (npm install -g allure@3)" if tool == "allure" else f"Debian package `{tool}`"
        pytest.skip(f"missing tool: {tool} — install the {package}")
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


def test_allure_results_carry_environment_categories_and_image_attachments(pytester: pytest.Pytester) -> None:
    png = (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4"
        b"\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
    )
    (pytester.path / "shot.png").write_bytes(png)
    pytester.makepyfile(
        test_playbook="""
import pytest

@pytest.mark.scenario_a
def test_a(tmuxagent_evidence):
    tmuxagent_evidence.image("shot.png", "dashboard screenshot")
    tmuxagent_evidence.decide("it worked")
"""
    )
    assert pytester.runpytest_subprocess("--alluredir", "allure-results", "--tmuxagent-report", "r.md").ret == 0
    results = pytester.path / "allure-results"
    props = (results / "environment.properties").read_text()
    assert "mode=embedded" in props and "commit=" in props
    names = [c["name"] for c in json.loads((results / "categories.json").read_text())]
    assert "Product failures" in names and "Skipped: optional tool missing" in names
    [result] = [json.loads(p.read_text()) for p in results.glob("*-result.json")]
    assert any(a["type"] == "image/png" for a in result["attachments"])
