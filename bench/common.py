"""What the benchmarks in this folder share: statistics, the summary of one method's latencies,
the verdicts and the report (table or JSON), the orchestrator service's start and stop, and the
signal set-up that makes cleanup run.

The benchmarks import it as ``common`` (this folder is on ``sys.path`` when one runs as a script).
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, TypeVar

from orchestrator.state.store import StateStore
from pytest_tmuxagent.service import OrchestratorService
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
    out = subprocess.run(
        [tmux_bin, "-L", tmux.socket_name, "capture-pane", "-p", "-J", "-t", pane.pane_id],
        capture_output=True,
        text=True,
    )
    return out.stdout.splitlines()


def start_service(service: OrchestratorService, stack: ExitStack) -> StateStore:
    """Start `service` (stopped when `stack` closes) and open its state DB."""
    stack.callback(service.stop)
    service.start()
    store = StateStore(service.state_db)
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


# verdicts and reporting ---------------------------------------------------------------------
Results = dict[Any, list[Summary]]  # subject -> [orchestrator, baseline]


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) and not math.isnan(b) else math.nan


def ratios(ours: Summary, base: Summary) -> dict[str, float]:
    """baseline / orchestrator, at p50 and p95."""
    return {"p50": ratio(base.p50_ms, ours.p50_ms), "p95": ratio(base.p95_ms, ours.p95_ms)}


def p95_verdict(key: str, ours: Summary, limit: float) -> dict[str, Any]:
    return {
        key: ours.subject,
        "target": f"orchestrator p95 <= {limit:g} ms",
        "value": round(ours.p95_ms, 2),
        "met": ours.p95_ms <= limit and ours.n == ours.expected,
    }


def ratio_verdicts(key: str, ours: Summary, base: Summary, baseline: str, target: float) -> list[dict[str, Any]]:
    return [
        {
            key: ours.subject,
            "target": f"{baseline}_{label} / orchestrator_{label} >= {target:g}x",
            "value": round(value, 1),
            "met": value >= target,
        }
        for label, value in ratios(ours, base).items()
    ]


def print_header(subject: str, n_width: int) -> None:
    header = f"{subject}  {'method':<34} {'n':>{n_width}}  {'p50 ms':>8}  {'p95 ms':>8}  {'max ms':>8}"
    print(header)
    print("-" * len(header))


def print_rows(
    results: Results, subject_spec: str, n_width: int, baseline: str, after: Callable[[Summary], str] = lambda _: ""
) -> None:
    """Each subject's two rows, then its ratio line, which ends with `after(orchestrator summary)`."""
    indent = format("", subject_spec)
    for ours, base in results.values():
        for s in (ours, base):
            n = f"{s.n}" if s.n == s.expected else f"{s.n}/{s.expected}"
            print(
                f"{s.subject:{subject_spec}}  {s.method:<34} {n:>{n_width}}  "
                f"{s.p50_ms:>8.1f}  {s.p95_ms:>8.1f}  {s.max_ms:>8.1f}"
            )
        r = ratios(ours, base)
        print(f"{indent}  ratio {baseline}/orchestrator: p50 {r['p50']:.1f}x, p95 {r['p95']:.1f}x{after(ours)}")


def print_targets(verdicts: list[dict[str, Any]], subject: Callable[[dict[str, Any]], str], width: int) -> None:
    print()
    print("targets:")
    for v in verdicts:
        print(f"  {subject(v)} {v['target']:<{width}} {v['value']:>8}  {'met' if v['met'] else 'NOT MET'}")


def print_notes(results: Results) -> None:
    notes = [(s.label, s.method, note) for summaries in results.values() for s in summaries for note in s.notes]
    if notes:
        print()
        print("notes:")
        for label, method, note in notes:
            print(f"  [{label}, {method}] {note}")


def finite(value: Any) -> Any:
    """NaN/inf (an empty sample set) become null, so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def report(
    as_json: bool,
    started: float,
    settings: dict[str, Any],
    results: Results,
    verdicts: list[dict[str, Any]],
    table: Callable[[], None],
    after: dict[str, Any] | None = None,
) -> None:
    """Print the table and the time since `started` (monotonic), or else strict JSON: the elapsed
    time, `settings`, every summary, the ratios, the verdicts and `after`, in that order."""
    elapsed = time.monotonic() - started
    if not as_json:
        table()
        print(f"\n(elapsed {elapsed:.1f}s)")
        return
    data = {
        "elapsed_s": round(elapsed, 1),
        **settings,
        "results": [s.record() for summaries in results.values() for s in summaries],
        "ratios": {str(subject): ratios(ours, base) for subject, (ours, base) in results.items()},
        "targets": verdicts,
        **(after or {}),
    }
    print(json.dumps(finite(data), indent=2))
