"""The real dashboard for tests: `tmux-agent dashboard` as a subprocess on a free
port, over a state DB and audit log; and a headless Debian Chromium to look at it.

Playwright drives the system Chromium (`/usr/bin/chromium`, Debian's `chromium`
package) through `executable_path`; no browser is downloaded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .process import LoggedProcess
from .service import cli_path
from .waiting import wait_until

CHROMIUM = os.environ.get("TMUXAGENT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
URL_LINE = re.compile(r"serving (http://\S+/)")


@dataclass
class DashboardProcess(LoggedProcess):
    root: Path
    db: Path
    audit_log: Path
    token: str | None = None
    extra_args: list[str] = field(default_factory=list)
    dsn: str | None = None  # a fleet's PostgreSQL database, shown instead of `db`
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    log_name: str = "dashboard.log"

    def start(self) -> DashboardProcess:
        argv = [
            cli_path("tmux-agent"),
            "dashboard",
            *(["--dsn", self.dsn] if self.dsn else ["--db", str(self.db)]),
            "--audit-log",
            str(self.audit_log),
            "--port",
            "0",
            "--interval",
            "0.2",
            *self.extra_args,
        ]
        if self.token:
            argv += ["--token", self.token]
        self.spawn(argv)
        self.url = wait_until(self._url, timeout=15, message="the dashboard's URL line")
        return self

    def _url(self) -> str | None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"dashboard exited {self.process.returncode}: {self.log_text()[-2000:]}")
        found = URL_LINE.search(self.log_text())
        return found.group(1) if found else None

    @property
    def hostport(self) -> str:
        return self.url.split("//", 1)[1].rstrip("/")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.url + path.lstrip("/"), headers)

    def json(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        code, _, body = self.get(path, headers)
        assert code == 200, (path, code, body[:500])
        return json.loads(body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET without following redirects: (status, headers, body), also for 4xx/5xx answers."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def launch_chromium(playwright: Any) -> Any:
    """Headless Debian Chromium through Playwright; fails with the fix when it is missing."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's `chromium` package (.ci/run does)")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


class DashboardServerFactory(Protocol):
    """`tmuxagent_dashboard_server(db, audit_log, token=None, dsn=None)`: `tmux-agent dashboard` on a
    free port (`dsn`: a fleet's PostgreSQL database instead of the `db` file)."""

    def __call__(
        self,
        db: str | os.PathLike[str],
        audit_log: str | os.PathLike[str],
        *,
        token: str | None = None,
        extra_args: Sequence[str] = (),
        dsn: str | None = None,
    ) -> DashboardProcess: ...
