"""WeCom's size limits, and cutting a message to them without breaking it.

Why this exists: WeCom counts a message's `content` in UTF-8 *bytes* (webhook `markdown` and
`markdown_v2`: 4096, webhook `text`: 2048, app `markdown`: 2048) and refuses a longer one
(errcode 40058 or 45002) — for good, so an uncut failure alert with a long Chinese output tail
(2,340 characters, 6,295 bytes) never arrives. A CJK character is 3 bytes, so counting characters
is not enough, and a cut in the middle of a character would make the JSON invalid UTF-8.

What gives way is the output tail (the last fenced block, as `notifier.alert_markdown` lays it
out): its *oldest* lines go first, replaced by a visible "… N lines cut" line, so the title, the
session line and the newest output (where the error usually is) survive. Only when the rest of
the message alone is over the limit is the whole text cut, at a character boundary, with a mark.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

MsgType = Literal["text", "markdown", "markdown_v2"]
#: The group robot's limits per `msgtype` (bytes of `content`, UTF-8).
WEBHOOK_LIMITS: Mapping[MsgType, int] = {"text": 2048, "markdown": 4096, "markdown_v2": 4096}
#: The self-built app's `markdown` limit (bytes of `content`, UTF-8).
APP_MARKDOWN_LIMIT = 2048
FENCE = "```"
ELLIPSIS = "…"
CUT_MARK = f"{ELLIPSIS} message cut to fit WeCom's size limit"


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def head_bytes(text: str, limit: int) -> str:
    """The longest start of `text` that is at most `limit` UTF-8 bytes (never half a character)."""
    return text.encode("utf-8")[: max(0, limit)].decode("utf-8", errors="ignore")


def tail_bytes(text: str, limit: int) -> str:
    """The longest end of `text` that is at most `limit` UTF-8 bytes (never half a character)."""
    if limit <= 0:
        return ""
    return text.encode("utf-8")[-limit:].decode("utf-8", errors="ignore")


def lines_cut_mark(count: int) -> str:
    return f"{ELLIPSIS} {count} lines cut"


def fit(content: str, limit: int) -> str:
    """`content` itself when it fits in `limit` bytes, else a cut copy that does (see the module doc)."""
    if utf8_len(content) <= limit:
        return content
    shortened = _cut_last_fenced_block(content, limit)
    if shortened is not None:
        return shortened
    mark = "\n" + CUT_MARK
    return head_bytes(content, limit - utf8_len(mark)) + mark


def _last_fenced_block(lines: list[str]) -> tuple[int, int] | None:
    """Indexes of the opening and closing fence lines of the last fenced block, if any."""
    closing = next((i for i in range(len(lines) - 1, 0, -1) if lines[i].strip() == FENCE), None)
    if closing is None:
        return None
    opening = next((i for i in range(closing - 1, -1, -1) if lines[i].lstrip().startswith(FENCE)), None)
    return None if opening is None else (opening, closing)


def _cut_last_fenced_block(content: str, limit: int) -> str | None:
    """Drop the block's oldest lines (then the start of its newest one) until `content` fits."""
    lines = content.split("\n")
    block = _last_fenced_block(lines)
    if block is None:
        return None
    opening, closing = block
    head, body, foot = lines[: opening + 1], lines[opening + 1 : closing], lines[closing:]
    if not body:
        return None
    frame = utf8_len("\n".join(head)) + 1 + utf8_len("\n".join(foot))  # the newline before the foot
    sizes = [utf8_len(line) + 1 for line in body]  # each body line with its newline
    kept_bytes = sum(sizes)
    for dropped in range(1, len(body)):
        kept_bytes -= sizes[dropped - 1]
        if frame + utf8_len(lines_cut_mark(dropped)) + 1 + kept_bytes <= limit:
            kept = [lines_cut_mark(dropped), *body[dropped:]]
            return "\n".join([*head, *kept, *foot])
    # Only the newest line is left and it is still too long: keep its end, the newest output.
    dropped = len(body) - 1
    marks = ([lines_cut_mark(dropped)] if dropped else []) + [ELLIPSIS]
    room = limit - frame - sum(utf8_len(m) for m in marks) - (1 if dropped else 0) - 1
    if room <= 0:
        return None
    newest = tail_bytes(body[-1], room)
    kept = [*marks[:-1], ELLIPSIS + newest]
    result = "\n".join([*head, *kept, *foot])
    return result if utf8_len(result) <= limit else None
