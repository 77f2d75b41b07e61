"""The one notifier: outbox first, then WeCom channels, degrading and recovering
without ever stopping the orchestrator.

`notify` only writes the outbox (fast, in the supervisor's thread). A background
thread re-reads the environment, picks the configured channels, respects the
rate limit and backs off failed messages. When no channel is configured or every
channel fails, it says "notifications degraded: …" once per episode, counts it,
and keeps the messages until a channel works again.

WeCom's limit is per robot (20 messages a minute for a webhook key), and it counts
every request its API takes in, refused or not, so the notifier counts *attempts*
per `rate_key` (the webhook key's hash, or the app's corp + agent), not successes
per channel name. An attempt that never reached the API (no connection, a gateway's
HTTP error, a reply that is not WeCom's) is not counted: otherwise an outage's
retries would use up the budget and hold the backlog back after it ends.

A message every channel refuses with a final errcode (`ChannelError.refusal`) ends
`dead` instead of being retried for ever: one ERROR line with the errcode and the
fix, audit `notification_dead`, `orchestrator_notifications_dead_total`. Degraded
means "no channel can deliver": a refusal of one message's *content* leaves the
channel healthy; a refusal of its *configuration* (wrong key, untrusted IP) does not.
Messages that died of a configuration are queued again when the configuration
changes (the env file is fixed, or the service restarts), if younger than a day.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.adapters.wecom import Channel, ChannelError, ChannelErrorKind, channels_from_env, describe
from orchestrator.clock import Clock, SystemClock
from orchestrator.config import NotificationSettings
from orchestrator.envfile import EnvSource
from orchestrator.notify.dead import verdict
from orchestrator.redact import redact
from orchestrator.state.audit import AuditLog
from orchestrator.state.db_faults import StateDBError
from orchestrator.state.outbox import Outbox, OutboxMessage, health_record

log = logging.getLogger("orchestrator.notify")

NO_CHANNEL = (
    "no WeCom channel configured (set WECOM_WEBHOOK, or WECOM_CORP_ID + WECOM_AGENT_ID + "
    "WECOM_APP_SECRET, in the environment or the env file)"
)
MAX_BACKOFF_SECONDS = 60.0
#: Backoff doubles per attempt up to this exponent: past it the cap holds anyway, and an unbounded
#: 2**attempts overflows float arithmetic after ~1000 failed attempts (a long WeCom outage).
MAX_BACKOFF_EXPONENT = 64
#: Notifications whose outbox write the state DB refused (a full disk, a lock) wait in memory,
#: up to this many, and are written by the sending thread when the DB takes writes again.
UNSAVED_LIMIT = 1000
#: Failures that never reached WeCom's API, so WeCom's per-minute limit did not count them.
UNCOUNTED_KINDS: frozenset[ChannelErrorKind] = frozenset({"network", "http", "bad_reply"})
#: WeCom's rate limits are per minute.
RATE_WINDOW_SECONDS = 60.0
#: Messages that died of a channel's configuration are queued again when it changes, if younger.
REVIVE_WINDOW_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class _Unsaved:
    kind: str
    session: str | None
    title: str
    body: str
    dedupe_key: str


def rate_key(channel: Channel) -> str:
    """What WeCom's per-minute limit counts against (a channel double without one: its name)."""
    key = getattr(channel, "rate_key", None)
    return key if isinstance(key, str) and key else channel.name


class ChannelFactory(Protocol):
    """Builds the configured channels from the environment (`channels_from_env`, or a test double)."""

    def __call__(self, env: Mapping[str, str], *, timeout: float, previous: Sequence[Channel]) -> Sequence[Channel]: ...


def alert_markdown(session: str, facts: Sequence[tuple[str, str]], output_tail: str) -> str:
    """The one layout of an alert body: session, labelled facts, then the last output lines."""
    lines = [f"> 会话 session: **{session}**", *(f"> {label}: {value}" for label, value in facts)]
    return "\n".join(lines) + f"\n最后输出 last output:\n```\n{output_tail or '(none)'}\n```"


