"""The safety policy for an agent's tool requests (Claude Code's permission dialog, codex's
approval prompt): answer alone where the answer is clear, ask a person otherwise.

In order, for a shell tool's command:

1. destructive (the built-in deny patterns, `[approvals] denylist`, a recursive rm of / or home)
   → `deny`;
2. high risk (sudo, rm -r, git push, …) with `[approvals] deny_risky = true` (the default)
   → `deny`;
3. matching an `[approvals] allowlist` regex over the *whole* command → `approve` (so
   `^make test$` never approves `make test; curl …`);
4. anything else, and any tool that is not a shell command → `escalate`: `需要确认` to a person,
   answered with `tmux-agent approve SESSION` / `tmux-agent deny SESSION`.
"""

from __future__ import annotations

import re

from orchestrator.assist.safety import RISKY_PATTERNS, SafetyPolicy
from orchestrator.config import ApprovalSettings, DecisionSettings
from orchestrator.model import ApprovalRequest, ApprovalRuling

ASK = "a person decides: tmux-agent approve SESSION / tmux-agent deny SESSION"


class ToolApprovalPolicy:
    def __init__(self, settings: ApprovalSettings) -> None:
        self.settings = settings
        self.safety = SafetyPolicy(DecisionSettings(denylist=settings.denylist))
        self.allow = [re.compile(p) for p in settings.allowlist]
        self.risky = [re.compile(p) for p in RISKY_PATTERNS]

    def rule(self, session: str, request: ApprovalRequest) -> ApprovalRuling:
        """The verdict on one request, with the reason the person and the audit log read.

        >>> from orchestrator.config import ApprovalSettings
        >>> policy = ToolApprovalPolicy(ApprovalSettings(allowlist=(r"touch \\S+",)))
        >>> policy.rule("s", ApprovalRequest("k", "Bash", "touch a.txt")).verdict
        'approve'
        >>> policy.rule("s", ApprovalRequest("k", "Bash", "touch a.txt; sudo reboot")).verdict
        'deny'
        >>> policy.rule("s", ApprovalRequest("k", "Bash", "make deploy")).verdict
        'escalate'
        """
        command = request.command.strip()
        if not command:
            return ApprovalRuling("escalate", f"the {request.tool} tool is not a shell command; {ASK}")
        why = self.safety.denied(command)
        if why is not None:
            return ApprovalRuling("deny", f"denied by the safety policy ({why})")
        risky = next((p.pattern for p in self.risky if p.search(command)), None)
        if risky is not None and self.settings.deny_risky:
            return ApprovalRuling(
                "deny", f"high risk (matches {risky!r}); [approvals] deny_risky = false asks a person"
            )
        if risky is None:
            allowed = next((p.pattern for p in self.allow if p.fullmatch(command)), None)
            if allowed is not None:
                return ApprovalRuling("approve", f"allowlisted ([approvals] allowlist {allowed!r})")
        return ApprovalRuling("escalate", f"not allowlisted; {ASK}")
