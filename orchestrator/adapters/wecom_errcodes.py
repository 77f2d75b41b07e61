"""Which WeCom errcodes are final, what each means, and what the user does about it.

Why a table: WeCom answers most failures with HTTP 200 and an `errcode`. Some say "try again"
(-1 system busy, 45009 rate limit, 45033 too many concurrent calls, 40014/42001/42009 token
expired or invalid: the channel fetches a new token); retrying those is right. Others say
"this will never work as sent" — a wrong webhook key, a wrong secret, an IP WeCom does not
trust, no valid recipient, content WeCom will not take. Retrying those for ever only keeps the
outbox and the degraded gauge stuck, so the notifier ends such a message as `dead`, names the
errcode and the fix once, and goes on with the others.

`scope` says what the refusal is about:
- "channel": the channel's configuration (key, secret, ids, trusted IP, recipients). Every
  message on that channel will be refused the same way until the user fixes it, so it also
  counts as the channel failing (degraded when no other channel delivers).
- "message": this message's content. Other messages go through, so the channel stays healthy.

An errcode missing from the table is treated as transient (retried with backoff): a new or
undocumented code must not throw a message away. docs/notifications.md carries the same table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

RefusalScope = Literal["channel", "message"]


@dataclass(frozen=True)
class Refusal:
    """A final WeCom answer: what it means, and what the user should change."""

    meaning: str
    scope: RefusalScope
    fix: str


_WEBHOOK_AGAIN = "copy the robot's webhook URL again (group → 群机器人 → the robot) into WECOM_WEBHOOK"
_MESSAGE_BUG = "a message the product built was refused: please report it (the outbox keeps it as `dead`)"

PERMANENT_ERRCODES: Mapping[int, Refusal] = {
    # group robot (webhook)
    93000: Refusal("invalid webhook URL, or the robot was removed from the group", "channel", _WEBHOOK_AGAIN),
    93004: Refusal("the robot is disabled", "channel", "enable the robot again in the group's robot settings"),
    93008: Refusal("the robot is not in the group", "channel", "add the robot to the group, then update WECOM_WEBHOOK"),
    # self-built app: credentials and ids
    40001: Refusal("invalid secret", "channel", "set WECOM_APP_SECRET to the app's Secret (应用管理 → the app)"),
    40013: Refusal("invalid CorpID", "channel", "set WECOM_CORP_ID to the 企业ID (我的企业 → 企业信息)"),
    40056: Refusal("invalid agentid", "channel", "set WECOM_AGENT_ID to the app's AgentId (应用管理 → the app)"),
    41002: Refusal("corpid missing", "channel", "set WECOM_CORP_ID"),
    41004: Refusal("secret missing", "channel", "set WECOM_APP_SECRET"),
    41011: Refusal("agentid missing", "channel", "set WECOM_AGENT_ID"),
    301002: Refusal(
        "the secret does not belong to this app",
        "channel",
        "WECOM_APP_SECRET and WECOM_AGENT_ID must be of the same app",
    ),
    48002: Refusal("the app may not call this API", "channel", "check the app's API permissions in the admin console"),
    50003: Refusal("the app is disabled", "channel", "enable the app in 应用管理"),
    60020: Refusal(
        "this machine's IP is not a trusted IP of the app",
        "channel",
        "add this host's public IP to the app's 企业可信IP (or send through a proxy whose IP is listed)",
    ),
    # self-built app: recipients
    81013: Refusal(
        "every recipient (user, party, tag) is invalid or outside the app's visible range",
        "channel",
        "fix WECOM_TOUSER / WECOM_TOPARTY / WECOM_TOTAG, or widen the app's 可见范围",
    ),
    82001: Refusal("no recipient given", "channel", "set WECOM_TOUSER, WECOM_TOPARTY or WECOM_TOTAG"),
    60011: Refusal(
        "no permission for the given users, parties or tags",
        "channel",
        "widen the app's 可见范围 or change WECOM_TOUSER / WECOM_TOPARTY / WECOM_TOTAG",
    ),
    # the message itself
    40008: Refusal("invalid message type", "message", _MESSAGE_BUG),
    40058: Refusal("invalid parameter (for a message: usually content over the byte limit)", "message", _MESSAGE_BUG),
    44004: Refusal("empty content", "message", _MESSAGE_BUG),
    45002: Refusal("content over the size limit", "message", _MESSAGE_BUG),
    40033: Refusal("invalid characters in the request", "message", _MESSAGE_BUG),
    82004: Refusal("content WeCom considers unsafe for its clients", "message", _MESSAGE_BUG),
}

#: Answers that are retried (with backoff), documented beside the table.
TRANSIENT_ERRCODES: Mapping[int, str] = {
    -1: "system busy",
    45009: "rate limit (API calls over the limit): retried after rate_limit_backoff_seconds",
    45033: "too many concurrent calls",
    40014: "invalid access_token: a new token is fetched and the send tried once more",
    42001: "access_token expired: a new token is fetched and the send tried once more",
    42009: "token expired: a new token is fetched and the send tried once more",
}


def refusal(errcode: int | None) -> Refusal | None:
    """The final refusal `errcode` stands for, or None when it may work later."""
    return None if errcode is None else PERMANENT_ERRCODES.get(errcode)
