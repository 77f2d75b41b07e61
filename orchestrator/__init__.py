"""tmuxagent orchestrator: supervises AI coding agents running in tmux panes."""

from __future__ import annotations

__version__ = "0.1.0"
