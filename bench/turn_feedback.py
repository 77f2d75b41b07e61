"""Turn feedback: how long after a real agent ends its turn is the turn's result stored?

Why this benchmark exists
-------------------------
For an agent session the unit of work is a prompt typed into the agent's own terminal UI, and
the turn is over when the agent says so: Claude Code fires its ``Stop`` hook, codex runs its
``notify`` program with ``agent-turn-complete``. The orchestrator launches the agent with both
wired to ``python -m orchestrator.cli.agent_hook EVENTS SOCKET CHANNEL EVENT``, which appends
``{"event", "ts", "payload"}`` to the session's events file and signals ``tmux wait-for -S``;
the agent driver's waiter wakes the engine, which reads the turn's reply and tools from the
agent's transcript and commits the result and ``last_command_result``. The seed approach would
instead poll ``tmux capture-pane -p`` and look for the reply on the screen.

This script measures both, with the real Claude Code and codex talking to a scripted local
model server (``pytest_tmuxagent.model_server.ModelServer``, text replies), in one run per agent:

* **orchestrator** - the real ``tmux-agent-orchestrator`` service (poll interval 0.05 s) with
  the agent session override ``AgentHome.session_override()`` (as scenario A does); it launches
  the agent itself. Prompts are queued straight into its SQLite state DB with
  ``StateStore.enqueue`` (CLI start-up is not what is measured), one after another: the next is
  queued once the previous row is terminal. Latency per turn = the row's ``recorded_at`` (epoch
  seconds, set when the result is committed) - the ``ts`` of the turn's end event in the
  session's events file (``<state dir>/run/agent-*.events.jsonl``; the hook's own clock, taken
  when the agent fired ``Stop`` / ``agent-turn-complete``). Each turn's end event is the one whose
  reply (``last_assistant_message`` / ``last-assistant-message``) is that turn's unique scripted
  reply.
* **poller** - the seed approach, same agent binary, same model server, same tmux server, no
  orchestrator: the agent is started in a second pane with the same hook entry wired the same
  way (Claude Code: a settings file with a ``Stop`` hook calling ``python -m
  orchestrator.cli.agent_hook EVENTS "" "" Stop``; codex: ``-c notify=[…, "notify"]``), so both
  methods are measured from the same moment. Each prompt is typed with ``tmux send-keys -l``,
  then Enter once the text shows; ``tmux capture-pane -p -J`` runs every ``--poll-interval``
  (0.5 s) on a fixed tick, and latency = the time the reply text was first seen - the end event's
  ``ts``. Each prompt is typed at a uniformly random phase of the poll tick (as
  ``feedback_latency.py`` does), so turn ends are not phase-locked to the poller.

It prints a table (or ``--json``) with n/p50/p95/max per agent and method, the
poller/orchestrator ratios, and whether the targets are met: orchestrator p95 <= 100 ms and
>= 5x better than the poller (p50 and p95). It is a benchmark, not a test: nothing here asserts
on timing. An agent whose binary is missing (``find_agent``: ``$TMUXAGENT_CLAUDE_BIN`` /
``$TMUXAGENT_CODEX_BIN`` or ``.agents/node_modules/.bin/``) is skipped with one line.

Usage::

    .venv/bin/python bench/turn_feedback.py [--providers claude codex] [--turns 30]
        [--baseline-turns 10] [--poll-interval 0.5] [--seed S] [--json]

Every tmux server gets its own socket name (``bench-tf-...``); the services, tmux servers,
model servers, agent processes (``AgentHome.reap()``: codex leaves ``codex app-server``
daemons) and temp directories are cleaned up even on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from orchestrator.clock import parse_iso_utc
from orchestrator.drivers.agent_events import AgentEvent
from orchestrator.drivers.agent_providers import PROVIDERS as DRIVER_PROVIDERS
from orchestrator.model import TERMINAL_STATUSES, CommandRow
from orchestrator.state.store import StateStore
from pytest_tmuxagent.agents import AgentHome, AgentProvider, agent_version, find_agent, install_hint
from pytest_tmuxagent.model_server import ModelServer, text
from pytest_tmuxagent.service import OrchestratorService, make_service
from pytest_tmuxagent.tmux_server import AgentPane, TmuxTestServer
from pytest_tmuxagent.waiting import wait_until

SOCKET_PREFIX = "bench-tf-"
TARGET_P95_MS = 100.0
TARGET_RATIO = 5.0
TURN_TIMEOUT = 60.0  # seconds one turn may take (the first includes the agent's start)
START_TIMEOUT = 60.0  # seconds the poller's agent has to draw its prompt


# statistics ---------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class Summary:
    provider: str
    method: str
    n: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    min_ms: float
    mean_ms: float
    expected: int
    samples_ms: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, provider: str, method: str, samples_ms: list[float], expected: int) -> Summary:
        return cls(
            provider=provider,
            method=method,
            n=len(samples_ms),
            p50_ms=percentile(samples_ms, 50),
            p95_ms=percentile(samples_ms, 95),
            max_ms=max(samples_ms) if samples_ms else math.nan,
            min_ms=min(samples_ms) if samples_ms else math.nan,
            mean_ms=sum(samples_ms) / len(samples_ms) if samples_ms else math.nan,
            expected=expected,
            samples_ms=[round(s, 2) for s in samples_ms],
        )


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# turns and their end events --------------------------------------------------------------------
def normalize(value: str) -> str:
    return " ".join(value.split())


@dataclass(frozen=True)
class Turn:
    k: int
    prompt: str
    reply: str


def make_turns(method: str, count: int, nonce: str) -> list[Turn]:
    # The prompt never contains the reply, so the poller cannot mistake the typed prompt for it.
    return [
        Turn(k, f"bench {method} turn {k} ({nonce}): say the agreed words", f"Agreed words {method} {k} {nonce} done.")
        for k in range(count)
    ]


def read_events(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    events = []
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue  # a line being written
        if isinstance(item, dict):
            events.append(item)
    return events


def end_reply(event: dict[str, Any]) -> str | None:
    """The reply an end event reports: Claude Code's Stop, codex's agent-turn-complete; else None."""
    payload = event.get("payload") or {}
    if event.get("event") == "Stop":
        reply = payload.get("last_assistant_message")
    elif event.get("event") == "notify" and payload.get("type") == "agent-turn-complete":
        reply = payload.get("last-assistant-message")
    else:
        return None
    return reply if isinstance(reply, str) else None


def end_ts(events: list[dict[str, Any]], reply: str) -> float | None:
    """The `ts` of the first end event whose reply is `reply` (each turn's reply is unique)."""
    wanted = normalize(reply)
    for event in events:
        got = end_reply(event)
        if got is not None and normalize(got) == wanted:
            return float(event["ts"])
    return None


def script(server: ModelServer, provider: AgentProvider, reply: str) -> None:
    (server.anthropic if provider == "claude" else server.openai).script(text(reply))


# the orchestrator ------------------------------------------------------------------------------
def measure_orchestrator(
    provider: AgentProvider,
    root: Path,
    tmux: TmuxTestServer,
    server: ModelServer,
    binary: Path,
    turns: list[Turn],
    homes: list[AgentHome],
    stack: ExitStack,
) -> Summary:
    pane = tmux.agent_pane(f"bench/{provider}")
    home = AgentHome.prepare(provider, pane.workdir, server, root / "agent", binary=binary)
    homes.append(home)
    service: OrchestratorService = make_service(
        root / "orch",
        tmux,
        [pane],
        session_overrides={pane.name: dict(home.session_override())},
        settings={"stall_timeout_seconds": 120},
    )
    stack.callback(service.stop)
    service.start()
    store = StateStore(service.state_db)
    stack.callback(store.close)
    notes: list[str] = []
    rows: list[tuple[Turn, CommandRow]] = []
    for turn in turns:
        script(server, provider, turn.reply)
        command_id = store.enqueue(pane.name, turn.prompt, source="bench")

        def done(command_id: int = command_id) -> CommandRow | None:
            row = store.command(command_id)
            return row if row is not None and row.status in TERMINAL_STATUSES else None

        row: CommandRow = wait_until(
            done,
            timeout=TURN_TIMEOUT,
            interval=0.02,
            message=f"{provider} turn {turn.k} to be recorded; log: {service.log_text()[-1500:]}",
        )
        rows.append((turn, row))

    runtime_dir = service.state_db.parent / "run"
    files = sorted(runtime_dir.glob("agent-*.events.jsonl"))
    events = read_events(files[0]) if files else []
    if len(files) != 1:
        notes.append(f"{len(files)} events files in {runtime_dir}")
    samples: list[float] = []
    statuses: dict[str, int] = {}
    replies_ok = 0
    worst: tuple[float, int] = (-math.inf, -1)
    for turn, row in rows:
        statuses[row.status] = statuses.get(row.status, 0) + 1
        ts = end_ts(events, turn.reply)
        if ts is None or row.recorded_at is None:
            notes.append(f"turn {turn.k}: end event ts={ts} recorded_at={row.recorded_at}")
            continue
        if row.finished_at is not None and abs(parse_iso_utc(row.finished_at) - ts) > 0.001:
            notes.append(f"turn {turn.k}: finished_at {row.finished_at} is not the end event's ts {ts:.6f}")
        latency = (row.recorded_at - ts) * 1000.0
        if latency < 0:
            notes.append(f"turn {turn.k}: negative latency {latency:.2f} ms")
        samples.append(latency)
        worst = max(worst, (latency, turn.k))
        replies_ok += (row.output_tail or "").strip() == turn.reply
    if set(statuses) != {"succeeded"}:
        notes.append(f"statuses: {statuses}")
    if replies_ok != len(rows):
        notes.append(f"{len(rows) - replies_ok} turn(s) whose stored reply is not the scripted one")

    summary = Summary.of(provider, "orchestrator", samples, len(turns))
    summary.extra["statuses"] = statuses
    summary.extra["slowest_turn"] = worst[1]
    last = service.metadata(pane.name).get("last_command_result") or {}
    summary.extra["last_command_result_reply_ok"] = last.get("reply") == turns[-1].reply
    summary.extra["result_read"] = time_result_read(provider, events, turns[-1], home)
    code = service.stop()
    if code not in (0, None):
        notes.append(f"service exited {code}")
    suspicious = [
        line
        for line in service.log_text().splitlines()
        if any(word in line for word in ("WARNING", "ERROR", "Traceback")) and "no WeCom channel" not in line
    ]
    if suspicious:
        notes.append(f"{len(suspicious)} warning/error lines in service log, first: {suspicious[0][:200]}")
    summary.notes = notes
    return summary


def time_result_read(
    provider: AgentProvider, events: list[dict[str, Any]], turn: Turn, home: AgentHome, repeat: int = 5
) -> dict[str, Any]:
    """What the driver does once the end event is in: the provider's `result()` for `turn` (it reads
    and parses the agent's whole transcript / rollout), timed here in this process on the same
    files, and how big they are by then. The engine calls it twice per turn (`end_record`, then
    again through `output_tail`), so twice this is the driver's share of the latency."""
    parsed = [AgentEvent(str(e["event"]), float(e["ts"]), dict(e.get("payload") or {})) for e in events]
    end = next((e for e in parsed if normalize(end_reply(asdict(e)) or "") == normalize(turn.reply)), None)
    if end is None:
        return {}
    driver = DRIVER_PROVIDERS[provider]()
    costs = []
    for _ in range(repeat):
        began = time.perf_counter()
        driver.result(end, turn.prompt, home.env, parsed)
        costs.append((time.perf_counter() - began) * 1000.0)
    if provider == "claude":
        transcript = end.payload.get("transcript_path")
        files = [Path(transcript)] if isinstance(transcript, str) else []
    else:
        thread = end.payload.get("thread-id")
        files = sorted((Path(home.env["CODEX_HOME"]) / "sessions").rglob(f"rollout-*-{thread}.jsonl"))
    size = sum(f.stat().st_size for f in files if f.exists())
    lines = sum(len(f.read_bytes().splitlines()) for f in files if f.exists())
    return {"ms": round(percentile(costs, 50), 2), "bytes": size, "lines": lines}


def measure_signal_path(tmux: TmuxTestServer, root: Path, count: int = 10) -> dict[str, float]:
    """The hook entry's own cost, outside any agent: its interpreter start-up (spent before it takes
    `ts`) and the time from `ts` to a `tmux wait-for CHANNEL` waiter waking (the append, then
    `tmux wait-for -S`), which is part of the orchestrator's latency."""
    tmux_bin = shutil.which("tmux") or "tmux"
    events = root / "signal-probe.events.jsonl"
    root.mkdir(parents=True, exist_ok=True)
    startup, wake = [], []

    def watch(waiter: subprocess.Popen[bytes], woke: list[float]) -> None:
        waiter.wait()
        woke.append(time.time())

    for _ in range(count):
        channel = f"{SOCKET_PREFIX}probe-{uuid.uuid4().hex[:6]}"
        waiter = subprocess.Popen([tmux_bin, "-L", tmux.socket_name, "wait-for", channel])
        woke: list[float] = []
        watcher = threading.Thread(target=watch, args=(waiter, woke))
        watcher.start()
        time.sleep(0.1)  # let the waiter reach the server
        spawned = time.time()
        argv = [
            sys.executable,
            "-m",
            "orchestrator.cli.agent_hook",
            str(events),
            str(tmux.socket_file),
            channel,
            "Stop",
        ]
        subprocess.run(argv, input=b"{}", check=False, timeout=10)
        watcher.join(timeout=5)
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
            continue
        ts = float(read_events(events)[-1]["ts"])
        startup.append((ts - spawned) * 1000.0)
        if woke:
            wake.append((woke[0] - ts) * 1000.0)
    return {
        "hook_startup_p50_ms": round(percentile(startup, 50), 2),
        "ts_to_waiter_wake_p50_ms": round(percentile(wake, 50), 2),
        "ts_to_waiter_wake_p95_ms": round(percentile(wake, 95), 2),
    }


# the seed system's approach --------------------------------------------------------------------
def hook_entry(events: Path, event: str) -> list[str]:
    """The orchestrator's own hook entry, with no tmux socket or channel to signal."""
    return [sys.executable, "-m", "orchestrator.cli.agent_hook", str(events), "", "", event]


def baseline_launch(home: AgentHome, events: Path, run_dir: Path) -> str:
    if home.provider == "claude":
        settings = {
            "hooks": {"Stop": [{"hooks": [{"type": "command", "command": shlex.join(hook_entry(events, "Stop"))}]}]}
        }
        path = run_dir / "claude-settings.json"
        path.write_text(json.dumps(settings), encoding="utf-8")
        return home.launch_line("--settings", str(path))
    return home.launch_line("-c", "notify=" + json.dumps(hook_entry(events, "notify")))


def capture(tmux_bin: str, tmux: TmuxTestServer, pane: AgentPane) -> list[str]:
    out = subprocess.run(
        [tmux_bin, "-L", tmux.socket_name, "capture-pane", "-p", "-J", "-t", pane.pane_id],
        capture_output=True,
        text=True,
    )
    return out.stdout.splitlines()


def measure_baseline(
    provider: AgentProvider,
    root: Path,
    tmux: TmuxTestServer,
    server: ModelServer,
    binary: Path,
    turns: list[Turn],
    interval: float,
    rng: random.Random,
    homes: list[AgentHome],
) -> Summary:
    """Type each prompt at a random phase of a fixed capture-pane tick; detect the reply on screen.

    States per turn: waiting to type (`type_at`), typed and waiting for the text to show (then
    Enter), running (only the tick's capture looks at the screen), then waiting for the end event
    (the hook may write it a moment after the reply is drawn) before the next turn is scheduled.
    """
    pane = tmux.agent_pane(f"base/{provider}")
    home = AgentHome.prepare(provider, pane.workdir, server, root / "agent", binary=binary)
    homes.append(home)
    events_path = root / "events.jsonl"
    events_path.touch()
    tmux_bin = shutil.which("tmux") or "tmux"
    ready = DRIVER_PROVIDERS[provider]().is_ready
    pane.type(f"cd {shlex.quote(str(pane.workdir))} && {baseline_launch(home, events_path, root)}")
    wait_until(
        lambda: ready(capture(tmux_bin, tmux, pane)),
        timeout=START_TIMEOUT,
        interval=0.1,
        message=f"{provider} to draw its prompt in the poller's pane",
    )

    samples: list[float] = []
    notes: list[str] = []
    negatives = 0
    start = time.monotonic()
    next_poll = start + interval
    index = 0
    phase = "wait_type"
    type_at: float | None = start + rng.uniform(0, interval)
    typed_at = 0.0
    seen_at: float | None = None
    turn = turns[0]
    while index < len(turns):
        now = time.monotonic()
        turn = turns[index]
        if phase == "wait_type" and type_at is not None and now >= type_at:
            if ready(capture(tmux_bin, tmux, pane)):
                script(server, provider, turn.reply)
                tmux.server.cmd("send-keys", "-t", pane.pane_id, "-l", "--", turn.prompt)
                phase, typed_at = "echo", now
            else:
                type_at = now + 0.02  # not at its prompt yet: codex drops an early Enter
        elif phase == "echo":
            screen = " ".join(normalize(line) for line in capture(tmux_bin, tmux, pane))
            if normalize(turn.prompt) in screen:
                tmux.server.cmd("send-keys", "-t", pane.pane_id, "Enter")
                phase, typed_at = "running", time.monotonic()
            elif now - typed_at > 5.0:
                notes.append(f"turn {turn.k}: the typed prompt never showed; Enter anyway")
                tmux.server.cmd("send-keys", "-t", pane.pane_id, "Enter")
                phase, typed_at = "running", time.monotonic()
        if now >= next_poll:
            while next_poll <= now:
                next_poll += interval
            if phase == "running":
                lines = capture(tmux_bin, tmux, pane)
                detected = time.time()
                if any(turn.reply in line for line in lines):
                    seen_at, phase = detected, "wait_event"
                elif time.monotonic() - typed_at > TURN_TIMEOUT:
                    notes.append(f"turn {turn.k}: reply not seen in {TURN_TIMEOUT:.0f}s")
                    seen_at, phase = None, "wait_event"
        if phase == "wait_event":
            ts = end_ts(read_events(events_path), turn.reply)
            waited = time.monotonic() - typed_at
            if ts is not None or waited > TURN_TIMEOUT + 10:
                if ts is None:
                    notes.append(f"turn {turn.k}: no end event")
                elif seen_at is not None:
                    latency = (seen_at - ts) * 1000.0
                    negatives += latency < 0
                    samples.append(latency)
                index += 1
                phase, type_at, seen_at = "wait_type", time.monotonic() + rng.uniform(0, interval), None
        waits = [next_poll]
        if phase == "wait_type" and type_at is not None:
            waits.append(type_at)
        if phase in ("echo", "wait_event"):
            waits.append(time.monotonic() + 0.02)
        time.sleep(max(0.0, min(min(waits) - time.monotonic(), interval)))
    if negatives:
        notes.append(f"{negatives} turn(s) whose reply was on screen before the end event was written")
    summary = Summary.of(provider, f"poller capture-pane every {interval:g}s", samples, len(turns))
    summary.notes = notes
    return summary


# one agent ----------------------------------------------------------------------------------
def run_provider(
    provider: AgentProvider, binary: Path, n_turns: int, n_baseline: int, interval: float, rng: random.Random
) -> list[Summary]:
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix=f"{SOCKET_PREFIX}{provider}-"))
        stack.callback(shutil.rmtree, tmp, True)
        server = ModelServer(default=text("(unscripted)")).start()
        stack.callback(server.stop)
        homes: list[AgentHome] = []

        def reap_all() -> None:  # registered before kill-server, so it runs after it too
            for home in homes:
                try:
                    home.reap()
                except RuntimeError as error:
                    log(f"cleanup: {error}")

        stack.callback(reap_all)
        tmux = TmuxTestServer(socket_name=f"{SOCKET_PREFIX}{uuid.uuid4().hex[:10]}", root=tmp)
        stack.callback(tmux.kill)
        stack.callback(reap_all)  # and before it, so no agent is still talking to a dying server
        nonce = uuid.uuid4().hex[:6]
        log(f"{provider}: orchestrator, {n_turns} turn(s)")
        ours = measure_orchestrator(
            provider,
            tmp / "orchestrator",
            tmux,
            server,
            binary,
            make_turns("orchestrator", n_turns, nonce),
            homes,
            stack,
        )
        log(f"{provider}: poller, {n_baseline} turn(s), capture-pane every {interval:g}s")
        base = measure_baseline(
            provider,
            tmp / "poller",
            tmux,
            server,
            binary,
            make_turns("poller", n_baseline, nonce),
            interval,
            rng,
            homes,
        )
        ours.extra["signal_path"] = measure_signal_path(tmux, tmp / "probe")
        return [ours, base]


