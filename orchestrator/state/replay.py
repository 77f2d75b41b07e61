"""Audit replay: rebuild what happened from `orchestrator-actions.jsonl` alone.

`replay(events)` folds the events, in log order, into counts by type and
session, the time span, per-session state (the last command result, the
failure streak, stall count, blocked flag, queued and running commands, max
queue depth) and the stall and streak episodes. `verify_db` compares that
rebuilt state with the state DB; any difference means the log is not a
complete record of what the orchestrator did.

The folding mirrors the orchestrator's own rules:
- a `failed` result adds one to the session's streak, `succeeded` resets it,
  `stalled` and `cancelled` leave it; `session_unblocked` resets it and the block;
- every `stall_detected` adds one to `stall_count`;
- `command_dispatched` moves a command from queued to running, `command_result`
  ends it, `stall_retry` and a "never started" `command_recovered` queue it again.

For agent sessions and for the moments a person is needed it also keeps:
- the agent's turns (a session is an agent session once its log shows a turn's reply or tools,
  or a tool request) and their tool calls;
- each tool request (`approval_requested` → `approval_answered`): the policy's verdict, the
  decision, who made it and how long the agent waited (`waited_s`, the engine's own measure);
  an answer whose keys were not delivered does not end the wait;
- each question (`input_requested` → `reply_sent`), timed from the two lines;
- the time spent waiting for a person: the escalated requests a person answered plus the
  questions a reply answered. A wait that never ended in the log (open, or the command ended
  first) is listed but not counted: its length is not known.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.clock import parse_iso_utc
from orchestrator.model import TERMINAL_STATUSES
from orchestrator.redact import redact
from orchestrator.state.snapshot import StateSnapshot

#: The fields of `last_command_result` the audit log carries (it has no start/finish times).
RESULT_FIELDS = ("command_id", "command", "status", "exit_code", "duration_s", "output_tail")
#: Metadata keys a `metadata_set` can overwrite behind the log's back.
REPLAYED_KEYS = ("last_command_result", "failure_streak", "stall_count", "blocked")
#: How results whose `command_result` line carries no status are counted.
UNKNOWN_STATUS = "unknown"
#: The `detail` of an `approval_answered` / `reply_sent` whose keys never reached the pane.
UNDELIVERED = ("keys not delivered", "not delivered")


def seconds_between(start: object, end: object) -> float | None:
    """Seconds from one audit timestamp to another (None when either is missing or unreadable)."""
    if not isinstance(start, str) or not isinstance(end, str):
        return None
    try:
        return round(_parse_ts(end) - _parse_ts(start), 6)
    except ValueError:
        return None


def _parse_ts(text: str) -> float:
    try:
        return parse_iso_utc(text)
    except ValueError:  # the schema allows a timestamp without the fraction
        return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc).timestamp()


def _label(value: object) -> str:
    """A label read from an unvalidated line: a missing one must not break sorting the counts."""
    return value if isinstance(value, str) else UNKNOWN_STATUS


def wait_stats(values: Iterable[float]) -> dict[str, Any]:
    """count, total_s, mean_s, max_s of some waits (mean and max None when there are none)."""
    waits = list(values)
    total = round(sum(waits), 6)
    return {
        "count": len(waits),
        "total_s": total,
        "mean_s": round(total / len(waits), 6) if waits else None,
        "max_s": round(max(waits), 6) if waits else None,
    }


@dataclass
class SessionReplay:
    name: str
    events: int = 0
    results: Counter[str] = field(default_factory=Counter)
    last_command_result: dict[str, Any] | None = None
    failure_streak: int = 0
    stall_count: int = 0
    blocked: bool = False
    queued: dict[int, str] = field(default_factory=dict)
    running: dict[int, str] = field(default_factory=dict)
    # ids the engine has acted on: `send` appends its queued line from its own process after the
    # commit, so the engine's dispatch (even its result) may precede that line in the log
    progressed: set[int] = field(default_factory=set)
    dispatched: int = 0
    max_queue_depth: int = 0
    overridden: set[str] = field(default_factory=set)
    agent: bool = False
    tool_calls: int = 0
    approval_verdicts: Counter[str] = field(default_factory=Counter)
    approval_episodes: list[dict[str, Any]] = field(default_factory=list)
    input_episodes: list[dict[str, Any]] = field(default_factory=list)

    def rates(self) -> dict[str, float | None]:
        return rates(self.results)

    def approvals(self) -> dict[str, Any]:
        answered = [e for e in self.approval_episodes if e["outcome"] == "answered"]
        decisions: dict[str, Counter[str]] = {}
        for e in answered:
            decisions.setdefault(e["decision"], Counter())[e["by"]] += 1
        return {
            "requested": sum(self.approval_verdicts.values()),
            "by_verdict": dict(sorted(self.approval_verdicts.items())),
            "answered": len(answered),
            "decisions": {d: dict(sorted(by.items())) for d, by in sorted(decisions.items())},
            "open": sum(e["outcome"] == "open" for e in self.approval_episodes),
            "wait_s": {
                by: wait_stats(e["waited_s"] for e in answered if e["by"] == by)
                for by in sorted({e["by"] for e in answered})
            },
        }

    def questions(self) -> dict[str, Any]:
        replied = [e for e in self.input_episodes if e["outcome"] == "replied"]
        return {
            "asked": len(self.input_episodes),
            "replied": len(replied),
            "open": sum(e["outcome"] == "open" for e in self.input_episodes),
            "wait_s": wait_stats(e["waited_s"] for e in replied),
        }

    def person_wait(self) -> dict[str, Any]:
        """The time this session spent waiting for a person, from the waits that ended."""
        approvals = [
            e["waited_s"] for e in self.approval_episodes if e["outcome"] == "answered" and e["by"] == "person"
        ]
        questions = [e["waited_s"] for e in self.input_episodes if e["outcome"] == "replied"]
        return {
            "seconds": round(sum(approvals) + sum(questions), 6),
            "approvals": len(approvals),
            "approvals_s": round(sum(approvals), 6),
            "questions": len(questions),
            "questions_s": round(sum(questions), 6),
            "open": sum(e["outcome"] == "open" for e in (*self.approval_episodes, *self.input_episodes)),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "results": dict(self.results),
            **self.rates(),
            "last_command_result": self.last_command_result,
            "failure_streak": self.failure_streak,
            "stall_count": self.stall_count,
            "blocked": self.blocked,
            "dispatched": self.dispatched,
            "max_queue_depth": self.max_queue_depth,
            "queued": sorted(self.queued),
            "running": sorted(self.running),
            "overridden_by_metadata_set": sorted(self.overridden),
            "kind": "agent" if self.agent else "shell",
            "turns": sum(self.results.values()) if self.agent else 0,
            "tool_calls": self.tool_calls,
            "approvals": self.approvals(),
            "questions": self.questions(),
            "person_wait": self.person_wait(),
        }


def rates(results: Counter[str]) -> dict[str, float | None]:
    """success_rate = succeeded / all results, failure_rate = failed / all results (None when none)."""
    total = sum(results.values())
    if not total:
        return {"success_rate": None, "failure_rate": None}
    return {"success_rate": results["succeeded"] / total, "failure_rate": results["failed"] / total}


@dataclass
class Replay:
    events: int = 0
    by_event: Counter[str] = field(default_factory=Counter)
    by_session: dict[str, Counter[str]] = field(default_factory=dict)
    first_ts: str | None = None
    last_ts: str | None = None
    sessions: dict[str, SessionReplay] = field(default_factory=dict)
    last_command: dict[str, Any] | None = None
    stall_episodes: list[dict[str, Any]] = field(default_factory=list)
    streak_episodes: list[dict[str, Any]] = field(default_factory=list)
    approval_episodes: list[dict[str, Any]] = field(default_factory=list)
    input_episodes: list[dict[str, Any]] = field(default_factory=list)
    _open_stalls: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)
    _open_streaks: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _open_approvals: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _open_inputs: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    # folding -------------------------------------------------------------------------
    def session(self, name: str) -> SessionReplay:
        if name not in self.sessions:
            self.sessions[name] = SessionReplay(name)
        return self.sessions[name]

    def apply(self, event: dict[str, Any]) -> None:
        kind, name, ts = event.get("event", "?"), event.get("session"), event.get("ts")
        self.events += 1
        self.by_event[kind] += 1
        self.first_ts = self.first_ts or ts
        self.last_ts = ts or self.last_ts
        if not name:
            return
        self.by_session.setdefault(name, Counter())[kind] += 1
        s = self.session(name)
        s.events += 1
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(s, event)

    def _depth(self, s: SessionReplay, event: dict[str, Any]) -> None:
        s.max_queue_depth = max(s.max_queue_depth, int(event.get("queue_depth") or 0), len(s.queued))

    def _on_command_queued(self, s: SessionReplay, e: dict[str, Any]) -> None:
        if e["command_id"] not in s.progressed:  # a late line must not queue it again
            s.queued[e["command_id"]] = e.get("command", "")
        self._depth(s, e)

    def _on_command_dispatched(self, s: SessionReplay, e: dict[str, Any]) -> None:
        s.progressed.add(e["command_id"])
        s.queued.pop(e["command_id"], None)
        s.running[e["command_id"]] = e.get("command", "")
        s.dispatched += 1
        self._depth(s, e)

    def _on_command_result(self, s: SessionReplay, e: dict[str, Any]) -> None:
        command_id, status = e["command_id"], e.get("status")
        s.progressed.add(command_id)
        s.queued.pop(command_id, None)
        s.running.pop(command_id, None)
        # an unvalidated line may lack the status: a None key would break sorting the counts
        s.results[status if isinstance(status, str) else UNKNOWN_STATUS] += 1
        s.last_command_result = {k: e.get(k) for k in RESULT_FIELDS}
        s.overridden.discard("last_command_result")
        if status == "failed":
            s.failure_streak += 1
            s.overridden.discard("failure_streak")
        elif status == "succeeded":
            s.failure_streak = 0
            s.overridden.discard("failure_streak")
        self.last_command = {"session": s.name, "ts": e.get("ts"), **s.last_command_result}
        stall = self._open_stalls.pop(command_id, None)
        if stall is not None:
            stall.update(ended=e.get("ts"), outcome=status)
        if "reply" in e or isinstance(e.get("tools"), list):  # only an agent's turn carries them
            s.agent = True
        if isinstance(e.get("tools"), list):
            s.tool_calls += len(e["tools"])
        for waits in (self._open_approvals, self._open_inputs):
            episode = waits.get(s.name)
            if episode is not None and episode.get("command_id") == command_id:
                del waits[s.name]  # the command ended while it waited: how long is not known
                episode.update(ended=e.get("ts"), outcome="ended")

    def _on_command_recovered(self, s: SessionReplay, e: dict[str, Any]) -> None:
        s.progressed.add(e["command_id"])
        if str(e.get("detail", "")).startswith("never started"):
            s.running.pop(e["command_id"], None)
            s.queued[e["command_id"]] = e.get("command", "")
        else:
            s.running[e["command_id"]] = e.get("command", "")

    def _on_stall_detected(self, s: SessionReplay, e: dict[str, Any]) -> None:
        s.stall_count += 1
        s.overridden.discard("stall_count")
        episode = self._open_stalls.get(e.get("command_id", -1))
        if episode is None:
            episode = {
                "session": s.name,
                "command_id": e.get("command_id"),
                "command": e.get("command"),
                "started": e.get("ts"),
                "ended": None,
                "stalls": 0,
                "outcome": "open",
            }
            self._open_stalls[e.get("command_id", -1)] = episode
            self.stall_episodes.append(episode)
        episode["stalls"] += 1

    def _on_stall_retry(self, s: SessionReplay, e: dict[str, Any]) -> None:
        s.progressed.add(e["command_id"])
        s.running.pop(e["command_id"], None)
        s.queued[e["command_id"]] = e.get("command", "")

    def _on_failure_streak(self, s: SessionReplay, e: dict[str, Any]) -> None:
        episode = {
            "session": s.name,
            "started": e.get("ts"),
            "ended": None,
            "failures": s.failure_streak,
            "last_command_id": e.get("command_id"),
            "last_command": e.get("command"),
            "detail": e.get("detail"),
            "outcome": "open",
        }
        self._open_streaks[s.name] = episode
        self.streak_episodes.append(episode)

    def _on_session_blocked(self, s: SessionReplay, e: dict[str, Any]) -> None:
        s.blocked = True
        s.overridden.discard("blocked")

    def _on_session_unblocked(self, s: SessionReplay, e: dict[str, Any]) -> None:
        s.blocked = False
        s.failure_streak = 0
        s.overridden.difference_update({"blocked", "failure_streak"})
        episode = self._open_streaks.pop(s.name, None)
        if episode is not None:
            episode.update(ended=e.get("ts"), outcome="unblocked")

    def _on_metadata_set(self, s: SessionReplay, e: dict[str, Any]) -> None:
        if e.get("detail") in REPLAYED_KEYS:
            s.overridden.add(e["detail"])

    # a person is needed: tool requests and questions --------------------------------------
    def _on_approval_requested(self, s: SessionReplay, e: dict[str, Any]) -> None:
        s.agent = True
        verdict = _label(e.get("verdict"))
        s.approval_verdicts[verdict] += 1
        earlier = self._open_approvals.pop(s.name, None)
        if earlier is not None:  # a new request while one was open: the first was answered in the pane
            earlier.update(ended=e.get("ts"), outcome="ended")
        episode = {
            "session": s.name,
            "command_id": e.get("command_id"),
            "command": e.get("command"),
            "tool": e.get("tool"),
            "tool_command": e.get("tool_command"),
            "verdict": verdict,
            "requested": e.get("ts"),
            "queued": None,
            "answered": None,
            "ended": None,
            "decision": None,
            "by": None,
            "reason": e.get("detail"),
            "waited_s": None,
            "outcome": "open",
        }
        self._open_approvals[s.name] = episode
        s.approval_episodes.append(episode)
        self.approval_episodes.append(episode)

    def _on_approval_queued(self, s: SessionReplay, e: dict[str, Any]) -> None:
        episode = self._open_approvals.get(s.name)
        if episode is not None and episode["queued"] is None:
            episode["queued"] = e.get("ts")

    def _on_approval_answered(self, s: SessionReplay, e: dict[str, Any]) -> None:
        s.agent = True
        if str(e.get("detail", "")).startswith(UNDELIVERED):
            return  # the keys did not reach the pane: the agent still waits
        episode = self._open_approvals.pop(s.name, None)
        if episode is None:  # its request is before the replayed window (--limit) or missing
            episode = {
                "session": s.name,
                "command_id": e.get("command_id"),
                "command": e.get("command"),
                "tool": e.get("tool"),
                "tool_command": e.get("tool_command"),
                "verdict": None,
                "requested": None,
                "queued": None,
            }
            s.approval_episodes.append(episode)
            self.approval_episodes.append(episode)
        waited = e.get("waited_s")
        if not isinstance(waited, (int, float)) or isinstance(waited, bool):
            waited = seconds_between(episode["requested"], e.get("ts")) or 0.0
        episode.update(
            answered=e.get("ts"),
            ended=e.get("ts"),
            decision=_label(e.get("decision")),
            by=_label(e.get("by")),
            reason=e.get("detail"),
            waited_s=round(float(waited), 6),
            outcome="answered",
        )

    def _on_input_requested(self, s: SessionReplay, e: dict[str, Any]) -> None:
        earlier = self._open_inputs.pop(s.name, None)
        if earlier is not None:  # asked again with no reply typed: answered in the pane
            earlier.update(ended=e.get("ts"), outcome="ended")
        episode = {
            "session": s.name,
            "command_id": e.get("command_id"),
            "command": e.get("command"),
            "question": e.get("detail"),
            "requested": e.get("ts"),
            "queued": None,
            "ended": None,
            "waited_s": None,
            "outcome": "open",
        }
        self._open_inputs[s.name] = episode
        s.input_episodes.append(episode)
        self.input_episodes.append(episode)

    def _on_reply_queued(self, s: SessionReplay, e: dict[str, Any]) -> None:
        episode = self._open_inputs.get(s.name)
        if episode is not None and episode["queued"] is None:
            episode["queued"] = e.get("ts")

    def _on_reply_sent(self, s: SessionReplay, e: dict[str, Any]) -> None:
        if str(e.get("detail", "")).startswith(UNDELIVERED):
            return
        episode = self._open_inputs.pop(s.name, None)
        if episode is not None:
            waited = seconds_between(episode["requested"], e.get("ts"))
            episode.update(ended=e.get("ts"), waited_s=max(0.0, waited or 0.0), outcome="replied")

    # summaries -----------------------------------------------------------------------
    def results(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for s in self.sessions.values():
            total.update(s.results)
        return total

    def span_seconds(self) -> float | None:
        if not isinstance(self.first_ts, str) or not isinstance(self.last_ts, str):
            return None
        try:
            return round(parse_iso_utc(self.last_ts) - parse_iso_utc(self.first_ts), 6)
        except ValueError:
            return None

    def as_dict(self) -> dict[str, Any]:
        results = self.results()
        return {
            "events": self.events,
            "span": {"first": self.first_ts, "last": self.last_ts, "seconds": self.span_seconds()},
            "by_event": dict(sorted(self.by_event.items())),
            "by_session": {k: dict(sorted(v.items())) for k, v in sorted(self.by_session.items())},
            "commands": {
                "results": dict(results),
                **rates(results),
                "dispatched": sum(s.dispatched for s in self.sessions.values()),
                "max_queue_depth": max((s.max_queue_depth for s in self.sessions.values()), default=0),
                "last_command": self.last_command,
            },
            "sessions": {name: s.as_dict() for name, s in sorted(self.sessions.items())},
            "stall_episodes": self.stall_episodes,
            "streak_episodes": self.streak_episodes,
            "agents": self.agents(),
            "approval_episodes": self.approval_episodes,
            "input_episodes": self.input_episodes,
        }

    def agents(self) -> dict[str, Any]:
        """Agent turns, tool requests and the time people were waited for, over all sessions."""
        agents = [s for s in self.sessions.values() if s.agent]
        decisions: dict[str, Counter[str]] = {}
        waits: dict[str, list[float]] = {}
        for e in self.approval_episodes:
            if e["outcome"] == "answered":
                decisions.setdefault(e["decision"], Counter())[e["by"]] += 1
                waits.setdefault(e["by"], []).append(e["waited_s"])
        verdicts: Counter[str] = Counter()
        for s in self.sessions.values():
            verdicts.update(s.approval_verdicts)
        person = [s.person_wait() for s in self.sessions.values()]
        return {
            "sessions": sorted(s.name for s in agents),
            "turns": sum(sum(s.results.values()) for s in agents),
            "tool_calls": sum(s.tool_calls for s in agents),
            "approvals": {
                "requested": sum(verdicts.values()),
                "by_verdict": dict(sorted(verdicts.items())),
                "decisions": {d: dict(sorted(by.items())) for d, by in sorted(decisions.items())},
                "wait_s": {by: wait_stats(v) for by, v in sorted(waits.items())},
            },
            "person_wait_s": round(sum(p["seconds"] for p in person), 6),
        }


def select(
    events: Iterable[dict[str, Any]], session: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Filter by session first, then keep the last `limit` events."""
    chosen = [e for e in events if session is None or e.get("session") == session]
    return chosen[-limit:] if limit else chosen


