"""The moment a person is needed: `需要输入` when a session waits for an answer, `需要确认` when an
agent's tool request was escalated by the safety policy (nothing is auto-approved because a
person could not be told: the notification waits in the outbox while WeCom is down).

The engine knows exactly when a command blocks reading the terminal (see
`orchestrator.drivers.procfs`); this guard tells a person, once per wait, with the question and
the command that answers it. Nothing is typed into the pane meanwhile and no stall fires.
"""

from __future__ import annotations

from orchestrator.events import ApprovalRequested, EventBus, InputRequested
from orchestrator.notify.notifier import alert_markdown
from orchestrator.ports import Notify

INPUT_TITLE = "需要输入"
APPROVAL_TITLE = "需要确认"


class AttentionGuard:
    def __init__(self, notify: Notify) -> None:
        self.notify = notify
        self._episodes: dict[int, int] = {}

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(InputRequested, self._input)
        bus.subscribe(ApprovalRequested, self._approval)

    def _approval(self, e: ApprovalRequested) -> None:
        if e.ruling.verdict != "escalate":
            return
        request = e.request
        rows = [
            ("工具 tool", request.tool),
            ("命令 command", f"`{request.command}`" if request.command else "(see the pane)"),
        ]
        if request.detail:
            rows.append(("说明 detail", request.detail))
        rows += [
            ("任务 prompt", f"`{e.row.command}`"),
            ("原因 reason", e.ruling.reason),
            ("批准 approve", f"`tmux-agent approve {e.session}`"),
            ("拒绝 deny", f"`tmux-agent deny {e.session}`"),
        ]
        self.notify.notify(
            kind="approval",
            session=e.session,
            title=f"{APPROVAL_TITLE} · {e.session}",
            body=alert_markdown(e.session, rows, ""),
            dedupe_key=f"approval:{e.session}:{e.row.id}:{e.row.attempts}:{request.key}",
        )

    def _input(self, e: InputRequested) -> None:
        episode = self._episodes[e.row.id] = self._episodes.get(e.row.id, 0) + 1
        body = alert_markdown(
            e.session,
            [
                ("命令 command", f"`{e.row.command}`"),
                ("问题 question", e.question or "(see the pane)"),
                ("回答 reply", f"`tmux-agent reply {e.session} -- YOUR ANSWER`"),
            ],
            "",
        )
        self.notify.notify(
            kind="input",
            session=e.session,
            title=f"{INPUT_TITLE} · {e.session}",
            body=body,
            dedupe_key=f"input:{e.session}:{e.row.id}:{e.row.attempts}:{episode}",
        )
