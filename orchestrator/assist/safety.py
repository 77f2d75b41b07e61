"""The safety policy for commands the orchestrator did not get from a person.

Suggested commands (decision assist) and plan-step commands never run on their own unless
this policy says so. In order:

1. a command matching the deny list (built-in destructive patterns plus `[decision] denylist`)
   is `denied`: never run, not even with approval;
2. a command whose risk is at or above `[decision] approval_risk` (default high) is
   `needs_approval`: it runs only after `tmux-agent approve SESSION ID`. The risk is the higher
   of what the AI said and what the command looks like (sudo, pushes, deletes are high);
3. with `[decision] auto_run = true`, a command matching the allowlist is `auto_run`;
4. anything else is `suggested`: shown, and run only after `tmux-agent approve`.

A **prompt** for an agent session (a suggestion's next prompt, a plan's prompt step) is judged
by the same command checks over its whole text — an agent given "run `git push --force`" will
likely run it — with `rm` caught wherever it appears in the prose, not only at a command's
start (`evaluate_prompt`, `denied_prompt`). A prompt is never `auto_run`: what an agent does
with it is not bounded by its text, so it runs only after `tmux-agent approve`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from orchestrator.config import DecisionSettings
from orchestrator.payloads import RISKS as RISKS  # re-exported: least risky first
from orchestrator.payloads import Policy, Risk, as_risk

DENY_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        r"\bgit\s+push\b[^;&|]*\s(?:--force(?:-with-lease)?\b|-[a-zA-Z]*f[a-zA-Z]*\b|\+\S)",
        "force push rewrites shared history",
    ),
    (
        r"\b(?:curl|wget|fetch)\b[^|;&]*\|\s*(?:sudo\s+)?(?:env\s+)?(?:ba|z|k|da|fi)?sh\b",
        "pipes a download into a shell",
    ),
    (r"\b(?:ba|z)?sh\s+(?:-c\s+)?[\"']?(?:\$\(|<\()\s*(?:curl|wget)\b", "runs a downloaded script"),
    (r"\bmkfs(?:\.\w+)?\b", "formats a file system"),
    (r"\bdd\b[^;&|]*\bof=/dev/", "overwrites a device"),
    (r">\s*/dev/(?:sd|nvme|hd|vd)[a-z0-9]*\b", "overwrites a device"),
    (r":\(\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:", "fork bomb"),
    (r"\b(?:shutdown|reboot|halt|poweroff)\b", "stops the machine"),
    (r"\bchmod\s+(?:-[a-zA-Z]*R[a-zA-Z]*\s+)\S*\s+/(?:\s|$)", "changes permissions of /"),
    (r"\bchown\s+(?:-[a-zA-Z]*R[a-zA-Z]*\s+)\S*\s+/(?:\s|$)", "changes ownership of /"),
    (r"\bgit\s+reset\s+--hard\b", "discards uncommitted work"),
    (r"\bgit\s+clean\s+-[a-zA-Z]*f", "deletes untracked files"),
    (r"(?i)\bdrop\s+(?:table|database|schema)\b", "drops a database object"),
)
RISKY_PATTERNS: tuple[str, ...] = (
    r"\bsudo\b",
    r"\bgit\s+push\b",
    r"\brm\s+-[a-zA-Z]*[rR]",
    r"\bkubectl\s+(?:delete|apply)\b",
    r"\bdocker\s+(?:system\s+prune|rm|rmi)\b",
    r"\bterraform\s+(?:apply|destroy)\b",
    r"\bnpm\s+publish\b",
    r"\btwine\s+upload\b",
    r"\bsystemctl\s+(?:stop|restart|disable)\b",
)
DANGEROUS_RM_TARGETS = {"/", "/*", "~", "~/", "~/*", "$HOME", "${HOME}", "$HOME/", "*", ".", "..", "./*", "../*"}
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/opt", "/root", "/sbin", "/usr", "/var")
SEPARATORS = {";", "&&", "||", "|", "&"}
RM_IN_PROSE = re.compile(r"(?<![\w./-])rm\s")
CODE_SPAN = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)|`([^`\n]+)`", re.S)


@dataclass(frozen=True)
class Verdict:
    policy: Policy
    reason: str
    risk: Risk = "low"

    @property
    def may_run_with_approval(self) -> bool:
        return self.policy in ("needs_approval", "suggested", "auto_run")


def _words(command: str) -> list[str]:
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        return list(lexer)
    except ValueError:  # unbalanced quotes: judge the raw words
        return command.split()


def destructive_rm(command: str) -> bool:
    """A recursive `rm` of /, a system directory, home, or everything here."""
    words = _words(command)
    for i, word in enumerate(words):
        if word.rsplit("/", 1)[-1] != "rm" or (i and words[i - 1] not in SEPARATORS | {"sudo", "command", "xargs"}):
            continue
        args: list[str] = []
        for arg in words[i + 1 :]:
            if arg in SEPARATORS:
                break
            args.append(arg)
        flags = [a for a in args if a.startswith("-")]
        recursive = any(
            f in ("--recursive", "-r", "-R") or (not f.startswith("--") and ("r" in f or "R" in f)) for f in flags
        )
        targets = {a for a in args if not a.startswith("-")}
        targets |= {t.rstrip("/") or "/" for t in targets}
        if recursive and any(t in DANGEROUS_RM_TARGETS or t in SYSTEM_DIRS for t in targets):
            return True
    return False


class SafetyPolicy:
    def __init__(self, settings: DecisionSettings) -> None:
        self.settings = settings
        self.deny = [(re.compile(p), why) for p, why in DENY_PATTERNS] + [
            (re.compile(p), f"matches denylist {p!r}") for p in settings.denylist
        ]
        self.allow = [re.compile(p) for p in settings.allowlist]
        self.risky = [re.compile(p) for p in RISKY_PATTERNS]

    def denied(self, command: str) -> str | None:
        """Why the command must never run, or None."""
        if destructive_rm(command):
            return "recursive rm of /, home, a system directory or everything"
        for pattern, why in self.deny:
            if pattern.search(command):
                return why
        return None

    def risk_of(self, command: str, stated: object) -> Risk:
        """The higher of the stated risk (medium when it is none) and what the command looks like."""
        looks: Risk = "high" if any(p.search(command) for p in self.risky) else "low"
        return max(as_risk(stated) or "medium", looks, key=RISKS.index)

    def evaluate(self, command: str | None, stated_risk: object = None) -> Verdict:
        if not command or not command.strip():
            return Verdict("no_command", "nothing to run", as_risk(stated_risk) or "low")
        why = self.denied(command)
        risk = self.risk_of(command, stated_risk)
        if why is not None:
            return Verdict("denied", f"denied: {why}", "high")
        if RISKS.index(risk) >= RISKS.index(self.settings.approval_risk):
            return Verdict("needs_approval", f"risk {risk} needs `tmux-agent approve`", risk)
        if self.settings.auto_run and any(p.search(command) for p in self.allow):
            return Verdict("auto_run", "allowlisted", risk)
        return Verdict("suggested", "not allowlisted: run it with `tmux-agent approve`", risk)

    # prompts to an agent -------------------------------------------------------------------------
    def denied_prompt(self, prompt: str) -> str | None:
        """Why a prompt must never be sent: it asks for (or contains) a command that is denied."""
        for part in prompt_commands(prompt):
            why = self.denied(part)
            if why is not None:
                return why
        return None

    def evaluate_prompt(self, prompt: str | None, stated_risk: object = None) -> Verdict:
        """The verdict on a prompt for an agent: denied, needs_approval (risky commands named in
        it, or the stated risk) or suggested — never auto_run."""
        if not prompt or not prompt.strip():
            return Verdict("no_command", "nothing to send", as_risk(stated_risk) or "low")
        why = self.denied_prompt(prompt)
        if why is not None:
            return Verdict("denied", f"denied: the prompt asks for a command that is denied ({why})", "high")
        risk = self.risk_of(prompt, stated_risk)
        if RISKS.index(risk) >= RISKS.index(self.settings.approval_risk):
            return Verdict("needs_approval", f"risk {risk} needs `tmux-agent approve`", risk)
        return Verdict("suggested", "a prompt to the agent: send it with `tmux-agent approve`", risk)


def prompt_commands(prompt: str) -> list[str]:
    """What of a prompt's text is judged as a command: the whole text, each code span and
    fenced block (and each of its lines), and the text from each `rm` on (so `please rm -rf ~`
    is seen as the command it names)."""
    parts = [prompt]
    for match in CODE_SPAN.finditer(prompt):
        code = match.group(1) if match.group(1) is not None else match.group(2)
        parts.append(code)
        parts += [line for line in code.splitlines() if line.strip()]
    parts += [prompt[match.start() :] for match in RM_IN_PROSE.finditer(prompt)]
    return parts
