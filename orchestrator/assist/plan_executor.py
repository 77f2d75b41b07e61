"""Requirements plans (scenario D): `requirements_doc` → `task_decomposition` → commands.

The document (metadata `requirements_doc`, else the session's config; relative to the session's
workdir) is decomposed off the engine thread — by the AI client, or by the Markdown parser
when AI is off or fails — whenever its SHA-256 differs from the one the current decomposition
was made from; unchanged content is never sent to the AI again. Steps that already succeeded
and are unchanged keep their status, so editing the document after a failure resumes the plan.

Whether a new plan runs by itself is `[plan] auto_execute`: when it is false (the default) a
decomposed plan is `waiting_approval` and nothing of it is queued until a person runs
`tmux-agent approve SESSION plan` (`approve_plan`), which makes it `running`; a changed document
is a new plan and waits again. A plan with nothing left to run needs no approval. When it is
true, plans run as soon as they are decomposed (a waiting one too).

The executor then drives the steps in dependency order (document order among the ready ones),
one command at a time, through the normal dispatch queue. A failed, stalled or cancelled
command fails its step, stops the plan and sets a "plan step …" blocker, which triggers decision
assist. A step command the safety policy denies is never queued: the step is `denied` and the
plan stops the same way.

Prompt steps (`kind: "prompt"`) send their prompts to an agent session — the step's `session`,
else the plan's own — one turn at a time: the next prompt (or step) is queued only once the
previous turn ended. A turn that fails, stalls or is cancelled fails its step as a shell command
does, and so does a turn whose reply reports a blocker ("I cannot continue: …"). A step whose
kind does not fit its session (a prompt for a shell session, shell commands for an agent
session) or that names an unknown session stops the plan before it starts. Nothing is queued
into a session blocked by a failure streak; the plan waits.

`task_decomposition` = {source (the document path), source_sha256, generated_at,
generated_by: codex|openai|markdown, state: waiting_approval|pending|running|completed|stopped|empty,
stopped_reason?, progress: {done, total}, warnings?, ai_error?, steps: [{id, title, commands,
session?, kind?, depends_on, acceptance, status: pending|running|succeeded|failed|skipped|denied,
command_ids?, started_at?, finished_at?}]} (`payloads.TaskDecomposition`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from orchestrator.adapters.ai_client import AIClient, AIRequest
from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.assist.advisor import PLAN_PREFIX
from orchestrator.assist.blockers import BlockerWatch
from orchestrator.assist.decision import queue_command
from orchestrator.assist.decompose import build_prompt, decomposition_schema, reply_check
from orchestrator.assist.jobs import Jobs
from orchestrator.assist.plan_markdown import parse_markdown
from orchestrator.assist.safety import SafetyPolicy
from orchestrator.clock import Clock, iso_utc
from orchestrator.config import PlanSettings, SessionConfig
from orchestrator.errors import UserError
from orchestrator.model import TERMINAL_STATUSES, CommandRow
from orchestrator.payloads import (
    PlanGenerator,
    PlanReport,
    PlanState,
    PlanStep,
    StepSpec,
    StepStatus,
    TaskDecomposition,
    WorkKind,
)
from orchestrator.state.audit import AuditLog
from orchestrator.state.port import Store

log = logging.getLogger("orchestrator.plan")

DONE: tuple[StepStatus, ...] = ("succeeded", "skipped")
CARRIED: tuple[StepStatus, ...] = ("succeeded", "skipped", "running")
WAITING: PlanState = "waiting_approval"
UNSTARTED: tuple[PlanState, ...] = (WAITING, "pending")  # what `tmux-agent approve SESSION plan` starts
FAILED: tuple[StepStatus, ...] = ("failed", "denied")


def short(text: str, limit: int = 60) -> str:
    """A prompt on one line, shortened for reasons and blockers."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plan_progress(plan: object) -> PlanReport | None:
    """{done, total, state, running, failed} of a task_decomposition, or None without one."""
    if not isinstance(plan, dict) or not isinstance(plan.get("steps"), list):
        return None
    steps: list[dict[str, Any]] = [s for s in plan["steps"] if isinstance(s, dict)]
    done, total = _counts(steps)
    return {
        "done": done,
        "total": total,
        "state": plan.get("state"),
        "running": next((s.get("id") for s in steps if s.get("status") == "running"), None),
        "failed": [s.get("id") for s in steps if s.get("status") in FAILED],
    }


