"""The `codex` AI backend: one `codex exec --json` run per question, read as it streams.

The call (`CodexBackend.argv`):

    <bin> exec <flags of the call type> --ephemeral --skip-git-repo-check --json
         [-c model_providers.<id>.request_max_retries=0 -c ….stream_max_retries=0]
         --output-schema <tmp>/<name>.schema.json --output-last-message <tmp>/last-message.txt -

*Flags of the call type.* A decision or decomposition prompt carries pane output, which anyone
who can print to the pane controls; so by default these calls run with their own safe flags
(`SAFE_FLAGS`: a read-only sandbox, approvals never asked, so nothing the model proposes can
write or wait for a person) and never `[codex] extra_args`, which are the user's agent flags
(the playbook's `--dangerously-bypass-approvals-and-sandbox`). `[codex] inherit_args` names the
call types that get `extra_args` instead, for a user who wants exactly that.

*Ephemeral.* `--ephemeral` writes no session file: without it every call left one rollout in
`CODEX_HOME/sessions`.

*The event stream decides.* codex reports a failed model request at once as an `error` event
(`Reconnecting... 1/5 (unexpected status 401 …)`, `Reconnecting... waiting for network …`) and
then keeps retrying — with backoff for a 5xx (~25 s), for ever while the network is down — and a
final `turn.failed`. The first `error` or `turn.failed` ends the call: the process group is
killed and its message (without the "Reconnecting..." wrapper) is the detail, classified by
`kind_of_message`. For a provider defined in codex's `config.toml`, request and stream retries
are set to 0 for these calls, so an unreachable server reports at once instead of after the
transport's own retries (~3 s). A non-JSON line on stdout or an item of type `error` (codex's
warnings, e.g. unknown model metadata) does not end anything.

*The detail is the meaningful line.* A non-zero exit without an event (codex refused its command
line, a config error) records the `error: …` line (`usage_error` for the CLI's exit 2), not the
"For more information, try '--help'." that follows it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from orchestrator.adapters.ai_base import AIError, AIRequest, EnvFn, kind_for_status, wire_schema
from orchestrator.adapters.children import die_with_parent, marked_env, start_group_watcher, stop_group
from orchestrator.config import CodexConfig
from orchestrator.payloads import AIErrorKind

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PLAIN_BIN = re.compile(r"[\w./~+@-]+")
KILL_GRACE_SECONDS = 2.0
SAFE_FLAGS: tuple[str, ...] = ("--sandbox", "read-only", "-c", 'approval_policy="never"')
"""The flags of a decision or decomposition call unless `[codex] inherit_args` names its type."""
MECHANICS: tuple[str, ...] = ("--ephemeral", "--skip-git-repo-check", "--json")
"""Flags every call needs whatever its type (added once: codex refuses a flag given twice)."""
NO_RETRIES = ("request_max_retries", "stream_max_retries")

_RECONNECTING = re.compile(r"^Reconnecting\.\.\.\s*(?:\d+/\d+|waiting for network)?\s*\((?P<inner>.*)\)\s*$", re.S)
_STATUS = re.compile(r"\b(?:unexpected )?status (?P<status>\d{3})\b")
_NETWORK = re.compile(r"connection (?:failed|refused|reset)|error sending request|stream disconnected|dns", re.I)
_MISSING_KEY = re.compile(r"missing environment variable|OPENAI_API_KEY|no api key|not logged in|login", re.I)
_HINT_LINES = re.compile(r"^(?:For more information, try|Usage:|\s+codex |\s*tip:|WARNING:)")


# the event stream -------------------------------------------------------------------------------
def event_message(text: str) -> str:
    """An `error` event's message without codex's retry wrapper.

    >>> event_message("Reconnecting... 2/5 (unexpected status 401 Unauthorized: bad key)")
    'unexpected status 401 Unauthorized: bad key'
    >>> event_message("Reconnecting... waiting for network (Connection failed: error sending request)")
    'Connection failed: error sending request'
    """
    match = _RECONNECTING.match(text.strip())
    return match.group("inner").strip() if match else text.strip()


def kind_of_message(message: str) -> AIErrorKind:
    """The kind of a codex error message (an `error`/`turn.failed` event's).

    codex words a 5xx as "We're currently experiencing high demand…" without the status, so that
    phrase counts as a server error too.

    >>> kind_of_message("unexpected status 401 Unauthorized: Incorrect API key provided.")
    'auth'
    >>> kind_of_message("We’re currently experiencing high demand, which may cause temporary errors.")
    'server_error'
    >>> kind_of_message("Connection failed: error sending request")
    'network'
    """
    status = _STATUS.search(message)
    if status:
        return kind_for_status(int(status.group("status")))
    if "high demand" in message or "internal server error" in message.lower():
        return "server_error"
    if _NETWORK.search(message):
        return "network"
    if _MISSING_KEY.search(message):
        return "missing_api_key"
    return "api_error"


def fatal_event(event: object) -> str | None:
    """The message of an event that ends the call (`error`, `turn.failed`), else None."""
    if not isinstance(event, dict):
        return None
    if event.get("type") == "error":
        return event_message(str(event.get("message") or "codex reported an error"))
    if event.get("type") == "turn.failed":
        error = event.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        return event_message(str(message or "the turn failed"))
    return None


def agent_message(event: object) -> str | None:
    """The text of a completed agent message item, else None."""
    if not isinstance(event, dict) or event.get("type") != "item.completed":
        return None
    item = event.get("item")
    if isinstance(item, dict) and item.get("type", item.get("item_type")) in ("agent_message", "assistant_message"):
        return str(item.get("text") or "")
    return None


def final_message_from_events(stdout: str) -> str:
    """The last agent message of a `codex exec --json` JSONL stream ('' when there is none)."""
    message = ""
    for line in stdout.splitlines():
        try:
            text = agent_message(json.loads(line))
        except ValueError:
            continue
        if text is not None:
            message = text
    return message


def meaningful_line(stderr: str) -> str:
    """The line that says what went wrong: the first `error: …`/`Error: …`, else the last line
    that is not a hint ("For more information, try '--help'.", usage, tips, warnings)."""
    lines = [line.rstrip() for line in (stderr or "").splitlines() if line.strip()]
    for line in lines:
        if re.match(r"^(?:error|Error)\b", line):
            return line.strip()
    useful = [line for line in lines if not _HINT_LINES.match(line)]
    return (useful or lines or [""])[-1].strip()


@dataclass
class _Stream:
    """What a running codex printed, read on threads so a fatal event is seen as it arrives."""

    proc: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)
    stderr: list[bytes] = field(default_factory=list)
    fatal: str | None = None
    message: str | None = None
    ended: threading.Event = field(default_factory=threading.Event)  # a fatal event, or stdout closed
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, prompt: str) -> None:
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        for target, args in (
            (self._feed, (self.proc.stdin, prompt.encode("utf-8"))),
            (self._read_events, (self.proc.stdout,)),
            (self._read_stderr, (self.proc.stderr,)),
        ):
            thread = threading.Thread(target=target, args=args, daemon=True, name="codex-io")
            thread.start()
            self.threads.append(thread)

    @staticmethod
    def _feed(pipe: IO[bytes], data: bytes) -> None:
        try:
            pipe.write(data)
        except OSError:  # codex exited (or was killed) without reading it all
            pass
        finally:
            try:
                pipe.close()
            except OSError:
                pass

    def _read_events(self, pipe: IO[bytes]) -> None:
        try:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.lines.append(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                text = agent_message(event)
                if text is not None:
                    self.message = text
                fatal = fatal_event(event)
                if fatal is not None and self.fatal is None:
                    self.fatal = fatal
                    break
        except (OSError, ValueError):  # the pipe was closed under us at the end
            pass
        finally:
            self.ended.set()

    def _read_stderr(self, pipe: IO[bytes]) -> None:
        try:
            for chunk in iter(lambda: pipe.read1(65536), b""):  # type: ignore[attr-defined]
                self.stderr.append(chunk)
        except (OSError, ValueError):
            pass

    def finish(self) -> None:
        """Wait (briefly, in all) for the readers after the process ended or was killed, then
        close the pipes they are done with. A pipe still held open by a child that left the
        group is left to its daemon thread: closing it under a blocked read would block us."""
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for thread, pipe in zip(self.threads[1:], (self.proc.stdout, self.proc.stderr), strict=False):
            if pipe is not None and not thread.is_alive():
                try:
                    pipe.close()
                except OSError:
                    pass

    @property
    def stderr_text(self) -> str:
        return b"".join(self.stderr).decode("utf-8", "replace")

    @property
    def plain_output(self) -> str:
        """Stdout lines that are not events (a wrapper that printed the answer as text)."""
        plain = []
        for line in self.lines:
            try:
                json.loads(line)
            except ValueError:
                plain.append(line)
        return "\n".join(plain)


# settings read from codex's own config ------------------------------------------------------------
def codex_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("CODEX_HOME") or Path(env.get("HOME") or Path.home()) / ".codex").expanduser()


def no_retry_overrides(env: Mapping[str, str]) -> list[str]:
    """`-c` overrides that turn codex's request and stream retries off for the configured
    provider — only for one defined in `config.toml` (codex refuses overrides of its built-in
    providers); [] when there is none or the file cannot be read."""
    try:
        config = tomllib.loads((codex_home(env) / "config.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    provider = config.get("model_provider")
    providers = config.get("model_providers")
    if not isinstance(provider, str) or not isinstance(providers, dict) or provider not in providers:
        return []
    if not re.fullmatch(r"[A-Za-z0-9_-]+", provider):  # a dotted path segment must stay one segment
        return []
    return [arg for key in NO_RETRIES for arg in ("-c", f"model_providers.{provider}.{key}=0")]


# the backend ------------------------------------------------------------------------------------
@dataclass
class CodexBackend:
    config: CodexConfig
    env: EnvFn
    name: Literal["codex"] = "codex"
    _running: set[subprocess.Popen[bytes]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def call_flags(self, request: AIRequest) -> list[str]:
        """The flags that decide what this call may do: the safe ones, or `extra_args` when the
        user opted this call type in (`[codex] inherit_args`)."""
        if request.task in self.config.inherit_args:
            return list(self.config.extra_args)
        return list(SAFE_FLAGS)

    def argv(self, request: AIRequest, schema_file: Path, out_file: Path, env: Mapping[str, str]) -> list[str]:
        flags = self.call_flags(request)
        tail = ["exec", *flags, *(flag for flag in MECHANICS if flag not in flags), *no_retry_overrides(env)]
        if self.config.output_schema:
            tail += ["--output-schema", str(schema_file)]
        tail += ["--output-last-message", str(out_file), "-"]  # the prompt comes on stdin
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
            argv = self.argv(request, schema_file, out_file, env)
            stream, code = self._run(argv, request, env, timeout)
            if stream.fatal is not None:
                raise AIError(kind_of_message(stream.fatal), stream.fatal)
            stderr = stream.stderr_text
            if code in (126, 127) and argv[0].endswith("sh") and argv[1:2] == ["-c"]:
                raise AIError("missing_binary", f"shell exit {code}: {meaningful_line(stderr)}")
            if code != 0:
                kind: AIErrorKind = (
                    "usage_error" if code == 2 and meaningful_line(stderr).startswith("error:") else "exit_nonzero"
                )
                raise AIError(kind, f"exit {code}: {meaningful_line(stderr) or meaningful_line(stream.plain_output)}")
            try:
                message = out_file.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                message = ""
        for candidate in (message, stream.message or "", stream.plain_output):
            if candidate.strip():
                return candidate
        return ""

    def _run(
        self, argv: list[str], request: AIRequest, env: dict[str, str], timeout: float
    ) -> tuple[_Stream, int | None]:
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
        stream = _Stream(proc)
        deadline = time.monotonic() + timeout
        try:
            stream.start(request.prompt)
            if not stream.ended.wait(timeout) or stream.fatal is not None:
                _kill_group(proc)
                if stream.fatal is None:
                    raise AIError("timeout", f"no answer within {timeout:g}s (killed)")
                return stream, None
            try:  # stdout closed: codex is exiting
                code = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise AIError("timeout", f"no answer within {timeout:g}s (killed)") from None
            return stream, code
        finally:
            stop_group(proc.pid, watcher)  # nothing the call started outlives it
            stream.finish()
            with self._lock:
                self._running.discard(proc)

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
        proc.wait(timeout=KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=KILL_GRACE_SECONDS)