def replay(events: Iterable[dict[str, Any]]) -> Replay:
    result = Replay()
    for event in events:
        result.apply(event)
    return result


# verifying against the state DB ------------------------------------------------------------
def _db_last_result(metadata: dict[str, Any]) -> dict[str, Any] | None:
    last = metadata.get("last_command_result")
    if not isinstance(last, dict):
        return None
    subset = {k: last.get(k) for k in RESULT_FIELDS}
    if isinstance(subset["command"], str):
        subset["command"] = redact(subset["command"])  # the log stores commands redacted
    return subset


def verify_db(result: Replay, snapshot: StateSnapshot, session: str | None = None) -> list[str]:
    """Every way the replayed state differs from the DB, as readable lines (empty: identical)."""
    db_sessions = {row["name"]: row["metadata"] for row in snapshot.sessions()}
    counts = snapshot.status_counts()
    queued = {k: [r["id"] for r in v] for k, v in snapshot.commands_in("queued").items()}
    running = {k: [r["id"] for r in v] for k, v in snapshot.commands_in("running").items()}
    names = sorted(set(db_sessions) | set(result.sessions) | set(counts))
    if session is not None:
        names = [n for n in names if n == session]
    differences: list[str] = []
    for name in names:
        replayed = result.sessions.get(name) or SessionReplay(name)
        metadata = db_sessions.get(name)
        if metadata is None:
            differences.append(f"{name}: in the audit log but not in the state DB")
            metadata = {}
        expected = {
            "last_command_result": _db_last_result(metadata),
            "failure_streak": int(metadata.get("failure_streak") or 0),
            "stall_count": int(metadata.get("stall_count") or 0),
            "blocked": bool(metadata.get("blocked")),
        }
        for key, db_value in expected.items():
            log_value = getattr(replayed, key)
            if key in replayed.overridden or log_value == db_value:
                continue
            differences.append(f"{name}: {key}: log {_show(log_value)}, DB {_show(db_value)}")
        db_results = {k: v for k, v in counts.get(name, {}).items() if k in TERMINAL_STATUSES}
        if db_results != dict(+replayed.results):
            differences.append(
                f"{name}: results by status: log {dict(sorted(replayed.results.items()))}, "
                f"DB {dict(sorted(db_results.items()))}"
            )
        for label, db_ids, log_ids in (
            ("queued", queued.get(name, []), sorted(replayed.queued)),
            ("running", running.get(name, []), sorted(replayed.running)),
        ):
            if db_ids != log_ids:
                differences.append(f"{name}: {label} commands: log {log_ids}, DB {db_ids}")
    return differences


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={v!r}" for k, v in value.items()) + "}"
    return repr(value)


