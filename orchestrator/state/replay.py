"""Audit replay: rebuild what happened from `orchestrator-actions.jsonl` alone.

`replay(events)` folds the events, in log order, into counts by type and
session, the time span, per-session state (the last command result, the
failure streak, stall count, blocked flag, queued and running commands, max
queue depth) and the stall and streak episodes. `replay_verify.verify_db`
compares that rebuilt state with the state DB; any difference means the log is
not a complete record of what the orchestrator did; `replay_report` renders it.

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
