"""Decision assist (scenario C): a session's blockers → metadata `next_actions`.

When a session's `blockers` differ from those its `next_actions` answered, the AI client is
asked off the engine thread; if AI is off or fails (any error kind), the rule-based advisor
answers instead. Each suggested command gets a safety verdict (see safety.py); only `auto_run`
ones are queued by themselves, `tmux-agent approve SESSION ID` queues the others, denied ones
never run. A "下一步建议" notification goes out when the recommendations changed and the top
priority is at least `[decision] notify_min_priority`. Every decision and verdict is audited.
When every blocker is gone (`tmux-agent unblock`, a plan resumed, a person emptied `blockers`),
`next_actions` is set to null, so status and the dashboard stop showing advice for them
(audited as `decision_made`, source `rules`, detail "blockers cleared; next_actions removed").

For an agent session (`kind: agent`) a suggestion's `command` is the next **prompt** to the
agent (`kind: "prompt"` on the recommendation): the AI is told so and sees the last turn's
reply and tools, the rules suggest prompts, the safety policy judges the prompt's text
(`SafetyPolicy.evaluate_prompt`: never auto-run), and `tmux-agent approve SESSION ID` queues it
as the session's next turn.

`next_actions` = {generated_at, source: codex|openai|rules, blockers, summary,
recommendations: [{id, title, detail, command?, kind?, priority, risk, policy, policy_reason,
command_id?, approved_at?}], latency_s, ai_error?: {backend, kind, detail}} (`payloads.NextActions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.adapters.ai_client import AIClient, AIRequest
from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.assist.advisor import DECISION_SCHEMA, PRIORITIES, RuleAdvisor, build_prompt, check_reply, normalize
from orchestrator.assist.blockers import normalize_blockers
from orchestrator.assist.jobs import Jobs
from orchestrator.assist.safety import SafetyPolicy, Verdict
from orchestrator.clock import Clock, iso_utc
from orchestrator.config import Config, DecisionSettings, SessionConfig
from orchestrator.errors import UserError
from orchestrator.payloads import Advice, DecisionSource, NextActions, Policy, Recommendation
from orchestrator.ports import Notify
from orchestrator.state.audit import AuditLog
from orchestrator.state.port import Store

NEXT_ACTIONS_TITLE = "下一步建议"
APPROVABLE: tuple[Policy, ...] = ("needs_approval", "suggested")
SHOWN_PROMPT_CHARS = 500


def judge(policy: SafetyPolicy, command: str | None, stated_risk: object, prompt: bool) -> Verdict:
    """The safety verdict on a suggestion: a prompt to an agent, or a shell command."""
    return policy.evaluate_prompt(command, stated_risk) if prompt else policy.evaluate(command, stated_risk)


def shown(rec: Mapping[str, Any]) -> str:
    """A suggestion's command as status and notifications show it: `cmd`, or prompt “…” (one line)."""
    if rec.get("kind") != "prompt":
        return f"`{rec.get('command')}`"
    text = " ".join(str(rec.get("command")).split())
    return f"prompt “{text if len(text) <= SHOWN_PROMPT_CHARS else text[: SHOWN_PROMPT_CHARS - 1] + '…'}”"


