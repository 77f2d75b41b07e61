"""The playbook's 回归测试 四.2: "导出 Prometheus/Grafana 10 分钟数据" — a mixed workload against a
running orchestrator scraped by a real Prometheus, then its range queries exported as CSV and
as one PNG of plots (matplotlib), for the report to link.

`run_workload` drives the sessions (successes, failures, bursts that queue, a stall, a failure
streak that blocks and is unblocked, a WeCom outage); `export` asks Prometheus's
`/api/v1/query_range` for each of `QUERIES` over the soak and writes the files.
"""

from __future__ import annotations

import csv
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = ["QUERIES", "SoakQuery", "Workload", "export", "parse_duration", "plot", "run_workload"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    """`20s`, `10m`, `1h`, `500ms` or plain seconds → seconds; ValueError with the accepted forms."""
    found = _DURATION.match(str(text))
    if not found:
        raise ValueError(f"bad duration {text!r}: use e.g. 20s, 10m or 1h")
    scale = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "h": 3600.0}[found.group(2)]
    return float(found.group(1)) * scale


@dataclass(frozen=True)
class SoakQuery:
    name: str  # file stem
    title: str
    expr: str  # `{w}` is the rate window
    unit: str
    scale: float = 1.0  # plotted value = value * scale (seconds → ms)
    legend: str = ""  # label whose value names a series; "" = the whole label set


QUERIES: tuple[SoakQuery, ...] = (
    SoakQuery(
        "success_rate",
        "commands succeeded, per second",
        'sum by (session) (rate(orchestrator_commands_total{{result="succeeded"}}[{w}]))',
        "commands/s",
        legend="session",
    ),
    SoakQuery(
        "failure_rate",
        "commands failed or stalled, per second",
        'sum by (session) (rate(orchestrator_commands_total{{result=~"failed|stalled"}}[{w}]))',
        "commands/s",
        legend="session",
    ),
    SoakQuery(
        "queue_depth", "queue depth", "sum by (session) (orchestrator_queue_depth)", "commands", legend="session"
    ),
    SoakQuery(
        "feedback_latency",
        "feedback latency p50 / p95 (exit → result recorded)",
        "label_replace(histogram_quantile(0.5, sum by (le) (rate(orchestrator_feedback_latency_seconds_bucket[{w}]))),"
        ' "quantile", "p50", "", "") or label_replace(histogram_quantile(0.95, sum by (le) '
        '(rate(orchestrator_feedback_latency_seconds_bucket[{w}]))), "quantile", "p95", "", "")',
        "ms",
        scale=1000.0,
        legend="quantile",
    ),
    SoakQuery(
        "stalls",
        "stalls detected (cumulative)",
        "sum by (session) (orchestrator_stall_count_total)",
        "stalls",
        legend="session",
    ),
    SoakQuery(
        "notifications",
        "notification attempts (cumulative)",
        "sum by (channel, result) (orchestrator_notifications_total)",
        "notifications",
    ),
    SoakQuery(
        "session_states",
        "sessions per state",
        "sum by (state) (orchestrator_session_state) > 0",
        "sessions",
        legend="state",
    ),
)


class _Service(Protocol):
    def send(self, session: str, command: str) -> int: ...
    def cli(self, *args: str, check: bool = True) -> Any: ...


@dataclass
class Workload:
    """What `run_workload` did (for the report's sentence)."""

    sent: int = 0
    bursts: int = 0
    stalls: int = 0
    streaks: int = 0
    outages: int = 0
    ids: list[int] = field(default_factory=list)


