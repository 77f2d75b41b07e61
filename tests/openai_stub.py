"""A local stand-in for the OpenAI Chat Completions endpoint, for the `openai` backend's tests:
a real HTTP server on 127.0.0.1 that records requests and answers from a script (completions,
error statuses with OpenAI's error body, or any raw body)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One answer: a completion with `content`, or an error body for a `status` other than 200;
    `body` (with `content_type`) replaces either, e.g. the HTML page a captive portal sends."""

    content: str | None = None
    status: int = 200
    delay: float = 0.0
    body: bytes | None = None
    content_type: str = "application/json"


@dataclass
class OpenAIStub:
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                stub.requests.append(
                    {"path": self.path, "json": body, "headers": {k.lower(): v for k, v in self.headers.items()}}
                )
                reply = stub.replies[min(len(stub.requests), len(stub.replies)) - 1] if stub.replies else Reply("{}")
                time.sleep(reply.delay)
                payload = {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": reply.content},
                        }
                    ],
                }
                if reply.status != 200:
                    payload = {"error": {"message": "injected failure", "type": "server_error"}}
                data = json.dumps(payload).encode() if reply.body is None else reply.body
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
