"""Requirements plans (scenario D): `requirements_doc` → `task_decomposition` → commands.

The document (metadata `requirements_doc`, else the session's config; relative to the session's
workdir) is decomposed off the supervisor thread — by the AI client, or by the Markdown parser
when AI is off or fails — whenever its SHA-256 differs from the one the current decomposition
was made from; unchanged content is never sent to the AI again. Steps that already succeeded
and are unchanged keep their status, so editing the document after a failure resumes the plan.

The executor then drives the steps in dependency order (document order among the ready ones),
one command at a time, through the normal dispatch queue. A failed, stalled or cancelled
command fails its step, stops the plan and sets a "plan step …" blocker, which triggers decision
assist. A step command the safety policy denies is never queued: the step is `denied` and the
plan stops the same way.

`task_decomposition` = {source (the document path), source_sha256, generated_at,
generated_by: codex|openai|markdown, state: pending|running|completed|stopped|empty,
stopped_reason?, progress: {done, total}, warnings?, ai_error?, steps: [{id, title, commands,
depends_on, acceptance, status: pending|running|succeeded|failed|skipped|denied, command_ids?,
started_at?, finished_at?}]}.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.adapters.ai_client import AIClient, AIRequest
from orchestrator.assist.advisor import PLAN_PREFIX
from orchestrator.assist.blockers import BlockerWatch
from orchestrator.assist.decision import queue_command
from orchestrator.assist.decompose import DECOMPOSITION_SCHEMA, build_prompt, check_reply, parse_markdown
from orchestrator.assist.jobs import Jobs
from orchestrator.assist.safety import SafetyPolicy
from orchestrator.clock import iso_utc
from orchestrator.model import TERMINAL_STATUSES

if TYPE_CHECKING:
    from orchestrator.engine.supervisor import SessionState, Supervisor

log = logging.getLogger("orchestrator.plan")

DONE = ("succeeded", "skipped")
CARRIED = ("succeeded", "skipped", "running")
ACTIVE = ("pending", "running")


def plan_progress(plan: Any) -> dict[str, Any] | None:
    """{done, total, state, running, failed} of a task_decomposition, or None without one."""
    if not isinstance(plan, dict) or not isinstance(plan.get("steps"), list):
        return None
    steps = [s for s in plan["steps"] if isinstance(s, dict)]
    return {
        "done": sum(1 for s in steps if s.get("status") in DONE),
        "total": len(steps),
        "state": plan.get("state"),
        "running": next((s.get("id") for s in steps if s.get("status") == "running"), None),
        "failed": [s.get("id") for s in steps if s.get("status") in ("failed", "denied")],
    }


def carry_over(old: Any, new: dict[str, Any]) -> int:
    """Keep the status of steps whose title and commands did not change; returns how many."""
    if not isinstance(old, dict):
        return 0
    previous = {
        (s.get("title"), tuple(s.get("commands") or [])): s for s in old.get("steps", []) if isinstance(s, dict)
    }
    kept = 0
    for step in new["steps"]:
        same = previous.get((step["title"], tuple(step["commands"])))
        if same and same.get("status") in CARRIED:
            step.update({k: same[k] for k in ("status", "command_ids", "started_at", "finished_at") if k in same})
            kept += 1
    return kept


class PlanRunner:
    def __init__(self, supervisor: Supervisor, ai: AIClient, jobs: Jobs, blockers: BlockerWatch) -> None:
        self.sup = supervisor
        self.settings = supervisor.config.settings.plan
        self.ai = ai
        self.jobs = jobs
        self.blockers = blockers
        self.policy = SafetyPolicy(supervisor.config.settings.decision)
        self._docs: dict[str, tuple[tuple[str, int, int], str, str]] = {}
        self._missing: set[tuple[str, str]] = set()

    def check(self, state: SessionState, metadata: dict[str, Any]) -> None:
        doc = metadata.get("requirements_doc") or state.config.requirements_doc
        if isinstance(doc, str) and doc.strip():
            self._maybe_decompose(state, doc.strip(), metadata.get("task_decomposition"))
        plan = metadata.get("task_decomposition")
        if self._runs(metadata):
            try:
                self._advance(state.config.name, plan)
            except (KeyError, TypeError, IndexError, ValueError) as exc:  # a hand-edited plan of the wrong shape
                self._stop(state.config.name, plan, f"task_decomposition is malformed ({exc!r})")

    def active(self, name: str) -> bool:
        """The session's plan will queue more commands by itself."""
        return self._runs(self.sup.store.metadata(name))

    def _runs(self, metadata: dict[str, Any]) -> bool:
        plan = metadata.get("task_decomposition")
        return (
            self.settings.auto_execute
            and isinstance(plan, dict)
            and plan.get("state") in ACTIVE
            and plan_progress(plan) is not None
            and not metadata.get("blocked")
        )

    # decomposition -----------------------------------------------------------------------------
    def _read(self, state: SessionState, doc: str) -> tuple[str, str] | None:
        name = state.config.name
        path = Path(doc).expanduser()
        path = path if path.is_absolute() else state.config.workdir / path
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
                self.sup.audit.record("decomposition_failed", name, detail=f"cannot read {path}: {exc.strerror}")
            return None
        self._missing.discard((name, str(path)))
        found = (hashlib.sha256(data).hexdigest(), data.decode("utf-8", errors="replace"))
        self._docs[name] = (stamp, *found)
        return found

    def _maybe_decompose(self, state: SessionState, doc: str, plan: Any) -> None:
        found = self._read(state, doc)
        if found is None:
            return
        sha, text = found
        if isinstance(plan, dict) and plan.get("source_sha256") == sha and plan.get("source") == doc:
            return
        name = state.config.name
        self.jobs.submit(
            (name, "decomposition"),
            lambda: self.decompose(state, doc, sha, text),
            lambda result: self.apply(name, result),
        )

    def decompose(self, state: SessionState, doc: str, sha: str, text: str) -> dict[str, Any]:
        """On a worker thread: the AI's steps, or the Markdown parser's."""
        answer = self.ai.ask(
            state.config.name,
            AIRequest(
                "decomposition",
                build_prompt(doc, text),
                DECOMPOSITION_SCHEMA,
                "task_decomposition",
                cwd=state.config.workdir,
                check=check_reply,
            ),
        )
        warnings: list[str] = []
        if answer.data is not None:
            steps, by = answer.data["steps"], answer.backend
        else:
            (steps, warnings), by = parse_markdown(text), "markdown"
        plan: dict[str, Any] = {
            "source": doc,
            "source_sha256": sha,
            "generated_at": iso_utc(self.sup.clock.now()),
            "generated_by": by,
            "state": "pending" if steps else "empty",
            "steps": [
                {
                    "id": s["id"].strip(),
                    "title": s["title"].strip(),
                    "commands": [c.strip() for c in s["commands"] if c.strip()],
                    "depends_on": list(s["depends_on"]),
                    "acceptance": list(s["acceptance"]),
                    "status": "pending",
                }
                for s in steps
            ],
        }
        if warnings:
            plan["warnings"] = warnings
        if answer.error is not None:
            plan["ai_error"] = {"backend": answer.backend, "kind": answer.error.kind, "detail": answer.error.detail}
        return plan

    def apply(self, name: str, plan: dict[str, Any]) -> None:
        kept = carry_over(self.sup.store.metadata(name).get("task_decomposition"), plan)
        self._save(name, plan)
        self.blockers.remove(name, lambda b: b.startswith(PLAN_PREFIX))
        error = plan.get("ai_error", {})
        self.sup.audit.record(
            "decomposition_created",
            name,
            source=plan["generated_by"],
            error_kind=error.get("kind"),
            detail=f"{len(plan['steps'])} step(s) from {plan['source']} "
            f"(sha256 {plan['source_sha256'][:12]}), {kept} kept from before",
        )

    # execution ---------------------------------------------------------------------------------
    def _advance(self, name: str, plan: dict[str, Any]) -> None:
        steps = plan["steps"]
        running = next((s for s in steps if s["status"] == "running"), None)
        if running is not None:
            ids = running.get("command_ids") or []
            row = self.sup.store.command(ids[-1]) if ids else None
            if row is not None and row.status not in TERMINAL_STATUSES:
                return
            if row is not None and row.status == "succeeded" and len(ids) < len(running["commands"]):
                self._queue(name, running, running["commands"][len(ids)])
                return self._save(name, plan)
            if row is not None and row.status == "succeeded":
                self._end_step(name, running, "succeeded")
            else:
                what = f"`{row.command}` {row.status} (exit {row.exit_code})" if row else "its command vanished"
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
            denied = next(((c, why) for c in ready["commands"] if (why := self.policy.denied(c))), None)
            if denied is not None:
                self._end_step(name, ready, "denied", f"`{denied[0]}` {denied[1]}")
                return self._stop(name, plan, f"denied by the safety policy: `{denied[0]}` {denied[1]}", ready)
            ready.update(status="running", command_ids=[], started_at=iso_utc(self.sup.clock.now()))
            self._queue(name, ready, ready["commands"][0])
            plan["state"] = "running"
            return self._save(name, plan)
        if not any(s["status"] == "pending" for s in steps):
            plan["state"] = "completed"
            self.sup.audit.record(
                "plan_finished",
                name,
                status="succeeded",
                detail=f"completed {len(steps)}/{len(steps)} steps of {plan.get('source')}",
            )
            return self._save(name, plan)
        self._stop(name, plan, "the remaining steps depend on steps that cannot run (cycle or unknown id)")

    def _queue(self, name: str, step: dict[str, Any], command: str) -> None:
        number = len(step["command_ids"]) + 1
        step["command_ids"].append(
            queue_command(
                self.sup.store,
                self.sup.audit,
                name,
                command,
                "plan",
                f"plan step {step['id']} command {number}/{len(step['commands'])}",
            )
        )
        self.sup.audit.record(
            "plan_step",
            name,
            step_id=step["id"],
            command=command,
            command_id=step["command_ids"][-1],
            status="running",
            detail=f"{step['id']} {step['title']!r}: command {number}/{len(step['commands'])} queued",
        )

    def _end_step(self, name: str, step: dict[str, Any], status: str, why: str = "") -> None:
        step.update(status=status, finished_at=iso_utc(self.sup.clock.now()))
        self.sup.metrics.plan_steps.labels(session=name, status=status).inc()
        self.sup.audit.record(
            "plan_step",
            name,
            step_id=step["id"],
            detail=f"{step['id']} {step['title']!r}: {status}" + (f" — {why}" if why else ""),
        )

    def _stop(self, name: str, plan: dict[str, Any], reason: str, step: dict[str, Any] | None = None) -> None:
        """Stop the plan; say why as a blocker, which brings decision assist in."""
        plan.update(state="stopped", stopped_reason=f"step {step['id']} {reason}" if step else reason)
        self._save(name, plan)
        self.sup.audit.record("plan_finished", name, status="failed", detail=f"stopped: {plan['stopped_reason']}")
        which = f"{step['id']} “{step['title']}” " if step else "(none runnable) "
        self.blockers.add(name, [f"{PLAN_PREFIX}{which}{reason} ({plan.get('source')})"[:300]], "plan")

    def _save(self, name: str, plan: dict[str, Any]) -> None:
        plan["progress"] = {k: v for k, v in (plan_progress(plan) or {}).items() if k in ("done", "total")}
        self.sup.store.update_metadata(name, {"task_decomposition": plan})
