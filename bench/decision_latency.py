"""Decision latency: how long from a blocker being written to `next_actions` being written?

Runs the real `tmux-agent-orchestrator` service on an isolated tmux server, with the bundled
fake `codex` (a real executable) as `[codex] bin`. Each round writes a new `blockers` list
straight into the state DB (CLI start-up is not what is measured), at a random phase of the
supervisor's ticks, and polls the DB every 2 ms until `next_actions` answers exactly those
blockers. The service runs with the test settings (poll interval 0.05 s). Reported per reply kind:

* `end_to_end` — write → `next_actions` visible in the DB (what a user or dashboard sees);
* `codex_call` — the orchestrator's own `orchestrator_decision_assist_latency_seconds` (the
  fake codex subprocess: interpreter start, prompt on stdin, answer parsed and validated).

Kinds: `json` (codex answers; source codex), `garbage` (not JSON; rule-based fallback at once)
and `hang` (rules after CODEX_TIMEOUT_SECONDS, here 1 s). It is a benchmark, not a test.

Usage::

    .venv/bin/python bench/decision_latency.py [--rounds 20] [--kinds json garbage hang] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from common import percentile  # this folder is on sys.path when run as a script

from orchestrator.state.store import StateStore
from pytest_tmuxagent.fake_codex import FakeCodex
from pytest_tmuxagent.service import make_service
from pytest_tmuxagent.tmux_server import TmuxTestServer

SESSION = "weather/bot"
ADVICE = {
    "summary": "set the key",
    "recommendations": [
        {"title": "Provide OPENAI_API_KEY", "detail": "in ~/.env", "command": None, "priority": "high", "risk": "low"}
    ],
}
REPLIES = {"json": {"kind": "json", "payload": ADVICE}, "garbage": {"kind": "garbage"}, "hang": {"kind": "hang"}}


def measure(kind: str, rounds: int, root: Path, tmux: TmuxTestServer) -> dict[str, Any]:
    codex = FakeCodex(root / "bin")
    codex.install()
    codex.script([REPLIES[kind]])
    pane = tmux.agent_pane(SESSION)
    service = make_service(
        root / "service",
        tmux,
        [pane],
        settings={
            "ai": {"backend": "codex"},
            "codex": {"bin": str(codex.path)},
            "decision": {"enabled": True, "pane_scan_seconds": 0},
        },
        env={"CODEX_TIMEOUT_SECONDS": "1"},
    )
    service.start()
    store = StateStore(service.state_db)
    samples: list[float] = []
    sources: set[str] = set()
    try:
        for i in range(rounds):
            blockers = [f"OPENAI_API_KEY is missing (round {i} {uuid.uuid4().hex[:6]})"]
            time.sleep(random.uniform(0, 0.2))  # a random phase against the supervisor's poll and check ticks
            started = time.monotonic()
            store.update_metadata(SESSION, {"blockers": blockers})
            while True:
                actions = store.metadata(SESSION).get("next_actions") or {}
                if actions.get("blockers") == blockers:
                    break
                if time.monotonic() - started > 30:
                    raise SystemExit(f"no decision for round {i}; log: {service.log_text()[-1500:]}")
                time.sleep(0.002)
            samples.append((time.monotonic() - started) * 1000)
            sources.add(actions["source"])
        snapshot = service.metrics.scrape()
        count = snapshot.value("orchestrator_decision_assist_latency_seconds_count", session=SESSION, backend="codex")
        total = snapshot.value("orchestrator_decision_assist_latency_seconds_sum", session=SESSION, backend="codex")
    finally:
        store.close()
        service.stop()
    return {
        "kind": kind,
        "rounds": rounds,
        "source": sorted(sources),
        "end_to_end_p50_ms": round(percentile(samples, 50), 1),
        "end_to_end_p95_ms": round(percentile(samples, 95), 1),
        "end_to_end_max_ms": round(max(samples), 1),
        "codex_call_mean_ms": round(1000 * total / count, 1) if count else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--kinds", nargs="+", default=["json", "garbage", "hang"], choices=sorted(REPLIES))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = []
    for kind in args.kinds:
        with tempfile.TemporaryDirectory(prefix="bench-decision-") as tmp:
            tmux = TmuxTestServer(socket_name=f"bench-dl-{uuid.uuid4().hex[:10]}", root=Path(tmp) / "panes")
            try:
                rounds = min(args.rounds, 5) if kind == "hang" else args.rounds
                results.append(measure(kind, rounds, Path(tmp), tmux))
            finally:
                tmux.kill()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"{'reply':8} {'rounds':>6} {'source':8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'codex call mean ms':>19}"
    )
    for r in results:
        print(
            f"{r['kind']:8} {r['rounds']:>6} {','.join(r['source']):8} {r['end_to_end_p50_ms']:>8} "
            f"{r['end_to_end_p95_ms']:>8} {r['end_to_end_max_ms']:>8} {str(r['codex_call_mean_ms']):>19}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