# the human-readable report ---------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _result_line(last: dict[str, Any]) -> str:
    return (
        f"#{last.get('command_id')} `{last.get('command')}` → {last.get('status')} "
        f"exit={last.get('exit_code')} ({last.get('duration_s')} s)"
    )


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} s"


def _attention_lines(s: dict[str, Any]) -> list[str]:
    """A session's agent turns, tool requests and questions, when it had any."""
    lines = []
    approvals, questions, person = s["approvals"], s["questions"], s["person_wait"]
    if s["kind"] == "agent":
        decided = ", ".join(
            f"{decision} by {by} {n}" for decision, bys in approvals["decisions"].items() for by, n in bys.items()
        )
        waits = "; ".join(
            f"{by} waited {st['count']}× mean {_seconds(st['mean_s'])} max {_seconds(st['max_s'])}"
            for by, st in approvals["wait_s"].items()
        )
        lines.append(
            f"    agent: {s['turns']} turn(s), {s['tool_calls']} tool call(s); "
            f"{approvals['requested']} tool request(s){' (' + decided + ')' if decided else ''}"
            f"{', ' + str(approvals['open']) + ' open' if approvals['open'] else ''}"
            f"{'; ' + waits if waits else ''}"
        )
    if questions["asked"]:
        lines.append(
            f"    questions: {questions['asked']} asked, {questions['replied']} replied"
            f"{', ' + str(questions['open']) + ' open' if questions['open'] else ''}"
        )
    if person["approvals"] or person["questions"] or person["open"]:
        parts = [
            f"{person[key]} {label}(s) {_seconds(person[key + '_s'])}"
            for key, label in (("approvals", "approval"), ("questions", "question"))
            if person[key]
        ]
        lines.append(
            f"    waiting for a person: {_seconds(person['seconds'])}"
            f"{' (' + ', '.join(parts) + ')' if parts else ''}"
            f"{'; ' + str(person['open']) + ' still waiting' if person['open'] else ''}"
        )
    return lines


