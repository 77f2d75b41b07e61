"""The moment a person is needed: a `需要输入` notification when a session waits for an answer.

The engine knows exactly when a command blocks reading the terminal (see
`orchestrator.drivers.procfs`); this guard tells a person, once per wait, with the question and
the command that answers it. Nothing is typed into the pane meanwhile and no stall fires.
"""

from __future__ import annotations

from orchestrator.events import EventBus, InputRequested
from orchestrator.notify.notifier import alert_markdown
from orchestrator.ports import Notify

INPUT_TITLE = "需要输入"


class AttentionGuard:
    def __init__(self, notify: Notify) -> None:
        self.notify = notify
        self._episodes: dict[int, int] = {}

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(InputRequested, self._input)

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