class DecisionAssist:
    def __init__(
        self,
        *,
        settings: DecisionSettings,
        policy: SafetyPolicy,
        ai: AIClient,
        jobs: Jobs,
        store: Store,
        audit: AuditLog,
        metrics: OrchestratorMetrics,
        clock: Clock,
        notify: Notify,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.ai = ai
        self.jobs = jobs
        self.store = store
        self.audit = audit
        self.metrics = metrics
        self.clock = clock
        self.notify = notify
        self.rules = RuleAdvisor()

    def check(self, session: SessionConfig, metadata: Mapping[str, Any]) -> None:
        name = session.name
        blockers = normalize_blockers(metadata.get("blockers"))
        previous = metadata.get("next_actions")
        answered = normalize_blockers(previous.get("blockers")) if isinstance(previous, dict) else None
        if not blockers and answered:
            self.clear(name, answered)
            return
        if not blockers or blockers == answered:
            return
        seen = self.clock.monotonic()
        self.jobs.submit(
            (name, "decision"),
            lambda: self.decide(session, blockers, metadata),
            lambda result: self.apply(name, result, seen),
        )

    def clear(self, name: str, answered: list[str]) -> None:
        """The blockers the advice answered are gone (unblocked, fixed, removed by hand): so is the advice."""
        self.store.update_metadata(name, {"next_actions": None})
        self.audit.record(
            "decision_made",
            name,
            source="rules",
            latency_s=0.0,
            detail=f"blockers cleared; next_actions removed (they answered: {'; '.join(answered)})"[:1000],
        )

    # on a worker thread: ask, fall back, judge -------------------------------------------------
    def decide(self, session: SessionConfig, blockers: list[str], metadata: Mapping[str, Any]) -> NextActions:
        name = session.name
        agent = session.kind == "agent"
        last = metadata.get("last_command_result")
        last = last if isinstance(last, dict) else {}
        failed_prompt = (
            str(last["command"]) if agent and last.get("status") == "failed" and last.get("command") else None
        )
        answer = self.ai.ask(
            name,
            AIRequest(
                "decision",
                build_prompt(name, blockers, metadata, provider=(session.provider or "agent") if agent else None),
                DECISION_SCHEMA,
                "next_actions",
                cwd=session.workdir,
                check=check_reply,
            ),
        )
        advice: list[Advice]
        source: DecisionSource
        if answer.data is not None and answer.backend is not None:
            summary, advice, source = (
                str(answer.data["summary"]),
                normalize(answer.data["recommendations"]),
                answer.backend,
            )
        else:
            (summary, advice), source = (
                self.rules.advise(name, blockers, agent=agent, last_prompt=failed_prompt),
                "rules",
            )
        recommendations: list[Recommendation] = []
        for item in advice:
            verdict = judge(self.policy, item.get("command"), item["risk"], agent)
            rec: Recommendation = {
                "id": item["id"],
                "title": item["title"],
                "detail": item["detail"],
                "priority": item["priority"],
                "risk": verdict.risk,
                "policy": verdict.policy,
                "policy_reason": verdict.reason,
            }
            if "command" in item:
                rec["command"] = item["command"]
                rec["kind"] = "prompt" if agent else "command"
            recommendations.append(rec)
        result: NextActions = {
            "generated_at": iso_utc(self.clock.now()),
            "source": source,
            "blockers": blockers,
            "summary": summary,
            "recommendations": recommendations,
            "latency_s": round(answer.latency_s, 3),
        }
        if answer.error is not None and answer.backend is not None:
            result["ai_error"] = {"backend": answer.backend, "kind": answer.error.kind, "detail": answer.error.detail}
        return result

    # back on the engine thread: record, queue, notify -------------------------------------------
    def apply(self, name: str, next_actions: NextActions, seen: float) -> None:
        metadata = self.store.metadata(name)
        if not normalize_blockers(metadata.get("blockers")):
            return  # the blockers went away while the advice was being made: it answers nothing now
        previous = metadata.get("next_actions")
        before: dict[Any, Any] = (
            {r.get("id"): r for r in previous.get("recommendations", [])} if isinstance(previous, dict) else {}
        )
        recommendations = next_actions["recommendations"]
        for rec in recommendations:
            earlier = before.get(rec["id"], {})
            if earlier.get("command_id"):  # the same suggestion was already queued: never twice
                rec["command_id"] = earlier["command_id"]
                if "approved_at" in earlier:
                    rec["approved_at"] = earlier["approved_at"]
            elif rec["policy"] == "auto_run" and "command" in rec:
                rec["command_id"] = queue_command(
                    self.store, self.audit, name, rec["command"], "decision", f"auto-run suggestion {rec['id']}"
                )
        self.store.update_metadata(name, {"next_actions": next_actions})
        source = next_actions["source"]
        error = next_actions.get("ai_error")
        self.metrics.decisions.labels(session=name, source=source).inc()
        self.metrics.decision_duration.labels(session=name).observe(max(0.0, self.clock.monotonic() - seen))
        top = recommendations[0] if recommendations else None
        self.audit.record(
            "decision_made",
            name,
            source=source,
            error_kind=error["kind"] if error else None,
            latency_s=next_actions["latency_s"],
            detail=f"{len(recommendations)} recommendation(s); top [{top['priority'] if top else None}] "
            f"{top['title'] if top else None}; blockers: {'; '.join(next_actions['blockers'])}"[:1000],
        )
        for rec in recommendations:
            if rec.get("command"):
                self.metrics.suggestions.labels(session=name, policy=rec["policy"]).inc()
                self.audit.record(
                    "safety_decision",
                    name,
                    command=rec.get("command"),
                    recommendation_id=rec["id"],
                    policy=rec["policy"],
                    command_id=rec.get("command_id"),
                    detail=rec["policy_reason"],
                )
        changed = [(r["title"], r.get("command")) for r in recommendations] != [
            (r.get("title"), r.get("command")) for r in before.values()
        ]
        minimum = PRIORITIES.index(self.settings.notify_min_priority)
        if changed and top is not None and PRIORITIES.index(top["priority"]) >= minimum:
            self.notify.notify(
                kind="next_actions",
                session=name,
                title=f"{NEXT_ACTIONS_TITLE} · {name}",
                body=notification_body(name, next_actions),
                dedupe_key=f"next_actions:{name}:{'/'.join(r['id'] for r in recommendations)}",
            )


def notification_body(session: str, next_actions: NextActions) -> str:
    error = next_actions.get("ai_error")
    lines = [
        f"> 会话 session: **{session}**",
        f"> 阻塞 blockers: {'; '.join(next_actions['blockers'])}",
        f"> 来源 source: {next_actions['source']}" + (f" (AI {error['kind']}, rule-based fallback)" if error else ""),
    ]
    for number, rec in enumerate(next_actions["recommendations"][:5], start=1):
        lines.append(
            f"{number}. **[{rec['priority']}]** {rec['title']}" + (f" — {rec['detail']}" if rec["detail"] else "")
        )
        if rec.get("command"):
            lines.append(f"   {shown(rec)} · {policy_hint(session, rec)}")
    return "\n".join(lines)


def policy_hint(session: str, rec: Mapping[str, Any]) -> str:
    """How a suggestion runs: queued already, approvable (and how), or why not."""
    if rec.get("command_id"):
        return f"queued as #{rec['command_id']}"
    if rec["policy"] in APPROVABLE:
        return f"{rec['policy']}: `tmux-agent approve {session} {rec['id']}`"
    return str(rec["policy_reason"])


def queue_command(store: Store, audit: AuditLog, session: str, command: str, source: str, why: str) -> int:
    """Queue a command the orchestrator chose (not a person), audited like `tmux-agent send`."""
    command_id = store.enqueue(session, command, source=source)
    audit.record(
        "command_queued",
        session,
        command_id=command_id,
        command=command,
        queue_depth=store.queue_depths().get(session, 0),
        detail=why,
    )
    return command_id


def approve(config: Config, store: Store, audit: AuditLog, session: str, rec_id: str) -> tuple[int, str]:
    """`tmux-agent approve SESSION ID`: queue a suggestion the policy allows to run with approval —
    a shell command, or for an agent session the next prompt to the agent."""
    agent = config.session(session).kind == "agent"
    what = "prompt" if agent else "command"
    next_actions = store.metadata(session).get("next_actions")
    recs = next_actions.get("recommendations", []) if isinstance(next_actions, dict) else []
    rec = next((r for r in recs if r.get("id") == rec_id), None)
    if rec is None:
        known = ", ".join(str(r.get("id")) for r in recs if r.get("command")) or "none"
        raise UserError(
            f"no suggestion '{rec_id}' in next_actions of {session}",
            key="ID",
            fix=f"use one of: {known} (see `tmux-agent status {session}`)",
        )
    command = rec.get("command")
    if not command:
        raise UserError(
            f"suggestion '{rec_id}' has no {what} to {'send' if agent else 'run'}", key="ID", fix="act on it by hand"
        )
    if rec.get("command_id"):
        return int(rec["command_id"]), command
    verdict = judge(SafetyPolicy(config.settings.decision), command, rec.get("risk"), agent)
    if verdict.policy == "denied":
        audit.record(
            "suggestion_refused",
            session,
            command=command,
            recommendation_id=rec_id,
            policy="denied",
            detail=verdict.reason,
        )
        raise UserError(
            f"refused, the safety policy {verdict.reason}",
            key="ID",
            fix=f"a denied {what} never runs from a suggestion; type it yourself if you really mean it",
        )
    command_id = queue_command(
        store, audit, session, command, "approved", f"approved suggestion {rec_id}" + (" (a prompt)" if agent else "")
    )
    approved_at = iso_utc(store.clock.now())

    def mark(value: Any) -> Any:
        for item in (value or {}).get("recommendations", []):
            if item.get("id") == rec_id:
                item.update(command_id=command_id, approved_at=approved_at)
        return value

    store.modify_metadata(session, "next_actions", mark)
    audit.record(
        "suggestion_approved",
        session,
        command=command,
        command_id=command_id,
        recommendation_id=rec_id,
        policy=verdict.policy,
        detail=f"approved by a person ({verdict.reason})",
    )
    return command_id, command