def _counts(steps: list[Any]) -> tuple[int, int]:
    """Done and total of a plan's steps (entries that are not objects are no steps)."""
    steps = [s for s in steps if isinstance(s, dict)]
    return sum(1 for s in steps if s.get("status") in DONE), len(steps)


def step_kind(step: Mapping[str, Any]) -> WorkKind:
    return "prompt" if step.get("kind") == "prompt" else "command"


def _same_step(step: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes a step the same step after a new decomposition: title, commands, session, kind."""
    return (step.get("title"), tuple(step.get("commands") or []), step.get("session") or None, step_kind(step))


def carry_over(old: object, new: TaskDecomposition) -> int:
    """Keep the status of steps whose title, commands, session and kind did not change; returns how many."""
    if not isinstance(old, dict):
        return 0
    previous: dict[tuple[Any, ...], dict[str, Any]] = {
        _same_step(s): s for s in old.get("steps", []) if isinstance(s, dict)
    }
    kept = 0
    for step in new["steps"]:
        same = previous.get(_same_step(step))
        if same and same.get("status") in CARRIED:
            step["status"] = same["status"]
            if "command_ids" in same:
                step["command_ids"] = same["command_ids"]
            if "started_at" in same:
                step["started_at"] = same["started_at"]
            if "finished_at" in same:
                step["finished_at"] = same["finished_at"]
            kept += 1
    return kept


class PlanRunner:
    def __init__(
        self,
        *,
        settings: PlanSettings,
        sessions: Sequence[SessionConfig] = (),
        policy: SafetyPolicy,
        ai: AIClient,
        jobs: Jobs,
        blockers: BlockerWatch,
        store: Store,
        audit: AuditLog,
        metrics: OrchestratorMetrics,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.sessions = {s.name: s for s in sessions}
        self.policy = policy
        self.ai = ai
        self.jobs = jobs
        self.blockers = blockers
        self.store = store
        self.audit = audit
        self.metrics = metrics
        self.clock = clock
        self._docs: dict[str, tuple[tuple[str, int, int], str, str]] = {}
        self._missing: set[tuple[str, str]] = set()

    def check(self, session: SessionConfig, metadata: Mapping[str, Any]) -> None:
        doc = metadata.get("requirements_doc") or session.requirements_doc
        if isinstance(doc, str) and doc.strip():
            self._maybe_decompose(session, doc.strip(), metadata.get("task_decomposition"))
        if self._runs(metadata):
            # _runs checked it is a dict with a list of steps; the rest of its shape may be wrong
            plan = cast(TaskDecomposition, metadata["task_decomposition"])
            try:
                self._advance(session.name, plan)
            except (KeyError, TypeError, IndexError, ValueError) as exc:  # a hand-edited plan of the wrong shape
                self._stop(session.name, plan, f"task_decomposition is malformed ({exc!r})")

    def active(self, name: str) -> bool:
        """The session's plan will queue more commands by itself. Asked for every session every
        round (the loop's idle check): read from the round's shared view, not parsed again."""
        return self._runs(self.store.metadata_view(name))

    def _runs(self, metadata: Mapping[str, Any]) -> bool:
        """An approved plan runs; an unstarted one only with `auto_execute` (so a `pending` plan
        an older version left behind waits too)."""
        plan = metadata.get("task_decomposition")
        return (
            isinstance(plan, dict)
            and (plan.get("state") == "running" or (self.settings.auto_execute and plan.get("state") in UNSTARTED))
            and plan_progress(plan) is not None
            and not metadata.get("blocked")
        )

    # decomposition -----------------------------------------------------------------------------
    def _read(self, session: SessionConfig, doc: str) -> tuple[str, str] | None:
        name = session.name
        path = Path(doc).expanduser()
        path = path if path.is_absolute() else session.workdir / path
        try:
            st = path.stat()
            stamp = (str(path), st.st_mtime_ns, st.st_size)
            cached = self._docs.get(name)
            if cached and cached[0] == stamp:
                return cached[1], cached[2]
            data = path.read_bytes()
        except OSError as exc:
            if (name, str(path)) not in self._missing:
                self._missing.add((name, str(path)))
                log.warning("requirements_doc of %s unreadable: %s (%s)", name, path, exc.strerror)
                self.audit.record("decomposition_failed", name, detail=f"cannot read {path}: {exc.strerror}")
            return None
        self._missing.discard((name, str(path)))
        sha, text = hashlib.sha256(data).hexdigest(), data.decode("utf-8", errors="replace")
        self._docs[name] = (stamp, sha, text)
        return sha, text

    def _maybe_decompose(self, session: SessionConfig, doc: str, plan: object) -> None:
        found = self._read(session, doc)
        if found is None:
            return
        sha, text = found
        if isinstance(plan, dict) and plan.get("source_sha256") == sha and plan.get("source") == doc:
            return
        name = session.name
        self.jobs.submit(
            (name, "decomposition"),
            lambda: self.decompose(session, doc, sha, text),
            lambda result: self.apply(name, result),
        )

    def decompose(self, session: SessionConfig, doc: str, sha: str, text: str) -> TaskDecomposition:
        """On a worker thread: the AI's steps, or the Markdown parser's."""
        fleet = list(self.sessions.values()) or [session]
        answer = self.ai.ask(
            session.name,
            AIRequest(
                "decomposition",
                build_prompt(doc, text, fleet, session.name),
                decomposition_schema(any(s.kind == "agent" for s in fleet)),
                "task_decomposition",
                cwd=session.workdir,
                check=reply_check([s.name for s in fleet]),
            ),
        )
        warnings: list[str] = []
        steps: list[StepSpec]
        by: PlanGenerator
        if answer.data is not None and answer.backend is not None:
            steps, by = answer.data["steps"], answer.backend
        else:
            (steps, warnings), by = parse_markdown(text), "markdown"
        plan: TaskDecomposition = {
            "source": doc,
            "source_sha256": sha,
            "generated_at": iso_utc(self.clock.now()),
            "generated_by": by,
            "state": ("pending" if self.settings.auto_execute else WAITING) if steps else "empty",
            "steps": [self._step(session, s, infer_kind=by != "markdown") for s in steps],
        }
        if warnings:
            plan["warnings"] = warnings
        if answer.error is not None and answer.backend is not None:
            plan["ai_error"] = {"backend": answer.backend, "kind": answer.error.kind, "detail": answer.error.detail}
        return plan

    def _step(self, owner: SessionConfig, spec: StepSpec, infer_kind: bool) -> PlanStep:
        """A proposed step as the plan keeps it: `session` only when one is named, `kind` only for
        prompts. The AI's null kind follows the step's session (`infer_kind`); the Markdown
        parser's steps say theirs (a shell block is a command even for an agent session)."""
        step: PlanStep = {
            "id": spec["id"].strip(),
            "title": spec["title"].strip(),
            "commands": [c.strip() for c in spec["commands"] if c.strip()],
            "depends_on": list(spec["depends_on"]),
            "acceptance": list(spec["acceptance"]),
            "status": "pending",
        }
        named = (spec.get("session") or "").strip()
        if named:
            step["session"] = named
        target = self.sessions.get(named or owner.name, owner if not named else None)
        agent = target is not None and target.kind == "agent"
        kind = spec.get("kind") or ("prompt" if infer_kind and agent else "command")
        if kind == "prompt":
            step["kind"] = "prompt"
        return step

    def apply(self, name: str, plan: TaskDecomposition) -> None:
        kept = carry_over(self.store.metadata(name).get("task_decomposition"), plan)
        if plan["state"] == WAITING and not any(s["status"] in ("pending", "running") for s in plan["steps"]):
            plan["state"] = "running"  # nothing left to run (all kept from before): no approval needed
        self._save(name, plan)
        self.blockers.remove(name, lambda b: b.startswith(PLAN_PREFIX))
        error = plan.get("ai_error")
        self.audit.record(
            "decomposition_created",
            name,
            source=plan["generated_by"],
            error_kind=error["kind"] if error else None,
            detail=f"{len(plan['steps'])} step(s) from {plan['source']} "
            f"(sha256 {plan['source_sha256'][:12]}), {kept} kept from before"
            + (f"; waits for `tmux-agent approve {name} plan`" if plan["state"] == WAITING else ""),
        )
        if plan["state"] == WAITING:
            log.info("plan of %s from %s waits for `tmux-agent approve %s plan`", name, plan["source"], name)

    # execution ---------------------------------------------------------------------------------
    def _target(self, owner: str, step: PlanStep) -> tuple[str, str | None]:
        """The session a step's work goes to, and what is wrong with that (None when nothing)."""
        target = step.get("session") or owner
        session = self.sessions.get(target)
        kind = step_kind(step)
        if session is None:
            if target == owner and not self.sessions:
                return target, None  # no fleet known (a bare runner): the plan's own session
            return target, f"names session '{target}', which is not configured"
        if kind == "prompt" and session.kind != "agent":
            return target, f"has prompts, but {target} is a shell session (prompts go to agent sessions)"
        if kind == "command" and session.kind == "agent":
            return target, (
                f"has shell commands, but {target} is an agent session "
                "(write them as ```prompt blocks or name a shell session with `Session:`)"
            )
        return target, None

    def _blocked(self, owner: str, target: str) -> bool:
        """A target other than the plan's session is blocked by its failure streak: wait."""
        return target != owner and self.store.metadata(target).get("blocked") is True

    def _advance(self, name: str, plan: TaskDecomposition) -> None:
        steps = plan["steps"]
        running = next((s for s in steps if s["status"] == "running"), None)
        if plan.get("state") != "running" or running is None:  # before anything runs: every step must fit
            for step in steps:
                problem = self._target(name, step)[1] if step["status"] == "pending" and step["commands"] else None
                if problem is not None:
                    self._end_step(name, step, "failed", problem)
                    return self._stop(name, plan, problem, step)
        if running is not None:
            target = self._target(name, running)[0]
            ids = running.get("command_ids") or []
            row = self.store.command(ids[-1]) if ids else None
            if row is not None and row.status not in TERMINAL_STATUSES:
                return
            reported = self._reported(target, running, row)
            if row is not None and row.status == "succeeded" and not reported and len(ids) < len(running["commands"]):
                if self._blocked(name, target):
                    return
                self._queue(name, running, target, running["commands"][len(ids)])
                return self._save(name, plan)
            if row is not None and row.status == "succeeded" and not reported:
                self._end_step(name, running, "succeeded")
            else:
                what = self._what_failed(running, row, reported)
                self._end_step(name, running, "failed", what)
                return self._stop(name, plan, f"failed: {what}", running)
        while True:
            status = {s["id"]: s["status"] for s in steps}
            ready = next(
                (s for s in steps if s["status"] == "pending" and all(status.get(d) in DONE for d in s["depends_on"])),
                None,
            )
            if ready is None:
                break
            if not ready["commands"]:
                self._end_step(name, ready, "skipped", "no commands")
                continue
            target, problem = self._target(name, ready)
            if problem is not None:
                self._end_step(name, ready, "failed", problem)
                return self._stop(name, plan, problem, ready)
            prompt = step_kind(ready) == "prompt"
            denied = next(
                (
                    (c, why)
                    for c in ready["commands"]
                    if (why := self.policy.denied_prompt(c) if prompt else self.policy.denied(c))
                ),
                None,
            )
            if denied is not None:
                shown = f"prompt “{short(denied[0])}”" if prompt else f"`{denied[0]}`"
                self._end_step(name, ready, "denied", f"{shown} {denied[1]}")
                return self._stop(name, plan, f"denied by the safety policy: {shown} {denied[1]}", ready)
            if self._blocked(name, target):
                return
            ready["status"] = "running"
            ready["command_ids"] = []
            ready["started_at"] = iso_utc(self.clock.now())
            self._queue(name, ready, target, ready["commands"][0])
            plan["state"] = "running"
            return self._save(name, plan)
        if not any(s["status"] == "pending" for s in steps):
            plan["state"] = "completed"
            self.audit.record(
                "plan_finished",
                name,
                status="succeeded",
                detail=f"completed {len(steps)}/{len(steps)} steps of {plan.get('source')}",
            )
            return self._save(name, plan)
        self._stop(name, plan, "the remaining steps depend on steps that cannot run (cycle or unknown id)")

    def _reported(self, target: str, step: PlanStep, row: CommandRow | None) -> list[str]:
        """The blockers a prompt step's finished turn reported in its reply (none for shell steps)."""
        if row is None or step_kind(step) != "prompt" or row.status != "succeeded":
            return []
        last = self.store.metadata(target).get("last_command_result")
        reply = last.get("reply") if isinstance(last, dict) and last.get("command_id") == row.id else None
        return self.blockers.reported(target, reply if isinstance(reply, str) else row.output_tail or "")

    @staticmethod
    def _what_failed(step: PlanStep, row: CommandRow | None, reported: list[str]) -> str:
        if row is None:
            return "its command vanished"
        if step_kind(step) != "prompt":  # a stalled or cancelled command may never have exited
            return f"`{row.command}` {row.status}" + (f" (exit {row.exit_code})" if row.exit_code is not None else "")
        if reported:
            return f"prompt “{short(row.command)}”: {reported[0]}"
        return f"prompt “{short(row.command)}” {row.status}"

    def _queue(self, name: str, step: PlanStep, target: str, command: str) -> None:
        number = len(step["command_ids"]) + 1
        unit = "prompt" if step_kind(step) == "prompt" else "command"
        where = f" → {target}" if target != name else ""
        step["command_ids"].append(
            queue_command(
                self.store,
                self.audit,
                target,
                command,
                "plan",
                f"plan step {step['id']} {unit} {number}/{len(step['commands'])}"
                + (f" (plan of {name})" if target != name else ""),
            )
        )
        self.audit.record(
            "plan_step",
            name,
            step_id=step["id"],
            command=command,
            command_id=step["command_ids"][-1],
            status="running",
            detail=f"{step['id']} {step['title']!r}: {unit} {number}/{len(step['commands'])} queued{where}",
        )

    def _end_step(self, name: str, step: PlanStep, status: StepStatus, why: str = "") -> None:
        step["status"] = status
        step["finished_at"] = iso_utc(self.clock.now())
        self.metrics.plan_steps.labels(session=name, status=status).inc()
        self.audit.record(
            "plan_step",
            name,
            step_id=step["id"],
            detail=f"{step['id']} {step['title']!r}: {status}" + (f" — {why}" if why else ""),
        )

    def _stop(self, name: str, plan: TaskDecomposition, reason: str, step: PlanStep | None = None) -> None:
        """Stop the plan; say why as a blocker, which brings decision assist in."""
        plan["state"] = "stopped"
        plan["stopped_reason"] = f"step {step['id']} {reason}" if step else reason
        self._save(name, plan)
        self.audit.record("plan_finished", name, status="failed", detail=f"stopped: {plan['stopped_reason']}")
        which = f"{step['id']} “{step['title']}” " if step else "(none runnable) "
        self.blockers.add(name, [f"{PLAN_PREFIX}{which}{reason} ({plan.get('source')})"[:300]], "plan")

    def _save(self, name: str, plan: TaskDecomposition) -> None:
        done, total = _counts(plan["steps"])
        plan["progress"] = {"done": done, "total": total}
        self.store.update_metadata(name, {"task_decomposition": plan})


def approve_plan(store: Store, audit: AuditLog, session: str) -> tuple[TaskDecomposition, bool]:
    """`tmux-agent approve SESSION plan`: start the session's plan that waits for approval (it
    becomes `running`; the orchestrator queues its first step at its next round). Returns the
    plan and whether this call started it (False: it was already running). Approving a plan
    approves its steps' commands, not the safety policy's denials: a denied step still never
    runs. A plan that is not waiting (none, empty, completed, stopped) is refused."""
    started: list[bool] = []

    def start(value: Any) -> Any:
        state = value.get("state") if isinstance(value, dict) and plan_progress(value) is not None else None
        if state not in (*UNSTARTED, "running"):
            raise UserError(
                f"the plan of {session} is {state}, not waiting_approval: nothing to approve"
                if state
                else f"session {session} has no plan (task_decomposition): nothing to approve",
                key="plan",
                fix=f"a plan waits once its requirements_doc is decomposed (see `tmux-agent status {session}`); "
                "a stopped one is decomposed again when its document changes",
            )
        started.append(state != "running")
        value["state"] = "running"
        return value

    plan: TaskDecomposition = store.modify_metadata(session, "task_decomposition", start)
    if started[0]:
        done, total = _counts(plan["steps"])
        audit.record(
            "plan_approved",
            session,
            by="person",
            detail=f"approved with tmux-agent approve: {total - done} step(s) to run from {plan.get('source')} "
            f"(sha256 {str(plan.get('source_sha256'))[:12]})",
        )
    return plan, started[0]
