"""What the benchmarks in this folder share: statistics and the summary of one method's
latencies, the set-up and teardown of a run (temporary folders, tmux servers, the orchestrator
service, the signal set-up that makes cleanup run) and the conditions a run states (load, the
settings `tmux-agent init` writes).

The benchmarks import it as ``common`` (this folder is on ``sys.path`` when one runs as a script);
the verdicts and tables are in ``reporting``, CPU from /proc in ``procstat``, the other tools'
ways of watching tmux in ``tmux_peers``.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, TypeVar

import tomllib

from orchestrator.cli.starter import ORCHESTRATOR_TOML
from orchestrator.state.port import Store
from pytest_tmuxagent.service import OrchestratorService, merge_settings
from pytest_tmuxagent.tmux_server import AgentPane, TmuxTestServer

S = TypeVar("S", bound="Stats")


# statistics ---------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(kw_only=True)
class Stats:
    """Count, percentiles, extremes and mean of a set of samples (ms); NaN where there are none."""

    n: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    min_ms: float
    mean_ms: float

    @classmethod
    def of(cls: type[S], samples: list[float], **fields: Any) -> S:
        """The statistics of `samples`; `fields` are the rest of a subclass's fields."""
        return cls(
            n=len(samples),
            p50_ms=percentile(samples, 50),
            p95_ms=percentile(samples, 95),
            max_ms=max(samples) if samples else math.nan,
            min_ms=min(samples) if samples else math.nan,
            mean_ms=sum(samples) / len(samples) if samples else math.nan,
            **fields,
        )


@dataclass(kw_only=True)
class Summary(Stats):
    """One method's latencies for one subject: a subclass adds the field named by `SUBJECT`
    (a pane count, an agent) and says how notes name it (`label`)."""

    SUBJECT: ClassVar[str]

    method: str
    expected: int
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def subject(self) -> Any:
        return getattr(self, self.SUBJECT)

    @property
    def label(self) -> str:
        return str(self.subject)

    def record(self) -> dict[str, Any]:
        """The fields as the JSON output shows them: subject and method first, notes and extra last."""
        data = asdict(self)
        head = {self.SUBJECT: data.pop(self.SUBJECT), "method": data.pop("method")}
        tail = {"notes": data.pop("notes"), "extra": data.pop("extra")}
        return {**head, **data, **tail}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# set-up and teardown ------------------------------------------------------------------------
def temp_dir(stack: ExitStack, prefix: str) -> Path:
    """A fresh temp directory, removed when `stack` closes."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    stack.callback(shutil.rmtree, tmp, True)
    return tmp


def tmux_server(stack: ExitStack, prefix: str, root: Path) -> TmuxTestServer:
    """An isolated tmux server with its own socket name `prefix...`, killed when `stack` closes."""
    tmux = TmuxTestServer(socket_name=f"{prefix}{uuid.uuid4().hex[:10]}", root=root)
    stack.callback(tmux.kill)
    return tmux


def capture(tmux_bin: str, tmux: TmuxTestServer, pane: AgentPane) -> list[str]:
    """`tmux capture-pane -p -J`: the pane's screen, wrapped lines joined."""
    return capture_id(tmux, pane.pane_id, tmux_bin)


def capture_id(tmux: TmuxTestServer, pane_id: str, tmux_bin: str | None = None) -> list[str]:
    """The same for a pane id, in a forked `tmux` as a poller does it."""
    out = subprocess.run(
        [tmux_bin or shutil.which("tmux") or "tmux", "-L", tmux.socket_name, "capture-pane", "-p", "-J", "-t", pane_id],
        capture_output=True,
        text=True,
    )
    return out.stdout.splitlines()


def start_service(service: OrchestratorService, stack: ExitStack) -> Store:
    """Start `service` (stopped when `stack` closes) and open its state DB (SQLite or PostgreSQL)."""
    stack.callback(service.stop)
    service.start()
    store = service.store()
    stack.callback(store.close)
    return store


def stop_notes(service: OrchestratorService) -> list[str]:
    """Stop `service`; a note if it did not exit cleanly."""
    code = service.stop()
    return [f"service exited {code}"] if code not in (0, None) else []


def log_notes(service: OrchestratorService, ignore: tuple[str, ...] = ()) -> list[str]:
    """A note if the service log has warning/error lines (other than those containing `ignore`)."""
    suspicious = [
        line
        for line in service.log_text().splitlines()
        if any(word in line for word in ("WARNING", "ERROR", "Traceback")) and not any(i in line for i in ignore)
    ]
    if not suspicious:
        return []
    return [f"{len(suspicious)} warning/error lines in service log, first: {suspicious[0][:200]}"]


def count_status(statuses: dict[str, int], status: str) -> None:
    statuses[status] = statuses.get(status, 0) + 1


def status_notes(statuses: dict[str, int]) -> list[str]:
    return [f"statuses: {statuses}"] if set(statuses) != {"succeeded"} else []


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every ExitStack, so cleanup runs


def exit_on_signals() -> None:
    """SIGTERM and SIGINT become exceptions, so every ExitStack unwinds and cleanup runs."""
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)


# the conditions of a run --------------------------------------------------------------------
def load_line() -> str:
    """The machine's load as the bench saw it (`os.getloadavg()`), printed beside the figures."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) on {os.cpu_count()} cores"


def init_settings() -> dict[str, Any]:
    """The orchestrator.toml `tmux-agent init` writes, with only what a benchmark must not touch
    changed: any free metrics port, and the AI backend `off` (no real codex is ever reached).
    Decision assist and the poll interval stay as a user gets them."""
    return merge_settings(tomllib.loads(ORCHESTRATOR_TOML), {"metrics_port": 0, "ai": {"backend": "off"}})
