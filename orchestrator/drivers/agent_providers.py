"""What differs between the agents: how each is launched with its feedback wired, which of its
events start and end a turn, where its transcript says what the turn did, and — as a fallback for
screens no event reports — what its ready prompt looks like.

Verified against Claude Code 2.1.197 and codex-cli 0.171.0 (see docs/agent-sessions.md):

* Claude Code: hooks from a settings file passed with `--settings` (`SessionStart`,
  `UserPromptSubmit` with `prompt`, `PreToolUse`, `PostToolUse`, `Notification`, `Stop` with
  `last_assistant_message`); each payload names `transcript_path`, a JSONL of `user` /
  `assistant` entries whose `message.content` holds `text` and `tool_use` blocks.
* codex: the `notify` program (`-c notify=[…]`) gets `{"type": "agent-turn-complete",
  "thread-id", "turn-id", "input-messages", "last-assistant-message"}` — also for its own
  title task, which is told apart by its input; the rollout JSONL under
  `CODEX_HOME/sessions/**/rollout-*-<thread-id>.jsonl` holds the turn's `function_call` items.

Each provider lives in its own module (`claude_provider`, `codex_provider`, over what they share
in `provider_base`); this one names them for the agent driver.
"""

from __future__ import annotations

from orchestrator.drivers.claude_provider import ClaudeProvider
from orchestrator.drivers.codex_provider import CodexProvider

PROVIDERS: dict[str, type[ClaudeProvider] | type[CodexProvider]] = {"claude": ClaudeProvider, "codex": CodexProvider}
