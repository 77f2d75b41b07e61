"""The OpenAI Responses API encoding: error shapes, the JSON response and its SSE stream."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import Any, Optional

from .replies import Message, TextBlock
from .requests import DEFAULT_MODELS, ModelRequest
from .wire import Handler, chunks, input_token_count, new_id, output_token_count

OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request"),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", None, "Not found"),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", "server_is_overloaded", "The server is overloaded. Please try again later."),
    529: ("server_error", "server_is_overloaded", "The server is overloaded. Please try again later."),
}


def _openai_items(message: Message, calls: list[str], status: str) -> list[dict[str, Any]]:
    ids = iter(calls)
    items: list[dict[str, Any]] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            items.append(
                {
                    "id": new_id("msg_"),
                    "type": "message",
                    "role": "assistant",
                    "status": status,
                    "content": [{"type": "output_text", "text": block.text, "annotations": [], "logprobs": []}],
                }
            )
        else:
            items.append(
                {
                    "id": new_id("fc_"),
                    "type": "function_call",
                    "status": status,
                    "call_id": next(ids),
                    "name": block.name,
                    "arguments": json.dumps(dict(block.input)),
                }
            )
    return items


def openai_response(
    rec: ModelRequest,
    message: Message,
    calls: list[str],
    status: str,
    items: Optional[list[dict[str, Any]]] = None,
    response_id: Optional[str] = None,
) -> dict[str, Any]:
    done = status == "completed"
    output = (items if items is not None else _openai_items(message, calls, "completed")) if done else []
    input_tokens, output_tokens = input_token_count(rec), output_token_count(message)
    body = rec.body
    return {
        "id": response_id or new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": rec.model or DEFAULT_MODELS[1],
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "store": body.get("store", False),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }
        if done
        else None,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def stream_openai(h: Handler, rec: ModelRequest, message: Message, calls: list[str], pause: Callable[[], None]) -> None:
    seq = itertools.count()
    response_id = new_id("resp_")

    def event(kind: str, /, **payload: Any) -> None:
        h._event(kind, {"type": kind, "sequence_number": next(seq), **payload})

    event(
        "response.created",
        response=openai_response(rec, message, calls, "in_progress", response_id=response_id),
    )
    event(
        "response.in_progress",
        response=openai_response(rec, message, calls, "in_progress", response_id=response_id),
    )
    items = _openai_items(message, calls, "completed")
    first = True
    for index, item in enumerate(items):
        if item["type"] == "message":
            part = item["content"][0]
            event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part={**part, "text": ""},
            )
            for chunk in chunks(part["text"]):
                event(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=chunk,
                    logprobs=[],
                )
                if first:
                    first = False
                    pause()
            event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
                logprobs=[],
            )
            event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part)
        else:
            event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            for chunk in chunks(item["arguments"], 3):
                event("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=chunk)
                if first:
                    first = False
                    pause()
            event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
        event("response.output_item.done", output_index=index, item=item)
    if first:
        pause()
    event(
        "response.completed",
        response=openai_response(rec, message, calls, "completed", items=items, response_id=response_id),
    )