@dataclass
class Notifier:
    outbox: Outbox
    env: EnvSource
    settings: NotificationSettings
    metrics: OrchestratorMetrics
    audit: AuditLog
    clock: Clock = field(default_factory=SystemClock)
    channel_factory: ChannelFactory = channels_from_env

    def __post_init__(self) -> None:
        self.channels: list[Channel] = []
        self.degraded_reason: str | None = None
        self._wake = threading.Event()
        # WeCom's per-minute window per robot, in wall-clock time so that it survives a restart
        self._attempt_times: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        try:
            for key, times in self.outbox.attempts().items():
                self._attempt_times[key].extend(sorted(t for t in times if self.clock.now() - t < RATE_WINDOW_SECONDS))
        except StateDBError:
            pass  # counted and logged by the store; the window starts empty
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._held = threading.Lock()
        self._unsaved: collections.deque[_Unsaved] = collections.deque(maxlen=UNSAVED_LIMIT)
        self._sent_unmarked: dict[int, str] = {}  # delivered, but `mark_sent` was refused: never resend
        self._configuration: tuple[object, ...] | None = None  # the channels' config keys last round
        self._set_health("ok", "", 0)

    # the supervisor's side -------------------------------------------------------
    def notify(self, *, kind: str, session: str | None, title: str, body: str, dedupe_key: str) -> int | None:
        message = _Unsaved(kind, session, redact(title), redact(body), dedupe_key)
        try:
            message_id = self._save(message)
        except StateDBError as exc:  # counted and logged by the store; kept here until the DB takes it
            if exc.fatal:
                raise
            with self._held:
                self._unsaved.append(message)
            self._wake.set()
            return None
        if message_id is None:
            log.info("notification %r suppressed: same alert within %ss", dedupe_key, self.settings.dedupe_seconds)
            return None
        self.audit.record("notification_queued", session, detail=f"{kind}: {title}")
        self._wake.set()
        return message_id

    def _save(self, message: _Unsaved) -> int | None:
        return self.outbox.add(
            dedupe_key=message.dedupe_key,
            kind=message.kind,
            session=message.session,
            title=message.title,
            body=message.body,
            dedupe_seconds=self.settings.dedupe_seconds,
        )

    def _save_held(self) -> None:
        """Write what the DB refused earlier, oldest first, and mark sent what was delivered
        while `mark_sent` was refused; stop at the first refusal (it raises to the loop)."""
        while True:
            with self._held:
                if not self._unsaved:
                    break
                message = self._unsaved[0]
            if self._save(message) is not None:
                self.audit.record("notification_queued", message.session, detail=f"{message.kind}: {message.title}")
            with self._held:
                self._unsaved.popleft()
        for message_id, channel in list(self._sent_unmarked.items()):
            self.outbox.mark_sent(message_id, channel)
            del self._sent_unmarked[message_id]

    # the sending thread ------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="notifier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=self.settings.request_timeout_seconds + 2)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.flush_once()
            except StateDBError:
                pass  # counted and logged once per episode by the store; the next round retries
            except Exception:  # the notifier must never take the orchestrator down
                log.exception("notifier round failed; will retry")
            self._wake.wait(timeout=min(self.settings.env_reload_seconds, 0.5))
            self._wake.clear()

    def _refresh_channels(self, env: Mapping[str, str]) -> None:
        self.channels = list(
            self.channel_factory(env, timeout=self.settings.request_timeout_seconds, previous=self.channels)
        )

    def flush_once(self) -> None:
        self._save_held()
        before = describe(self.channels)
        self._refresh_channels(self.env.current())
        self._revive_if_reconfigured()
        pending = len(self.outbox.pending())
        if self.channels and describe(self.channels) != before and self.degraded_reason is None:
            self._set_health("ok", f"channels: {describe(self.channels)}", pending)
        self.metrics.notifications_pending.set(pending)
        if not self.channels:
            self._degrade(NO_CHANNEL, pending)
            return
        if self.degraded_reason == NO_CHANNEL:
            self._recover(f"channel configured: {describe(self.channels)}", pending)
        for message in self.outbox.due():
            if self._stop.is_set():
                return
            if message.id not in self._sent_unmarked:
                self._deliver(message)
        self.metrics.notifications_pending.set(len(self.outbox.pending()))

    def _revive_if_reconfigured(self) -> None:
        """A changed configuration may fix what killed messages (a key, a secret): try them again."""
        configuration = tuple(getattr(ch, "config_key", id(ch)) for ch in self.channels)
        if self.channels and configuration != self._configuration:
            revived = self.outbox.revive(self.clock.now() - REVIVE_WINDOW_SECONDS)
            if revived:
                log.info("WeCom configuration changed: %d notification(s) refused by the old one queued again", revived)
        self._configuration = configuration

    def _allowed(self, channel: Channel) -> bool:
        """Room for one more request to this robot in the last minute."""
        window = self._attempt_times[rate_key(channel)]
        now = self.clock.now()
        while window and now - window[0] >= RATE_WINDOW_SECONDS:
            window.popleft()
        return len(window) < self.settings.rate_limit_per_minute

    def _count_attempt(self, channel: Channel, error: ChannelError | None = None) -> None:
        if error is not None and error.kind in UNCOUNTED_KINDS:
            return
        self._attempt_times[rate_key(channel)].append(self.clock.now())
        try:  # best effort: a refused write must not make a delivered message look unsent
            self.outbox.set_attempts({key: list(times) for key, times in self._attempt_times.items() if times})
        except StateDBError:
            pass

    def _deliver(self, message: OutboxMessage) -> None:
        errors: list[ChannelError] = []
        tried = False
        for channel in self.channels:
            if not self._allowed(channel):
                continue
            tried = True
            try:
                channel.send(message.title, message.body)
            except ChannelError as exc:
                self._count_attempt(channel, exc)
                errors.append(exc)
                self.metrics.notifications.labels(channel=channel.name, result="failed").inc()
                continue
            self._count_attempt(channel)
            try:
                self.outbox.mark_sent(message.id, channel.name)
            except StateDBError:
                self._sent_unmarked[message.id] = channel.name  # delivered: marked later, never sent twice
            self.metrics.notifications.labels(channel=channel.name, result="sent").inc()
            self.audit.record("notification_sent", message.session, detail=f"{channel.name}: {message.title}")
            if self.degraded_reason is not None:
                self._recover(f"delivered via {channel.name}", len(self.outbox.pending()))
            return
        if not tried:  # every channel is at its rate limit: wait, this is not a failure
            return
        reason = "; ".join(redact(str(e)) for e in errors)
        if len(errors) == len(self.channels) and all(e.refusal is not None for e in errors):
            self._bury(message, errors)
        else:
            self._retry_later(message, errors, reason)
        if all(e.refusal is None or e.refusal.scope == "channel" for e in errors):  # the channels, not the message
            self._degrade(f"every channel failed ({reason})", len(self.outbox.pending()))

    def _retry_later(self, message: OutboxMessage, errors: Sequence[ChannelError], reason: str) -> None:
        exponent = min(message.attempts, MAX_BACKOFF_EXPONENT)
        backoff = min(self.settings.retry_backoff_seconds * (2**exponent), MAX_BACKOFF_SECONDS)
        limited = [e.retry_after for e in errors if e.kind == "rate_limited" and e.retry_after]
        if limited:
            backoff = max(backoff, min(min(limited), self.settings.rate_limit_backoff_seconds))
        self.outbox.mark_failed(message.id, reason, self.clock.now() + backoff)
        self.audit.record("notification_failed", message.session, detail=f"{message.title}: {reason}")

    def _bury(self, message: OutboxMessage, errors: Sequence[ChannelError]) -> None:
        """End a message every channel refused for good: said once, with each errcode's fix."""
        verdicts = "; ".join(verdict(e.channel, e.errcode, e.refusal) for e in errors if e.refusal is not None)
        scope = "channel" if any(e.refusal is not None and e.refusal.scope == "channel" for e in errors) else "message"
        self.outbox.mark_dead(message.id, redact(verdicts), scope)
        for e in errors:
            self.metrics.notifications_dead.labels(channel=e.channel, errcode=str(e.errcode)).inc()
        log.error("notification %d %r not delivered, will not be retried: %s", message.id, message.title, verdicts)
        self.audit.record("notification_dead", message.session, detail=f"{message.title}: {verdicts}")

    # degradation -----------------------------------------------------------------------
    def _degrade(self, reason: str, pending: int) -> None:
        if self.degraded_reason is not None:
            return
        self.degraded_reason = reason
        log.warning("notifications degraded: %s; %d message(s) kept in the outbox", reason, pending)
        self.metrics.notifications_degraded.set(1)
        self.metrics.notifications_degraded_episodes.inc()
        self.audit.record("notifications_degraded", None, detail=reason)
        self._set_health("degraded", reason, pending)

    def _recover(self, how: str, pending: int) -> None:
        self.degraded_reason = None
        log.info("notifications recovered: %s; %d message(s) still queued", how, pending)
        self.metrics.notifications_degraded.set(0)
        self.audit.record("notifications_recovered", None, detail=how)
        self._set_health("ok", how, pending)

    def _set_health(self, state: str, reason: str, pending: int) -> None:
        self.outbox.set_health(health_record(state, reason, describe(self.channels), pending, self.clock.now()))