# reporting ----------------------------------------------------------------------------------
def ratio(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) and not math.isnan(b) else math.nan


def evaluate(results: dict[str, list[Summary]]) -> list[dict[str, Any]]:
    verdicts: list[dict[str, Any]] = []
    for provider, (ours, base) in results.items():
        verdicts.append(
            {
                "provider": provider,
                "target": f"orchestrator p95 <= {TARGET_P95_MS:g} ms",
                "value": round(ours.p95_ms, 2),
                "met": ours.p95_ms <= TARGET_P95_MS and ours.n == ours.expected,
            }
        )
        for label, value in (("p50", ratio(base.p50_ms, ours.p50_ms)), ("p95", ratio(base.p95_ms, ours.p95_ms))):
            verdicts.append(
                {
                    "provider": provider,
                    "target": f"poller_{label} / orchestrator_{label} >= {TARGET_RATIO:g}x",
                    "value": round(value, 1),
                    "met": value >= TARGET_RATIO,
                }
            )
    return verdicts


def print_table(
    results: dict[str, list[Summary]], verdicts: list[dict[str, Any]], skipped: dict[str, str], versions: dict[str, Any]
) -> None:
    header = f"{'agent':<8}  {'method':<34} {'n':>5}  {'p50 ms':>8}  {'p95 ms':>8}  {'max ms':>8}"
    print(header)
    print("-" * len(header))
    for provider, (ours, base) in results.items():
        for s in (ours, base):
            n = f"{s.n}" if s.n == s.expected else f"{s.n}/{s.expected}"
            print(f"{s.provider:<8}  {s.method:<34} {n:>5}  {s.p50_ms:>8.1f}  {s.p95_ms:>8.1f}  {s.max_ms:>8.1f}")
        print(
            f"{'':<8}  ratio poller/orchestrator: p50 {ratio(base.p50_ms, ours.p50_ms):.1f}x, "
            f"p95 {ratio(base.p95_ms, ours.p95_ms):.1f}x   ({versions.get(provider)})"
        )
    for provider, why in skipped.items():
        print(f"{provider:<8}  skipped: {why}")
    print()
    print("where the orchestrator's time goes (measured beside the run, same machine):")
    for provider, (ours, _base) in results.items():
        read, sig = ours.extra.get("result_read") or {}, ours.extra.get("signal_path") or {}
        if sig:
            print(
                f"  {provider:<7} hook ts -> tmux wait-for waiter awake: p50 {sig['ts_to_waiter_wake_p50_ms']:.1f} ms, "
                f"p95 {sig['ts_to_waiter_wake_p95_ms']:.1f} ms (hook start-up before ts: {sig['hook_startup_p50_ms']:.0f} ms)"
            )
        if read:
            print(
                f"  {provider:<7} provider result() at the last turn: {read['ms']:.1f} ms, called twice per turn "
                f"(transcript {read['bytes'] / 1024:.0f} KiB, {read['lines']} lines)"
            )
    print()
    print("targets:")
    for v in verdicts:
        print(f"  {v['provider']:<7} {v['target']:<44} {v['value']:>8}  {'met' if v['met'] else 'NOT MET'}")
    notes = [(s.provider, s.method, note) for summaries in results.values() for s in summaries for note in s.notes]
    if notes:
        print()
        print("notes:")
        for provider, method, note in notes:
            print(f"  [{provider}, {method}] {note}")


