#!/usr/bin/env bash
# The playbook's one-command self-check: every line ok/FAIL with a fix; exit 0 only if all pass.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="tmux-agent"
[ -x "$here/.venv/bin/tmux-agent" ] && bin="$here/.venv/bin/tmux-agent"
exec "$bin" doctor "$@"
