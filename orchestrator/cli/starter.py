"""Commented starter files written by `tmux-agent init`."""

from __future__ import annotations

AGENT_CONFIG = """\
# agent-config.yaml — which tmux panes tmuxagent supervises.
tmux:
  socket_name: agents          # tmux -L NAME; or socket_path: /path/to/socket (tmux -S)
state_db: .tmuxagent/state.db  # relative paths resolve against this file's folder
log_dir: .tmuxagent/logs       # orchestrator-actions.jsonl and orchestrator.log live here
sessions:
  - name: weather/bot          # an agent session, named like a branch
    target: "weather:bot"      # tmux target: session:window[.pane] or a pane id like %3
    workdir: .
    # requirements_doc: docs/weather_bot_end_to_end_plan.md
    # interrupt_keys: ["C-c"]  # what a stall sends; e.g. ["Escape"] for an agent TUI
"""

ORCHESTRATOR_TOML = """\
# .tmuxagent/orchestrator.toml — supervisor knobs.
stall_timeout_seconds = 120        # no new output for this long = a stall
stall_retries_before_notify = 2    # interrupts + retries before "命令卡顿" is sent
failure_alert_threshold = 3        # consecutive failures before "命令连续失败" and a block
cooldown_seconds = 60              # quiet time for a session after a stall
poll_interval_seconds = 0.1        # how often the queue is checked for new commands
output_tail_lines = 20             # lines of output kept in last_command_result
metrics_host = "127.0.0.1"
metrics_port = 9108
env_file = "~/.env"                # WECOM_*, OPENAI_API_KEY, CODEX_TIMEOUT_SECONDS; re-read while running

[codex]
bin = "codex"                      # may be a shell string, e.g. ". ~/.proxy-on.sh && proxychains4 -q codex"
extra_args = []                    # your agent's flags; decision calls never get them, unless:
# inherit_args = []                # "decision" / "decomposition": those calls use extra_args instead of
                                   # their safe flags (read-only sandbox, approvals never asked, --ephemeral)
timeout_seconds = 120              # CODEX_TIMEOUT_SECONDS wins (also the openai backend's timeout)
# output_schema = true             # pass --output-schema FILE (the JSON Schema of the answer)

[ai]
backend = "codex"                  # codex | openai | off (rule-based advice, Markdown decomposition)
# openai_model = "gpt-4o-mini"
# openai_base_url = ""             # default: OPENAI_BASE_URL, else the official API

[decision]                         # decision assist: blockers → next_actions and "下一步建议"
enabled = true
# blocker_patterns = []            # regexes that make a pane line a blocker (besides missing-API-key ones)
# notify_min_priority = "medium"
# auto_run = false                 # run allowlisted, non-high-risk suggestions without approval
# allowlist = []                   # regexes, e.g. ["^make test$"]
# denylist = []                    # regexes denied on top of the built-in destructive ones
# approval_risk = "high"           # this risk and above waits for `tmux-agent approve SESSION ID`

[plan]                             # requirements_doc → task_decomposition → commands
enabled = true
auto_execute = false               # a new plan waits for `tmux-agent approve SESSION plan`; true runs it at once
"""
