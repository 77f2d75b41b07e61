"""`tmux-agent status`: each session's report (state, running command, heartbeat, last result,
queue) as JSON or text; also the state opening and heartbeat warning the other commands share."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.cli.common import config_from_args
from orchestrator.clock import SystemClock, parse_iso_utc
from orchestrator.config import Config
from orchestrator.envfile import EnvSource
from orchestrator.metadata import clean_metadata
from orchestrator.redact import redact, redact_obj
from orchestrator.state.audit import AuditLog
from orchestrator.state.open import open_store
from orchestrator.state.port import Store

if TYPE_CHECKING:
    from orchestrator.model import CommandRow
    from orchestrator.payloads import PlanReport


def _warn(message: str) -> None:
    print(f"tmux-agent: warning: {message}", file=sys.stderr)


def _open(args: argparse.Namespace) -> tuple[Config, Store, AuditLog]:
    config = config_from_args(args)
    # learn the secrets, so the audit lines we write mask them; a file we cannot read is one warning
    EnvSource(config.settings.env_file, warn=_warn).current()
    store = open_store(config)
    if store.dialect == "postgresql":  # the whole fleet: the sessions every host claimed
        from orchestrator.cli.fleet_view import with_claimed_sessions
        from orchestrator.state.pg_store import PgStateStore

        assert isinstance(store, PgStateStore)
        config = with_claimed_sessions(config, store)
    return config, store, AuditLog(config.audit_log)


def _down_hosts(config: Config, store: Store) -> dict[str, float]:
    """The fleet's hosts that are down now ({host: heartbeat age}); none on SQLite."""
    if store.dialect != "postgresql":
        return {}
    from orchestrator.cli.fleet_view import down_hosts
    from orchestrator.state.pg_store import PgStateStore

    assert isinstance(store, PgStateStore)
    return down_hosts(config, store)


def _metadata(store: Store, session: str) -> dict[str, Any]:
    """The session's metadata as the product reads it: a stored value that does not fit the schema
    is absent (with one warning on stderr)."""
    return clean_metadata(store.raw_metadata(session), session, warn=_warn)


# a running orchestrator writes every session's `orchestrator_heartbeat` about every 2 s
HEARTBEAT_FRESH_SECONDS = 10.0
OUTPUT_TAIL_SHOWN = 5  # lines of a running command's output in the text status
REPLY_SHOWN = 200  # characters of an agent's last reply in the text status (--json has it whole)
PROMPT_SHOWN = 120  # characters of an agent's prompt on one line of the text status
ASKING_STATES = ("waiting_input", "waiting_approval")  # states whose `running.question` is shown


def _text(value: object) -> str | None:
    """A metadata value that should be a string; anything else counts as absent."""
    return value if isinstance(value, str) and value.strip() else None


def _timestamp(value: object) -> float | None:
    """An ISO UTC timestamp as epoch seconds; anything unreadable counts as absent."""
    text = _text(value)
    if text is None:
        return None
    try:
        return parse_iso_utc(text)
    except ValueError:
        pass
    try:
        moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)).timestamp()


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


@dataclass(frozen=True)
class Heartbeat:
    """A session's metadata `orchestrator_heartbeat`, seen at `now`."""

    at: str | None
    age_s: float | None

    @classmethod
    def of(cls, metadata: Mapping[str, Any], now: float) -> Heartbeat:
        at = _text(metadata.get("orchestrator_heartbeat"))
        epoch = _timestamp(at)
        if at is None or epoch is None:
            return cls(None, None)
        return cls(at, round(max(0.0, now - epoch), 1))

    @property
    def fresh(self) -> bool:
        return self.age_s is not None and self.age_s < HEARTBEAT_FRESH_SECONDS

    def last(self) -> str:
        return "never" if self.at is None or self.age_s is None else f"{self.at}, {_duration(self.age_s)} ago"

    def describe(self) -> str:
        if self.at is None or self.age_s is None:
            return "no orchestrator heartbeat"
        if self.fresh:
            return f"orchestrator heartbeat {_duration(self.age_s)} ago"
        return f"STALE (last heartbeat {self.last()})"

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "age_s": self.age_s, "fresh": self.fresh}


def warn_unsupervised(store: Store, session: str, what: str) -> None:
    """One warning line on stderr when no running orchestrator will pick up what was just queued."""
    beat = Heartbeat.of(_metadata(store, session), SystemClock().now())
    if not beat.fresh:
        print(
            f"tmux-agent: warning: no orchestrator is running for {session} (last heartbeat: {beat.last()}); "
            f"{what} waits in the queue until one starts (tmux-agent run)",
            file=sys.stderr,
        )


