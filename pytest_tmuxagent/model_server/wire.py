"""The wire: the HTTP handler (request bodies, JSON and SSE framing), ids, delta chunks, token counts."""

from __future__ import annotations

import gzip
import json
import re
import secrets
import zlib
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .replies import Message, TextBlock
from .requests import ModelRequest

if TYPE_CHECKING:
    from .server import ModelServer


class Abort(Exception):
    """The server is stopping: drop the connection without finishing the stream."""


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + secrets.token_hex(length // 2)


def id_headers(rec: ModelRequest) -> dict[str, str]:
    if rec.provider == "openai":
        return {"x-request-id": new_id("req_")}
    return {"request-id": new_id("req_")}


def chunks(value: str, parts: int = 0) -> list[str]:
    """Split text into delta chunks (words, a few at a time); at least ``parts`` chunks when the
    text is long enough."""
    if parts:
        size = max(1, -(-len(value) // parts))
        return [value[i : i + size] for i in range(0, len(value), size)] or [""]
    words = re.findall(r"\s*\S+\s*", value) or [value]
    return ["".join(words[i : i + 3]) for i in range(0, len(words), 3)]


def input_token_count(rec: ModelRequest) -> int:
    return max(1, len(json.dumps(rec.json)) // 4)


def output_token_count(message: Message) -> int:
    return max(
        1, sum(len(b.text if isinstance(b, TextBlock) else json.dumps(dict(b.input))) for b in message.blocks) // 4
    )


class Handler(BaseHTTPRequestHandler):
    model_server: ModelServer  # set on a per-server subclass
    protocol_version = "HTTP/1.1"

    # -- transport helpers
    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
            body = bytes(data)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
        except (OSError, zlib.error):
            pass
        return body

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] = {}) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_bytes(self, status: int, data: bytes, content_type: str, headers: Mapping[str, str] = {}) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _start_stream(self, headers: Mapping[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _event(self, name: str, payload: Mapping[str, Any]) -> None:
        self._chunk(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- entry points
    def do_POST(self) -> None:
        split = urlsplit(self.path)
        raw = self._read_body()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        server = self.model_server
        rec = server._record(self.command, split.path, parse_qs(split.query), self.headers.items(), parsed)
        try:
            server._serve(self, rec)
        except Abort:
            self.close_connection = True
            self._drop()
        except OSError:
            self.close_connection = True  # the client went away; nothing to tell it

    do_GET = do_POST

    def _drop(self) -> None:
        try:
            self.connection.shutdown(2)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the recorded requests are the log (and headers are never logged)."""
