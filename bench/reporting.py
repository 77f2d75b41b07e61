"""The benchmarks' verdicts and reports: ratios against a baseline, the targets met or not, the
tables (the product beside its peers) and the JSON form of the same figures."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from common import Summary  # this folder is on sys.path when run as a script

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