def _approval_line(ep: dict[str, Any]) -> str:
    what = f"{ep['tool']} `{ep['tool_command']}`" if ep.get("tool_command") else str(ep.get("tool"))
    head = f"{ep['session']} #{ep['command_id']} {what}: {ep.get('verdict') or '?'}"
    if ep["outcome"] == "answered":
        return f"{head} → {ep['decision']} by {ep['by']} after {_seconds(ep['waited_s'])} at {ep['answered']}"
    if ep["outcome"] == "ended":
        return f"{head} → the turn ended while it waited ({ep['ended']})"
    return f"{head} → still waiting since {ep['requested']}"


def _input_line(ep: dict[str, Any]) -> str:
    head = f"{ep['session']} #{ep['command_id']} `{ep.get('question')}`"
    if ep["outcome"] == "replied":
        return f"{head}: replied after {_seconds(ep['waited_s'])} at {ep['ended']}"
    if ep["outcome"] == "ended":
        return f"{head}: the command ended without a reply typed ({ep['ended']})"
    return f"{head}: still waiting since {ep['requested']}"


def render_text(summary: dict[str, Any], problems: list[str], log: str) -> str:
    commands = summary["commands"]
    span = summary["span"]
    lines = [f"audit log: {log} ({summary['events']} events, {len(problems)} problem(s))"]
    if span["first"]:
        lines.append(f"time span: {span['first']} → {span['last']} ({span['seconds']} s)")
    lines.append("events by type: " + (", ".join(f"{k} {v}" for k, v in summary["by_event"].items()) or "none"))
    for name, counts in summary["by_session"].items():
        lines.append(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    results = ", ".join(f"{k} {v}" for k, v in sorted(commands["results"].items())) or "none"
    lines.append(
        f"commands: {results}; success rate {_pct(commands['success_rate'])}, "
        f"failure rate {_pct(commands['failure_rate'])}; dispatched {commands['dispatched']}; "
        f"max queue depth {commands['max_queue_depth']}"
    )
    if commands["last_command"]:
        last = commands["last_command"]
        lines.append(f"last command: {last['session']} {_result_line(last)} at {last['ts']}")
    lines.append("sessions:")
    for name, s in summary["sessions"].items():
        lines.append(
            f"  {name}: {s['events']} events; success {_pct(s['success_rate'])}, "
            f"failure {_pct(s['failure_rate'])}; streak {s['failure_streak']}"
            f"{' BLOCKED' if s['blocked'] else ''}; stalls {s['stall_count']}; "
            f"max queue depth {s['max_queue_depth']}; queued {s['queued']}; running {s['running']}"
        )
        if s["last_command_result"]:
            lines.append(f"    last: {_result_line(s['last_command_result'])}")
        lines += _attention_lines(s)
    lines.append(f"stall episodes: {len(summary['stall_episodes']) or 'none'}")
    for ep in summary["stall_episodes"]:
        lines.append(
            f"  {ep['session']} #{ep['command_id']} `{ep['command']}`: {ep['stalls']} stall(s) from "
            f"{ep['started']}, outcome {ep['outcome']}"
        )
    lines.append(f"streak episodes: {len(summary['streak_episodes']) or 'none'}")
    for ep in summary["streak_episodes"]:
        lines.append(
            f"  {ep['session']}: {ep['failures']} consecutive failures at {ep['started']}, "
            f"last #{ep['last_command_id']} `{ep['last_command']}`; {ep['outcome']}"
            f"{' at ' + ep['ended'] if ep['ended'] else ''}"
        )
    lines.append(f"approval episodes: {len(summary['approval_episodes']) or 'none'}")
    lines += [f"  {_approval_line(ep)}" for ep in summary["approval_episodes"]]
    lines.append(f"input episodes: {len(summary['input_episodes']) or 'none'}")
    lines += [f"  {_input_line(ep)}" for ep in summary["input_episodes"]]
    if problems:
        lines.append("problems (skipped):")
        lines += [f"  {p}" for p in problems]
    return "\n".join(lines)