def _finite(value: Any) -> Any:
    """NaN/inf (an empty sample set) become null, so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every ExitStack, so cleanup runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--providers", nargs="+", choices=["claude", "codex"], default=["claude", "codex"], help="agents to measure"
    )
    parser.add_argument("--turns", type=int, default=30, help="orchestrator turns per agent (default 30)")
    parser.add_argument("--baseline-turns", type=int, default=10, help="poller turns per agent (default 10)")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="the poller's capture-pane interval, s")
    parser.add_argument("--seed", type=int, default=None, help="seed for the poller's random typing phase")
    parser.add_argument("--json", action="store_true", help="print machine-readable results instead")
    args = parser.parse_args(argv)
    if args.turns < 1 or args.baseline_turns < 1 or args.poll_interval <= 0:
        parser.error("--turns and --baseline-turns must be >= 1, --poll-interval > 0")
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    rng = random.Random(args.seed)

    started = time.monotonic()
    results: dict[str, list[Summary]] = {}
    skipped: dict[str, str] = {}
    versions: dict[str, str | None] = {}
    for provider in dict.fromkeys(args.providers):
        binary = find_agent(provider)
        if binary is None:
            skipped[provider] = install_hint(provider)
            log(f"{provider}: skipped: {skipped[provider]}")
            continue
        versions[provider] = agent_version(provider, binary)
        results[provider] = run_provider(provider, binary, args.turns, args.baseline_turns, args.poll_interval, rng)
    verdicts = evaluate(results)
    elapsed = time.monotonic() - started
    if args.json:
        print(
            json.dumps(
                _finite(
                    {
                        "elapsed_s": round(elapsed, 1),
                        "poll_interval_s": args.poll_interval,
                        "versions": versions,
                        "skipped": skipped,
                        "results": [asdict(s) for summaries in results.values() for s in summaries],
                        "ratios": {
                            p: {"p50": ratio(b.p50_ms, o.p50_ms), "p95": ratio(b.p95_ms, o.p95_ms)}
                            for p, (o, b) in results.items()
                        },
                        "targets": verdicts,
                    }
                ),
                indent=2,
            )
        )
    else:
        print_table(results, verdicts, skipped, versions)
        print(f"\n(elapsed {elapsed:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
