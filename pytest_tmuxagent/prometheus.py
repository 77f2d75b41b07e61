"""A real Prometheus server for tests: Debian's `prometheus` binary on a free
loopback port with a temp data dir, scraping the targets a test names, with the
shipped alert rules and compressed scrape/evaluation intervals.

Its config is derived from the shipped `deploy/prometheus/prometheus.yml`: the same
jobs and rule files, only the targets and intervals changed, so a test proves
the file a user deploys works. Jobs a test gives no target are dropped.

Prometheus discovers targets about 5 s after it starts; start it early.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from .process import LoggedProcess
from .waiting import wait_until

START_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrometheusAPIError(AssertionError):
    pass


@dataclass
class PrometheusServer(LoggedProcess):
    root: Path
    base_config: Path
    targets: dict[str, list[str]]
    scrape_interval: str = "500ms"
    evaluation_interval: str = "500ms"
    binary: str = field(default_factory=lambda: shutil.which("prometheus") or "")
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    log_name: str = "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # config ------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        doc = yaml.safe_load(self.base_config.read_text(encoding="utf-8"))
        doc.setdefault("global", {}).update(
            scrape_interval=self.scrape_interval,
            scrape_timeout=self.scrape_interval,
            evaluation_interval=self.evaluation_interval,
        )
        doc["rule_files"] = [str((self.base_config.parent / f).resolve()) for f in doc.get("rule_files", [])]
        jobs = []
        for job in doc.get("scrape_configs", []):
            if job["job_name"] in self.targets:
                job["static_configs"] = [{"targets": list(self.targets[job["job_name"]])}]
                jobs.append(job)
        unknown = set(self.targets) - {j["job_name"] for j in jobs}
        if unknown:
            raise ValueError(f"{self.base_config} has no job(s) {sorted(unknown)}")
        doc["scrape_configs"] = jobs
        config: dict[str, Any] = doc
        return config

    # the process -----------------------------------------------------------------------------
    def start(self) -> PrometheusServer:
        if not self.binary:
            raise RuntimeError("prometheus is not installed: install Debian's `prometheus` package (.ci/run does)")
        self.root.mkdir(parents=True, exist_ok=True)
        config_file = self.root / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        for _attempt in range(START_ATTEMPTS):  # another process may take the free port first
            self.port = free_port()
            argv = [
                self.binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ]
            self.spawn(argv)
            try:
                wait_until(self._ready, timeout=20, interval=0.05, message="prometheus ready")
                return self
            except _Exited:
                if "address already in use" not in self.log_text():
                    break
        raise RuntimeError(f"prometheus did not start: {self.log_text()[-2000:]}")

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise _Exited()
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    # the HTTP API ---------------------------------------------------------------------------------
    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise PrometheusAPIError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector: [{metric: {...}, value: [ts, "v"]}]."""
        try:
            data = self.api("query", query=expr)
        except urllib.error.HTTPError as exc:  # 400 for a bad expression: say which
            raise PrometheusAPIError(f"query {expr!r}: {exc.read().decode(errors='replace')}") from None
        return data["result"] if data["resultType"] == "vector" else [{"metric": {}, "value": data["result"]}]

    def value(self, expr: str) -> float | None:
        """The one sample an expression yields (None when it yields none)."""
        result = self.query(expr)
        if len(result) > 1:
            raise PrometheusAPIError(f"{expr!r} yields {len(result)} series; aggregate it: {result}")
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expr: str, check: Callable[[float], bool] | float, timeout: float = 20) -> float:
        predicate = check if callable(check) else (lambda v: v == check)

        def attempt() -> tuple[float] | None:
            current = self.value(expr)
            return (current,) if current is not None and predicate(current) else None

        return wait_until(
            attempt,
            timeout=timeout,
            interval=0.1,
            message=f"PromQL {expr!r} to satisfy {getattr(check, '__name__', check)}",
        )[0]

    def alerts(self, state: str | None = None) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) from /api/v1/alerts, optionally one state only."""
        return [a for a in self.api("alerts")["alerts"] if state is None or a["state"] == state]

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups

    def wait_rules_evaluated_after(self, moment: float, timeout: float = 10) -> None:
        """Wait until every rule group has been evaluated after `moment` (Unix seconds)."""

        def evaluated() -> bool:
            groups = self.rule_groups()
            return bool(groups) and all(_rfc3339(g["lastEvaluation"]) > moment for g in groups)

        wait_until(evaluated, timeout=timeout, interval=0.1, message="a rule evaluation after the data")

    def wait_scraped(self, job: str, timeout: float = 30) -> None:
        """Wait until every target of `job` has been scraped successfully (up == 1)."""
        count = len(self.targets[job])
        self.wait_value(f'sum(up{{job="{job}"}})', float(count), timeout=timeout)


class _Exited(Exception):
    pass


def _rfc3339(text: str) -> float:
    """Prometheus's timestamps (RFC 3339 with up to nanoseconds, `Z` or an offset) as Unix seconds."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text).timestamp()


class PrometheusServerFactory(Protocol):
    """`tmuxagent_prometheus_server(base_config, {"job": ["127.0.0.1:port"]})`: a started Prometheus
    whose config is `base_config`'s jobs and rule files with these targets and intervals."""

    def __call__(
        self,
        base_config: str | os.PathLike[str],
        targets: Mapping[str, Sequence[str]],
        *,
        scrape_interval: str = "500ms",
        evaluation_interval: str = "500ms",
    ) -> PrometheusServer: ...
