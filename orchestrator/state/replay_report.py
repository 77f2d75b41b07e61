"""Replay as a person reads it: the rebuilt summary and any differences from the DB, as text."""

from __future__ import annotations

from typing import Any


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
