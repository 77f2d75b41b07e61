"""What the benchmarks in this folder share: statistics, the summary of one method's latencies,
the verdicts and the report (table or JSON), the orchestrator service's start and stop, and the
signal set-up that makes cleanup run.

The benchmarks import it as ``common`` (this folder is on ``sys.path`` when one runs as a script).
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, TypeVar

import tomllib

from orchestrator.adapters.tmux_control import ControlConnection, ControlEvent, OutputEvent, decode_output
from orchestrator.cli.starter import ORCHESTRATOR_TOML
from orchestrator.config import TmuxConfig
from orchestrator.state.store import StateStore
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


def print_notes(results: Mapping[Any, Sequence[Summary]]) -> None:
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


# CPU from /proc -----------------------------------------------------------------------------
TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces): field 3 (state) first."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def own_ticks(pid: int) -> int:
    """utime + stime of `pid` alone (0 once it is gone)."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


def descendants(root: int) -> list[int]:
    """Every live process below `root`, from the parent links in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def tree_ticks(root: int) -> int:
    """CPU ticks of `root` and everything below it: utime + stime + cutime + cstime of each live
    process of the tree. A child that exits moves its whole total into its parent's cutime/cstime
    when it is reaped, so the sum only grows; its difference over a window is the tree's CPU."""
    total = 0
    for pid in (root, *descendants(root)):
        fields = _stat_fields(pid)
        if fields:
            total += sum(int(f) for f in fields[11:15])
    return total


def thread_count(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
        return next((int(line.split()[1]) for line in fh if line.startswith("Threads:")), 0)


def percent_of_core(ticks: int, seconds: float) -> float:
    return 100.0 * ticks / TICK / seconds if seconds > 0 else math.nan


def server_pid(tmux: TmuxTestServer) -> int:
    out = tmux.server.cmd("display-message", "-p", "#{pid}")
    return int(out.stdout[0].strip())


# the peers: what other tools do, measured on the same server ------------------------------
def tmux_fork(tmux: TmuxTestServer, *args: str) -> None:
    """One `tmux` process per call: what pollers and naive loops do for every command."""
    subprocess.run([shutil.which("tmux") or "tmux", "-L", tmux.socket_name, *args], capture_output=True, check=True)


def type_forked(tmux: TmuxTestServer, pane: str, line: str) -> None:
    """Type `line` and Enter in one forked `tmux` (two commands joined by `;`)."""
    tmux_fork(tmux, "send-keys", "-t", pane, "-l", "--", line, ";", "send-keys", "-t", pane, "Enter")


def stamped(tag: str, body: str) -> str:
    """`body` between two stamps of the shell's own clock (bash's `$EPOCHREALTIME`, a builtin, so
    no fork moves them): `TAG:S <start>` before it and `TAG:D <end>` right after it exits."""
    return f'echo "{tag}:S $EPOCHREALTIME"; {body}; echo "{tag}:D $EPOCHREALTIME"'


def stamp(text: str, tag: str, which: str) -> float | None:
    """The `TAG:S` / `TAG:D` stamp printed in `text` (a screen or raw pane output), else None.
    The typed command line echoes `"TAG:D $EPOCHREALTIME"` after a quote, so only the printed
    form, at the start of a line, matches."""
    m = re.search(rf"(?:^|[\r\n]){re.escape(tag)}:{which} (\d+\.\d+)(?=[\r\n])", text)
    return float(m.group(1)) if m else None


@dataclass(frozen=True)
class Chunk:
    """Pane text as a peer sees it: a stream's next bytes, or (`whole`) a fresh capture of the screen."""

    pane: str
    text: str
    at: float  # time.time() when the peer had it
    whole: bool = False


class ControlStream:
    """A control-mode client (`tmux -C`, the product's own ControlConnection) attached to one
    session: its panes' `%output` arrives as chunks, keys go in as lines on the same stream."""

    def __init__(self, tmux: TmuxTestServer, session: str) -> None:
        self.conn = ControlConnection(TmuxConfig(socket_name=tmux.socket_name), session=session)
        self.chunks: queue.Queue[Chunk] = queue.Queue()
        self.conn.subscribe(self._event)
        self.conn.connect()

    def _event(self, event: ControlEvent) -> None:
        if isinstance(event, OutputEvent):
            self.chunks.put(Chunk(event.pane, decode_output(event.data).decode("utf-8", "replace"), time.time()))

    def type(self, pane: str, line: str) -> None:
        self.conn.send_literal(pane, line, enter=True)

    def close(self) -> None:
        self.conn.close()


class PipePaneReader:
    """`tmux pipe-pane` of each pane into its own FIFO, all read by one thread with a selector:
    the panes' output arrives as chunks, with no process of ours per read."""

    def __init__(self, tmux: TmuxTestServer, panes: list[str], folder: Path) -> None:
        self.tmux, self.panes = tmux, panes
        self.chunks: queue.Queue[Chunk] = queue.Queue()
        self._selector = selectors.DefaultSelector()
        self._fds: list[int] = []
        self._closing = threading.Event()
        for i, pane in enumerate(panes):
            fifo = folder / f"pane-{i}.fifo"
            os.mkfifo(fifo)
            read = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            self._fds += [read, os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)]  # a writer of ours: never EOF
            self._selector.register(read, selectors.EVENT_READ, pane)
            tmux_fork(tmux, "pipe-pane", "-t", pane, f"cat >> {shlex.quote(str(fifo))}")
        self._thread = threading.Thread(target=self._read, daemon=True, name="pipe-pane-reader")
        self._thread.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                data = os.read(key.fd, 65536)
                self.chunks.put(Chunk(key.data, data.decode("utf-8", "replace"), time.time()))

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=2)
        for pane in self.panes:
            subprocess.run([shutil.which("tmux") or "tmux", "-L", self.tmux.socket_name, "pipe-pane", "-t", pane])
        self._selector.close()
        for fd in self._fds:
            os.close(fd)


