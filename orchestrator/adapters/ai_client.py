"""The AI client: one question in, one schema-valid JSON object out — or a named error.

Two backends answer the same `AIRequest`:

* `codex` runs `[codex] bin` + `exec` + `extra_args` non-interactively with the prompt on
  stdin, asks for JSON matching our schema (`--output-schema FILE`) and reads the final
  message from `-o FILE` (or from the `--json` event stream when `json_events` is on). `bin`
  may be a shell string (`. ~/.proxy-on.sh && proxychains4 -q codex`); it then runs under
  bash. Either way it leads its own process group, so a timeout kills the whole pipeline, and
  the group dies with the orchestrator, even by SIGKILL (`adapters/children.py`).
* `openai` calls the Chat Completions API through the `openai` package with structured output
  (`response_format` json_schema, strict) against the same schema; the base URL is
  configurable (`[ai] openai_base_url`, else `OPENAI_BASE_URL`).

Every failure is an `AIError` with one of `ERROR_KINDS`; callers fall back to rules.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import jsonschema

from orchestrator.adapters.children import die_with_parent, marked_env, start_group_watcher, stop_group
from orchestrator.adapters.metrics import OrchestratorMetrics
from orchestrator.config import CodexConfig, OrchestratorSettings
from orchestrator.payloads import ERROR_KINDS as ERROR_KINDS  # re-exported: the kinds every AIError has
from orchestrator.payloads import AIBackendName, AIErrorKind, AITask
from orchestrator.redact import redact

log = logging.getLogger("orchestrator.ai")

FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)\n?```", re.S)
PLAIN_BIN = re.compile(r"[\w./~+@-]+")
KILL_GRACE_SECONDS = 2.0
EnvFn = Callable[[], Mapping[str, str]]


class AIError(Exception):
    """A named failure of one AI call; `kind` is one of ERROR_KINDS."""

    def __init__(self, kind: AIErrorKind, detail: str) -> None:
        assert kind in ERROR_KINDS, kind
        self.kind: AIErrorKind = kind
        self.detail = redact(detail)
        super().__init__(f"{kind}: {self.detail}")


@dataclass(frozen=True)
class AIRequest:
    task: AITask  # a metric label
    prompt: str
    schema: dict[str, Any]
    schema_name: str  # a short identifier the OpenAI API wants for the schema
    cwd: Path | None = None
    check: Callable[[Any], None] | None = None  # extra semantic checks; raise ValueError to reject


class AIBackend(Protocol):
    @property
    def name(self) -> AIBackendName: ...

    def complete(self, request: AIRequest, timeout: float) -> str:
        """The raw final message text; raises AIError."""

    def close(self) -> None:
        """Stop whatever is still running (a hung codex)."""


def resolve_timeout(codex: CodexConfig, env: Mapping[str, str]) -> float:
    """`CODEX_TIMEOUT_SECONDS` (process env or env file) wins over `[codex] timeout_seconds`."""
    raw = env.get("CODEX_TIMEOUT_SECONDS")
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        value = 0.0
    return value if value > 0 else codex.timeout_seconds


def wire_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as sent to a model: without the keys only our validator cares about."""
    return {k: v for k, v in schema.items() if k not in ("$schema", "title", "description")}