def _short(text: str, limit: int) -> str:
    """One line of at most `limit` characters: whitespace runs become one space, a cut ends in `…`."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: max(0, limit - 1)].rstrip() + "…"


def _last_reply(last: object) -> str | None:
    """An agent turn's reply, from `last_command_result.reply` (None for a shell command's result)."""
    return last.get("reply") if isinstance(last, dict) and isinstance(last.get("reply"), str) else None


def _last_tools(last: object) -> list[dict[str, str | None]] | None:
    """The tool calls of an agent's last turn as `{name, command}` (`command` for shell tools, else
    None); None when the last result holds no tool list (a shell command's result)."""
    tools = last.get("tools") if isinstance(last, dict) else None
    if not isinstance(tools, list):
        return None
    out: list[dict[str, str | None]] = []
    for tool in tools:
        if isinstance(tool, dict):
            name, command = tool.get("name"), tool.get("command")
            out.append(
                {
                    "name": name if isinstance(name, str) else "?",
                    "command": command if isinstance(command, str) else None,
                }
            )
    return out


def _tools_text(tools: list[dict[str, str | None]]) -> str:
    if not tools:
        return "none"
    return "; ".join(
        f"{t['name']}: {_short(t['command'], PROMPT_SHOWN)}" if t["command"] else str(t["name"]) for t in tools
    )


def _running_report(row: CommandRow | None, live: Mapping[str, Any], now: float) -> dict[str, Any] | None:
    """The session's running command (its `running` row), with the engine's output tail if it wrote one."""
    if row is None:
        return None
    started = _timestamp(row.started_at)
    return {
        "id": row.id,
        "command": redact(row.command),
        "started_at": row.started_at,
        "elapsed_s": None if started is None else round(max(0.0, now - started), 1),
        "output_tail": _text(live.get("output_tail")),
    }


def _live(metadata: Mapping[str, Any], row: CommandRow | None) -> Mapping[str, Any]:
    """Metadata `running`, unless it is not an object or speaks of another command than the row."""
    live = metadata.get("running")
    if not isinstance(live, dict):
        return {}
    if row is not None and live.get("command_id") is not None and live.get("command_id") != row.id:
        return {}
    return live


def _for_status_lines(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata with only object-shaped recommendations, so odd values never reach status_lines."""
    clean = dict(metadata)
    next_actions = clean.get("next_actions")
    if isinstance(next_actions, dict):
        recs = next_actions.get("recommendations")
        clean["next_actions"] = {
            **next_actions,
            "recommendations": [r for r in recs if isinstance(r, dict)] if isinstance(recs, list) else [],
        }
    return clean


def _has_assist_state(metadata: Mapping[str, Any]) -> bool:
    """A plan or suggestions to print. Only then is the assist layer imported (its AI client,
    metrics and Markdown parser are most of status's cost); without them `status_lines` prints nothing."""
    next_actions = metadata.get("next_actions")
    return isinstance(metadata.get("task_decomposition"), dict) or (
        isinstance(next_actions, dict) and bool(next_actions.get("recommendations"))
    )


def _plan_progress(plan: object) -> PlanReport | None:
    """`plan_progress`, importing the assist layer only for a session that has a plan."""
    if not isinstance(plan, dict):
        return None
    from orchestrator.assist.plan_executor import plan_progress

    return plan_progress(plan)


def cmd_status(args: argparse.Namespace) -> int:
    # here, not at the top: send, reply and approve share this module and need none of them
    from orchestrator.notify.dead import DEAD_SQL, dead_line, dead_summary
    from orchestrator.state.outbox import Outbox

    config, store, _ = _open(args)
    names = [config.session(args.session).name] if args.session else [s.name for s in config.fleet_sessions]
    depths = store.queue_depths()
    now = SystemClock().now()
    running_rows = {row.session: row for row in reversed(store.running())}
    down = _down_hosts(config, store)
    report: list[dict[str, Any]] = []
    shown: dict[str, dict[str, Any]] = {}
    for name in names:
        raw = store.raw_metadata(name)
        metadata = shown[name] = clean_metadata(raw, name, warn=_warn)
        session = config.session(name)
        row = running_rows.get(name)
        live = _live(metadata, row)
        state = _text(metadata.get("state"))
        state_detail = _text(metadata.get("state_detail"))
        if session.host in down:  # its engine is gone: what it last reported is history, not a state
            from orchestrator.cli.fleet_view import HOST_DOWN, host_down_detail

            state, state_detail = HOST_DOWN, host_down_detail(session.host, down[session.host], state)
        last = metadata.get("last_command_result")
        report.append(
            {
                "name": name,
                "target": session.target,
                "host": session.host,
                "kind": session.kind,
                "provider": session.provider,
                "metadata": raw,  # the whole stored object, values that do not fit included
                "queue_depth": depths.get(name, 0),
                "queued": [{"id": r.id, "command": redact(r.command)} for r in store.queued(name)],
                "recent": [redact_obj(r.as_dict()) for r in store.commands(name, limit=args.limit)],
                "plan_progress": _plan_progress(metadata.get("task_decomposition")),
                "state": state,
                "state_detail": state_detail,
                "question": _text(live.get("question")) if state in ASKING_STATES else None,
                "pending_approval": metadata.get("pending_approval") if state == "waiting_approval" else None,
                "running": _running_report(row, live, now),
                "heartbeat": Heartbeat.of(metadata, now).as_dict(),
                "last_reply": _last_reply(last),
                "last_tools": _last_tools(last),
            }
        )
    outbox = Outbox(store)
    notifications = outbox.health()
    notifications["pending"] = len(outbox.pending())
    notifications["dead"] = dead_summary(store.query(DEAD_SQL))
    if args.json:
        print(json.dumps({"sessions": report, "notifications": notifications}, ensure_ascii=False, indent=2))
        return 0
    if notifications.get("state") == "degraded":
        print(f"notifications DEGRADED: {notifications.get('reason')} ({notifications['pending']} queued)")
    if dead := dead_line(notifications["dead"]):
        print(dead)
    for item in report:
        print_session(item, Heartbeat.of(shown[item["name"]], now), shown[item["name"]])
    return 0


def print_session(item: Mapping[str, Any], beat: Heartbeat, metadata: Mapping[str, Any]) -> None:
    agent = item["kind"] == "agent"
    blocked = " BLOCKED" if metadata.get("blocked") else ""
    print(f"{item['name']} ({item['target']}) queue={item['queue_depth']}{blocked}")
    print(f"  kind: {item['kind']}" + (f"  provider: {item['provider']}" if agent else ""))
    state = item["state"] or "(not reported)"
    print(f"  state: {state}" + (f" — {item['state_detail']}" if item["state_detail"] else ""))
    running = item["running"]
    if running is not None:
        elapsed = "" if running["elapsed_s"] is None else f" for {_duration(running['elapsed_s'])}"
        if agent:
            print(f"  prompt: #{running['id']}{elapsed}  {_short(running['command'], PROMPT_SHOWN)}")
        else:
            print(f"  running: #{running['id']}{elapsed}  {running['command']}")
            if running["output_tail"]:
                for line in running["output_tail"].splitlines()[-OUTPUT_TAIL_SHOWN:]:
                    print(f"    | {line}")
    if item["question"]:
        hint = f"  (answer: tmux-agent reply {item['name']} -- TEXT)" if item["state"] == "waiting_input" else ""
        print(f"  question: {item['question']}{hint}")
    pending = item.get("pending_approval")
    if isinstance(pending, dict):
        asked = f"{_text(pending.get('tool'))}: {_text(pending.get('command'))}".rstrip(": ")
        print(f"  approval: {asked}  ({_text(pending.get('reason'))})")
        print(f"    answer: tmux-agent approve {item['name']}  |  tmux-agent deny {item['name']} [--reason TEXT]")
    print(f"  {beat.describe()}")
    last = metadata.get("last_command_result")
    if isinstance(last, dict) and last:
        if agent:
            command = last.get("command")
            shown = _short(command, PROMPT_SHOWN) if isinstance(command, str) else command
            print(f"  last: #{last.get('command_id')} {last.get('status')} {last.get('duration_s')}s  {shown}")
        else:
            print(
                f"  last: #{last.get('command_id')} {last.get('status')} exit={last.get('exit_code')} "
                f"{last.get('duration_s')}s  {last.get('command')}"
            )
    if item["last_reply"] is not None:
        print(f"  reply: {_short(item['last_reply'], REPLY_SHOWN) or '(empty)'}")
    if item["last_tools"] is not None:
        print(f"  tools: {_tools_text(item['last_tools'])}")
    shown_assist = _for_status_lines(metadata)
    if _has_assist_state(shown_assist):
        from orchestrator.assist.coordinator import status_lines

        for line in status_lines(item["name"], shown_assist):
            print(line)