def drain(chunks: queue.Queue[Chunk], timeout: float) -> list[Chunk]:
    """The chunks that arrived, waiting up to `timeout` for the first."""
    try:
        got = [chunks.get(timeout=max(0.0, timeout))]
    except queue.Empty:
        return []
    while True:
        try:
            got.append(chunks.get_nowait())
        except queue.Empty:
            return got


# comparison tables: the product beside its peers ----------------------------------------------
def times(value: float, reference: float) -> str:
    r = ratio(value, reference)
    if math.isnan(r):
        return "-"
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x"


def print_comparison(rows: Sequence[Summary], subject_spec: str, n_width: int = 5) -> None:
    """One subject's rows (the product first), each with its p50 / p95 as a multiple of the
    product's (above 1: the product is faster)."""
    ours = rows[0]
    for s in rows:
        n = f"{s.n}" if s.n == s.expected else f"{s.n}/{s.expected}"
        print(
            f"{s.subject:{subject_spec}}  {s.method:<34} {n:>{n_width}}  {s.p50_ms:>8.2f}  {s.p95_ms:>8.2f}  "
            f"{s.max_ms:>8.1f}  {times(s.p50_ms, ours.p50_ms):>7}  {times(s.p95_ms, ours.p95_ms):>7}"
        )


def comparison_header(subject: str, n_width: int = 5) -> None:
    header = (
        f"{subject}  {'method':<34} {'n':>{n_width}}  {'p50 ms':>8}  {'p95 ms':>8}  {'max ms':>8}"
        f"  {'p50 /us':>7}  {'p95 /us':>7}"
    )
    print(header)
    print("-" * len(header))


def best(rows: Sequence[Summary]) -> Summary:
    """The fastest peer (lowest p95; the product, rows[0], is not a peer)."""
    return min(rows[1:], key=lambda s: s.p95_ms if not math.isnan(s.p95_ms) else math.inf)


def report_many(
    as_json: bool,
    started: float,
    settings: dict[str, Any],
    results: Mapping[Any, Sequence[Summary]],
    verdicts: list[dict[str, Any]],
    table: Callable[[], None],
) -> None:
    """`report` for tables of more than two methods: the table and the elapsed time, or strict
    JSON with every summary (`results`' keys, tuples spelled out, as `case`), and the verdicts."""
    elapsed = time.monotonic() - started
    if not as_json:
        table()
        print(f"(elapsed {elapsed:.1f}s)")
        return
    cases = [
        {"case": list(key) if isinstance(key, tuple) else key, **s.record()}
        for key, rows in results.items()
        for s in rows
    ]
    print(
        json.dumps(
            finite({"elapsed_s": round(elapsed, 1), **settings, "results": cases, "targets": verdicts}), indent=2
        )
    )