def run_workload(
    service: _Service,
    sessions: Sequence[str],
    seconds: float,
    *,
    stall_session: str | None = None,
    streak: Callable[[], None] | None = None,
    outage: Callable[[bool], None] | None = None,
    seed: int = 7,
) -> Workload:
    """Send a mixed workload for `seconds`: mostly successes, some failures (never three in a row
    by chance), bursts of five that queue; once a third of the way in a `sleep 600` stall on
    `stall_session`; half way `streak()` (a deliberate failure streak, its caller unblocks); from
    60 % to 75 % a WeCom outage (`outage(True)`, then `outage(False)`)."""
    rng = random.Random(seed)
    done = Workload()
    start = time.monotonic()
    consecutive = {s: 0 for s in sessions}
    stalled = streaked = outaged = restored = False
    while (elapsed := time.monotonic() - start) < seconds:
        share = elapsed / seconds
        if stall_session and not stalled and share >= 0.33:
            done.ids.append(service.send(stall_session, "echo fetching weather; sleep 600"))
            stalled, done.stalls = True, done.stalls + 1
        if streak is not None and not streaked and share >= 0.5:
            streak()
            streaked, done.streaks = True, done.streaks + 1
        if outage is not None and not outaged and share >= 0.6:
            outage(True)
            outaged, done.outages = True, done.outages + 1
        if outage is not None and outaged and not restored and share >= 0.75:
            outage(False)
            restored = True
        session = rng.choice(list(sessions))
        if rng.random() < 0.08 or (done.bursts == 0 and share >= 0.1):  # at least one queue build-up
            for i in range(5):
                done.ids.append(service.send(session, f"echo burst {i}; sleep 0.6"))
            done.bursts += 1
            done.sent += 5
        else:
            fail = rng.random() < 0.25 and consecutive[session] < 1
            command = rng.choice(["false", "(exit 3)"]) if fail else rng.choice(["true", "echo ok", "sleep 0.2"])
            consecutive[session] = consecutive[session] + 1 if fail else 0
            done.ids.append(service.send(session, command))
            done.sent += 1
        time.sleep(rng.uniform(0.15, 0.4))
    if outage is not None and outaged and not restored:
        outage(False)
    return done


class _Prometheus(Protocol):
    def api(self, path: str, **params: str) -> Any: ...


def rate_window(seconds: float, scrape: float) -> str:
    """A rate window that holds at least four scrapes and smooths a long soak (≤ 1 min)."""
    return f"{int(max(4 * scrape, min(60.0, seconds / 10)))}s"


def export(
    prom: _Prometheus, start: float, end: float, folder: Path, *, scrape: float = 1.0
) -> dict[SoakQuery, list[tuple[str, list[tuple[float, float]]]]]:
    """Each query's range result over [start, end] (≤ 300 points), one CSV per query in `folder`
    (`time_s,series,value`, time in seconds since `start`). Returns the series for `plot`."""
    folder.mkdir(parents=True, exist_ok=True)
    step = max(scrape, (end - start) / 300)
    window = rate_window(end - start, scrape)
    out: dict[SoakQuery, list[tuple[str, list[tuple[float, float]]]]] = {}
    for query in QUERIES:
        data = prom.api(
            "query_range", query=query.expr.format(w=window), start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}"
        )
        series = []
        for result in data["result"]:
            labels = result["metric"]
            name = (
                labels.get(query.legend, "")
                if query.legend
                else ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            )
            points = [(float(t) - start, float(v)) for t, v in result["values"] if v not in ("NaN", "+Inf", "-Inf")]
            if query.name == "session_states" and not any(v for _, v in points):
                continue  # a state no session was in: not worth a line
            series.append((name or "all", points))
        series.sort()
        out[query] = series
        with (folder / f"{query.name}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["time_s", "series", "value", "unit", "expr"])
            expr = query.expr.format(w=window)
            for name, points in series:
                for t, v in points:
                    writer.writerow([f"{t:.1f}", name, f"{v:g}", "s" if query.scale != 1 else query.unit, expr])
    return out


def plot(series: dict[SoakQuery, list[tuple[str, list[tuple[float, float]]]]], path: Path, title: str) -> Path:
    """One PNG: a panel per query, time (s since the soak started) on x, the query's unit on y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    cjk = [f.name for f in font_manager.fontManager.ttflist if "WenQuanYi" in f.name or "Noto Sans CJK" in f.name]
    if cjk:
        plt.rcParams["font.sans-serif"] = [cjk[0], "DejaVu Sans"]
    queries = list(series)
    cols = 2
    rows = (len(queries) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(13, 3.4 * rows), squeeze=False)
    for ax, query in zip(axes.flat, queries, strict=False):
        drawn = 0
        for name, points in series[query]:
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            step = query.name in ("queue_depth", "stalls", "notifications", "session_states")
            if step:
                ax.step(xs, [y * query.scale for y in ys], where="post", label=name, linewidth=1.6)
            else:
                ax.plot(xs, [y * query.scale for y in ys], label=name, linewidth=1.6)
            drawn += 1
        ax.set_title(query.title, fontsize=11)
        ax.set_xlabel("time since soak start (s)")
        ax.set_ylabel(query.unit)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        if drawn:
            ax.legend(fontsize=8, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no samples", transform=ax.transAxes, ha="center", va="center", color="grey")
    for ax in list(axes.flat)[len(queries) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
