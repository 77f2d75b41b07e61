"""The Anthropic Messages API encoding: error shapes, the JSON message and its SSE stream."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .replies import Message, TextBlock
from .requests import DEFAULT_MODELS, ModelRequest
from .wire import Handler, chunks, input_token_count, new_id, output_token_count

ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def _anthropic_usage(rec: ModelRequest, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_token_count(rec),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def _anthropic_blocks(message: Message, calls: list[str]) -> list[dict[str, Any]]:
    ids = iter(calls)
    return [
        {"type": "text", "text": b.text}
        if isinstance(b, TextBlock)
        else {"type": "tool_use", "id": next(ids), "name": b.name, "input": dict(b.input)}
        for b in message.blocks
    ]


def anthropic_message(rec: ModelRequest, message: Message, calls: list[str]) -> dict[str, Any]:
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": rec.model or DEFAULT_MODELS[0],
        "content": _anthropic_blocks(message, calls),
        "stop_reason": message.stop_reason,
        "stop_sequence": None,
        "usage": _anthropic_usage(rec, output_token_count(message)),
    }


def stream_anthropic(
    h: Handler, rec: ModelRequest, message: Message, calls: list[str], pause: Callable[[], None]
) -> None:
    start = anthropic_message(rec, message, calls)
    start.update(content=[], stop_reason=None, usage=_anthropic_usage(rec, 1))
    h._event("message_start", {"type": "message_start", "message": start})
    h._event("ping", {"type": "ping"})
    first = True
    for index, block in enumerate(_anthropic_blocks(message, calls)):
        if block["type"] == "text":
            h._event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            )
            deltas = [{"type": "text_delta", "text": c} for c in chunks(block["text"])]
        else:
            h._event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}},
            )
            deltas = [{"type": "input_json_delta", "partial_json": c} for c in chunks(json.dumps(block["input"]), 3)]
        for delta in deltas:
            h._event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            if first:
                first = False
                pause()
        h._event("content_block_stop", {"type": "content_block_stop", "index": index})
    if first:
        pause()
    h._event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_token_count(message)},
        },
    )
    h._event("message_stop", {"type": "message_stop"})