def extract_json(text: str) -> Any:
    """The JSON object in a reply: bare, in a ```json fence, or the outermost {...} in prose."""
    text = (text or "").strip()
    if not text:
        raise AIError("empty_output", "the reply was empty")
    candidates = [text, *FENCE.findall(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    preview = " ".join(text.split())[:80]
    raise AIError("not_json", f"no JSON object in the reply ({len(text)} chars: {preview!r})")


def validate_reply(data: Any, request: AIRequest) -> Any:
    validator = jsonschema.Draft202012Validator(request.schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise AIError("schema_mismatch", f"{where}: {error.message[:200]}")
    if request.check is not None:
        try:
            request.check(data)
        except ValueError as exc:
            raise AIError("schema_mismatch", str(exc)) from None
    return data


# codex --------------------------------------------------------------------------------------
def final_message_from_events(stdout: str) -> str:
    """The last agent message of a `codex exec --json` JSONL stream ('' when there is none)."""
    message = ""
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        item = event.get("item") if isinstance(event, dict) else None
        if (
            event.get("type") == "item.completed"
            and isinstance(item, dict)
            and item.get("type", item.get("item_type")) in ("agent_message", "assistant_message")
        ):
            message = str(item.get("text") or "")
    return message


@dataclass
class CodexBackend:
    config: CodexConfig
    env: EnvFn
    name: Literal["codex"] = "codex"
    _running: set[subprocess.Popen[bytes]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def argv(self, schema_file: Path, out_file: Path, env: Mapping[str, str]) -> list[str]:
        tail = ["exec", *self.config.extra_args, "--skip-git-repo-check"]
        if self.config.output_schema:
            tail += ["--output-schema", str(schema_file)]
        tail += ["--output-last-message", str(out_file)]
        if self.config.json_events:
            tail.append("--json")
        tail.append("-")  # the prompt comes on stdin
        bin_text = self.config.bin.strip()
        if PLAIN_BIN.fullmatch(bin_text):
            program = os.path.expanduser(bin_text)
            found = shutil.which(program, path=env.get("PATH"))
            if found is None:
                raise AIError("missing_binary", f"{bin_text!r} not found on PATH or not executable")
            return [found, *tail]
        shell = shutil.which("bash", path=env.get("PATH")) or "/bin/sh"
        return [shell, "-c", f"{bin_text} {shlex.join(tail)}"]

    def complete(self, request: AIRequest, timeout: float) -> str:
        env = dict(self.env())
        with tempfile.TemporaryDirectory(prefix="tmuxagent-codex-") as tmp:
            schema_file, out_file = Path(tmp) / f"{request.schema_name}.schema.json", Path(tmp) / "last-message.txt"
            schema_file.write_text(json.dumps(wire_schema(request.schema)), encoding="utf-8")
            argv = self.argv(schema_file, out_file, env)
            stdout, stderr, code = self._run(argv, request, env, timeout)
            if code in (126, 127) and argv[0].endswith("sh") and argv[1:2] == ["-c"]:
                raise AIError("missing_binary", f"shell exit {code}: {_last_line(stderr)}")
            if code != 0:
                raise AIError("exit_nonzero", f"exit {code}: {_last_line(stderr) or _last_line(stdout)}")
            try:
                message = out_file.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                message = ""
        if not message.strip() and self.config.json_events:
            message = final_message_from_events(stdout)
        return message if message.strip() else stdout

    def _run(self, argv: list[str], request: AIRequest, env: dict[str, str], timeout: float) -> tuple[str, str, int]:
        cwd = str(request.cwd) if request.cwd and request.cwd.is_dir() else None
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=marked_env(env),  # a restart reaps it by this mark if we die without a word
                process_group=0,  # its own group (in our session, so the watcher may join it): killed as one
                preexec_fn=die_with_parent(),  # SIGKILL when we die, even by SIGKILL
            )
        except OSError as exc:  # vanished or lost its execute bit since the PATH lookup
            raise AIError("missing_binary", f"cannot run {argv[0]}: {exc.strerror}") from None
        watcher = start_group_watcher(proc.pid)  # kills the rest of the group (a pipeline, codex's children) with us
        with self._lock:
            self._running.add(proc)
        try:
            out, err = proc.communicate(request.prompt.encode("utf-8"), timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise AIError("timeout", f"no answer within {timeout:g}s (killed)") from None
        finally:
            stop_group(proc.pid, watcher)  # nothing the call started outlives it
            with self._lock:
                self._running.discard(proc)
        return out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), proc.returncode

    def close(self) -> None:
        with self._lock:
            running = list(self._running)
        for proc in running:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process group (a shell string's whole pipeline), then reap without hanging."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=KILL_GRACE_SECONDS)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        proc.kill()  # a child that left the group still holds a pipe: stop waiting for it


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


# openai -------------------------------------------------------------------------------------
@dataclass
class OpenAIBackend:
    model: str
    base_url: str | None
    env: EnvFn
    name: Literal["openai"] = "openai"
    _clients: set[Any] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def complete(self, request: AIRequest, timeout: float) -> str:
        import openai

        env = self.env()
        key = env.get("OPENAI_API_KEY")
        if not key:
            raise AIError("missing_api_key", "OPENAI_API_KEY is not set (process environment or env file)")
        client = openai.OpenAI(
            api_key=key, base_url=self.base_url or env.get("OPENAI_BASE_URL") or None, timeout=timeout, max_retries=0
        )
        with self._lock:
            self._clients.add(client)
        try:
            response = client.chat.completions.create(
                model=self.model,
                messages=[
                    {"role": "system", "content": "Answer with one JSON object that matches the schema."},
                    {"role": "user", "content": request.prompt},
                ],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": request.schema_name, "schema": wire_schema(request.schema), "strict": True},
                },
            )
        except openai.APITimeoutError:
            raise AIError("timeout", f"no answer within {timeout:g}s") from None
        except openai.APIStatusError as exc:
            raise AIError("api_error", f"HTTP {exc.status_code}: {str(exc)[:200]}") from None
        except openai.APIError as exc:
            raise AIError("api_error", f"{type(exc).__name__}: {str(exc)[:200]}") from None
        finally:
            with self._lock:
                self._clients.discard(client)
            client.close()
        choice = response.choices[0].message if response.choices else None
        refusal = getattr(choice, "refusal", None) if choice is not None else None
        if refusal:
            raise AIError("api_error", f"refused: {str(refusal)[:200]}")
        return (choice.content if choice is not None else "") or ""

    def close(self) -> None:
        """Close the connections of calls in flight, so shutting down never waits for their timeout."""
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.close()


def make_backend(settings: OrchestratorSettings, env: EnvFn) -> AIBackend | None:
    """The configured backend, or None when `[ai] backend = "off"` (rules only)."""
    if settings.ai.backend == "codex":
        return CodexBackend(settings.codex, env)
    if settings.ai.backend == "openai":
        return OpenAIBackend(settings.ai.openai_model, settings.ai.openai_base_url or None, env)
    return None


def ask_backend(backend: AIBackend, request: AIRequest, timeout: float) -> Any:
    """One validated answer, or AIError."""
    return validate_reply(extract_json(backend.complete(request, timeout)), request)


@dataclass
class Answer:
    data: Any | None
    backend: AIBackendName | None
    error: AIError | None
    latency_s: float


class AIClient:
    """The backend plus what every call needs: the timeout, metrics, and logging each error kind
    once (until a call succeeds again) rather than on every failure."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        env: EnvFn,
        metrics: OrchestratorMetrics,
        backend: AIBackend | None = None,
    ) -> None:
        self.settings = settings
        self.env = env
        self.metrics = metrics
        self.backend = backend if backend is not None else make_backend(settings, env)
        self._logged: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    def timeout(self) -> float:
        return resolve_timeout(self.settings.codex, self.env())

    def ask(self, session: str, request: AIRequest) -> Answer:
        if self.backend is None:
            return Answer(None, None, None, 0.0)
        name = self.backend.name
        self.metrics.ai_calls.labels(session=session, backend=name, task=request.task).inc()
        started = time.monotonic()
        try:
            data = ask_backend(self.backend, request, self.timeout())
        except AIError as exc:
            latency = time.monotonic() - started
            self.metrics.ai_errors.labels(session=session, backend=name, kind=exc.kind).inc()
            self.metrics.ai_latency.labels(session=session, backend=name).observe(latency)
            level = logging.DEBUG if exc.kind in self._logged else logging.WARNING
            self._logged.add(exc.kind)
            log.log(level, "%s %s for %s failed (%s); falling back to rules", name, request.task, session, exc)
            return Answer(None, name, exc, latency)
        latency = time.monotonic() - started
        self.metrics.ai_latency.labels(session=session, backend=name).observe(latency)
        if self._logged:
            log.info("%s answers again", name)
            self._logged.clear()
        return Answer(data, name, None, latency)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
