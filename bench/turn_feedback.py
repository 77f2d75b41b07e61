"""Turn feedback: how long after a real agent ends its turn is the turn's result stored?

Why this benchmark exists
-------------------------
For an agent session the unit of work is a prompt typed into the agent's own terminal UI, and
the turn is over when the agent says so: Claude Code fires its ``Stop`` hook, codex runs its
``notify`` program with ``agent-turn-complete``. The orchestrator launches the agent with both
wired to ``python -m orchestrator.cli.agent_hook EVENTS EVENT``, which appends
``{"event", "ts", "payload"}`` to the session's events file and closes it; the orchestrator's
one inotify watch turns the close into a wake of the engine, which reads the turn's reply and tools from the
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
import queue
import random
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import common  # this folder is on sys.path when run as a script
import reporting

from orchestrator.clock import parse_iso_utc
from orchestrator.drivers.agent_events import AgentEvent
from orchestrator.drivers.agent_providers import PROVIDERS as DRIVER_PROVIDERS
from orchestrator.drivers.file_watch import FileWatch
from orchestrator.model import TERMINAL_STATUSES, CommandRow
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


@dataclass(kw_only=True)
class AgentSummary(common.Summary):
    SUBJECT: ClassVar[str] = "provider"
    provider: str
    samples_ms: list[float] = field(default_factory=list)  # each sample, rounded to 0.01 ms

    @classmethod
    def of_turns(cls, provider: str, method: str, samples: list[float], expected: int) -> AgentSummary:
        rounded = [round(s, 2) for s in samples]
        return cls.of(samples, provider=provider, method=method, expected=expected, samples_ms=rounded)


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


@dataclass
class Rig:
    """What both methods of one agent share: the agent, its binary, the tmux and model servers, and
    every agent home made so far (reaped at cleanup)."""

    provider: AgentProvider
    binary: Path
    tmux: TmuxTestServer
    server: ModelServer
    homes: list[AgentHome] = field(default_factory=list)

    def agent(self, pane_name: str, root: Path) -> tuple[AgentPane, AgentHome]:
        """A new pane, and an agent home for it under `root`."""
        pane = self.tmux.agent_pane(pane_name)
        home = AgentHome.prepare(self.provider, pane.workdir, self.server, root / "agent", binary=self.binary)
        self.homes.append(home)
        return pane, home


# the orchestrator ------------------------------------------------------------------------------
def measure_orchestrator(rig: Rig, root: Path, turns: list[Turn], stack: ExitStack) -> AgentSummary:
    provider, tmux, server = rig.provider, rig.tmux, rig.server
    pane, home = rig.agent(f"bench/{provider}", root)
    service: OrchestratorService = make_service(
        root / "orch",
        tmux,
        [pane],
        session_overrides={pane.name: dict(home.session_override())},
        settings={"stall_timeout_seconds": 120},
    )
    store = common.start_service(service, stack)
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
        common.count_status(statuses, row.status)
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
    notes += common.status_notes(statuses)
    if replies_ok != len(rows):
        notes.append(f"{len(rows) - replies_ok} turn(s) whose stored reply is not the scripted one")

    summary = AgentSummary.of_turns(provider, "orchestrator", samples, len(turns))
    summary.extra["statuses"] = statuses
    summary.extra["slowest_turn"] = worst[1]
    last = service.metadata(pane.name).get("last_command_result") or {}
    summary.extra["last_command_result_reply_ok"] = last.get("reply") == turns[-1].reply
    summary.extra["result_read"] = time_result_read(provider, events, turns[-1], home)
    notes += common.stop_notes(service)
    notes += common.log_notes(service, ignore=("no WeCom channel",))
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
    return {"ms": round(common.percentile(costs, 50), 2), "bytes": size, "lines": lines}


def measure_signal_path(root: Path, count: int = 10) -> dict[str, float]:
    """The hook entry's own cost, outside any agent: its interpreter start-up (spent before it takes
    `ts`) and the time from `ts` to the orchestrator's file watch waking on the events file (the
    hook appends one line and closes the file; the watch turns the close into a wake), which is
    part of the orchestrator's latency."""
    events = root / "signal-probe.events.jsonl"
    root.mkdir(parents=True, exist_ok=True)
    events.touch()
    startup, wake = [], []
    watcher = FileWatch(root)
    try:
        watcher.watch(1, events, repeat=True)
        watcher.events.get(timeout=5)  # the file as it is now: the baseline
        for _ in range(count):
            spawned = time.time()
            argv = [sys.executable, "-m", "orchestrator.cli.agent_hook", str(events), "Stop"]
            hook = subprocess.Popen(argv, stdin=subprocess.PIPE)
            assert hook.stdin is not None
            hook.stdin.write(b"{}")
            hook.stdin.close()
            try:
                watcher.events.get(timeout=10)  # blocks while the hook runs: woken by its close
            except queue.Empty:
                hook.kill()
                hook.wait()
                continue
            woke = time.time()
            hook.wait(timeout=10)
            ts = float(read_events(events)[-1]["ts"])
            startup.append((ts - spawned) * 1000.0)
            wake.append((woke - ts) * 1000.0)
    finally:
        watcher.close()
    return {
        "hook_startup_p50_ms": round(common.percentile(startup, 50), 2),
        "ts_to_waiter_wake_p50_ms": round(common.percentile(wake, 50), 2),
        "ts_to_waiter_wake_p95_ms": round(common.percentile(wake, 95), 2),
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


def measure_baseline(rig: Rig, root: Path, turns: list[Turn], interval: float, rng: random.Random) -> AgentSummary:
    """Type each prompt at a random phase of a fixed capture-pane tick; detect the reply on screen.

    States per turn: waiting to type (`type_at`), typed and waiting for the text to show (then
    Enter), running (only the tick's capture looks at the screen), then waiting for the end event
    (the hook may write it a moment after the reply is drawn) before the next turn is scheduled.
    """
    provider, tmux, server = rig.provider, rig.tmux, rig.server
    pane, home = rig.agent(f"base/{provider}", root)
    events_path = root / "events.jsonl"
    events_path.touch()
    tmux_bin = shutil.which("tmux") or "tmux"
    ready = DRIVER_PROVIDERS[provider]().is_ready
    pane.type(f"cd {shlex.quote(str(pane.workdir))} && {baseline_launch(home, events_path, root)}")
    wait_until(
        lambda: ready(common.capture(tmux_bin, tmux, pane)),
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
            if ready(common.capture(tmux_bin, tmux, pane)):
                script(server, provider, turn.reply)
                tmux.server.cmd("send-keys", "-t", pane.pane_id, "-l", "--", turn.prompt)
                phase, typed_at = "echo", now
            else:
                type_at = now + 0.02  # not at its prompt yet: codex drops an early Enter
        elif phase == "echo":
            screen = " ".join(normalize(line) for line in common.capture(tmux_bin, tmux, pane))
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
                lines = common.capture(tmux_bin, tmux, pane)
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
    summary = AgentSummary.of_turns(provider, f"poller capture-pane every {interval:g}s", samples, len(turns))
    summary.notes = notes
    return summary


# one agent ----------------------------------------------------------------------------------
def run_provider(
    provider: AgentProvider, binary: Path, n_turns: int, n_baseline: int, interval: float, rng: random.Random
) -> list[AgentSummary]:
    with ExitStack() as stack:
        tmp = common.temp_dir(stack, f"{SOCKET_PREFIX}{provider}-")
        server = ModelServer(default=text("(unscripted)")).start()
        stack.callback(server.stop)
        homes: list[AgentHome] = []

        def reap_all() -> None:  # registered before kill-server, so it runs after it too
            for home in homes:
                try:
                    home.reap()
                except RuntimeError as error:
                    common.log(f"cleanup: {error}")

        stack.callback(reap_all)
        tmux = common.tmux_server(stack, SOCKET_PREFIX, tmp)
        stack.callback(reap_all)  # and before it, so no agent is still talking to a dying server
        rig = Rig(provider, binary, tmux, server, homes)
        nonce = uuid.uuid4().hex[:6]
        common.log(f"{provider}: orchestrator, {n_turns} turn(s)")
        ours = measure_orchestrator(rig, tmp / "orchestrator", make_turns("orchestrator", n_turns, nonce), stack)
        common.log(f"{provider}: poller, {n_baseline} turn(s), capture-pane every {interval:g}s")
        base = measure_baseline(rig, tmp / "poller", make_turns("poller", n_baseline, nonce), interval, rng)
        ours.extra["signal_path"] = measure_signal_path(tmp / "probe")
        return [ours, base]


# reporting ----------------------------------------------------------------------------------
def evaluate(results: dict[str, list[AgentSummary]]) -> list[dict[str, Any]]:
    verdicts: list[dict[str, Any]] = []
    for ours, base in results.values():
        verdicts.append(reporting.p95_verdict("provider", ours, TARGET_P95_MS))
        verdicts += reporting.ratio_verdicts("provider", ours, base, "poller", TARGET_RATIO)
    return verdicts


def print_table(
    results: dict[str, list[AgentSummary]],
    verdicts: list[dict[str, Any]],
    skipped: dict[str, str],
    versions: dict[str, Any],
) -> None:
    reporting.print_header(f"{'agent':<8}", 5)
    reporting.print_rows(results, "<8", 5, "poller", lambda ours: f"   ({versions.get(ours.provider)})")
    for provider, why in skipped.items():
        print(f"{provider:<8}  skipped: {why}")
    print()
    print("where the orchestrator's time goes (measured beside the run, same machine):")
    for provider, (ours, _base) in results.items():
        read, sig = ours.extra.get("result_read") or {}, ours.extra.get("signal_path") or {}
        if sig:
            print(
                f"  {provider:<7} hook ts -> file watch awake: p50 {sig['ts_to_waiter_wake_p50_ms']:.1f} ms, "
                f"p95 {sig['ts_to_waiter_wake_p95_ms']:.1f} ms (hook start-up before ts: {sig['hook_startup_p50_ms']:.0f} ms)"
            )
        if read:
            print(
                f"  {provider:<7} provider result() at the last turn: {read['ms']:.1f} ms, called twice per turn "
                f"(transcript {read['bytes'] / 1024:.0f} KiB, {read['lines']} lines)"
            )
    reporting.print_targets(verdicts, lambda v: f"{v['provider']:<7}", 44)
    reporting.print_notes(results)


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
    common.exit_on_signals()
    rng = random.Random(args.seed)

    started = time.monotonic()
    results: dict[str, list[AgentSummary]] = {}
    skipped: dict[str, str] = {}
    versions: dict[str, str | None] = {}
    for provider in dict.fromkeys(args.providers):
        binary = find_agent(provider)
        if binary is None:
            skipped[provider] = install_hint(provider)
            common.log(f"{provider}: skipped: {skipped[provider]}")
            continue
        versions[provider] = agent_version(provider, binary)
        results[provider] = run_provider(provider, binary, args.turns, args.baseline_turns, args.poll_interval, rng)
    verdicts = evaluate(results)
    settings = {"poll_interval_s": args.poll_interval, "versions": versions, "skipped": skipped}
    table = lambda: print_table(results, verdicts, skipped, versions)  # noqa: E731
    reporting.report(args.json, started, settings, results, verdicts, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
