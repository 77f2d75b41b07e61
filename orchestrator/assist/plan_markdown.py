"""A Markdown requirements document → plan steps, read as CommonMark (markdown-it-py's tokens).

The deterministic decomposition, used when AI is off or fails. The document is read the way a
CommonMark renderer reads it, so **what a reader sees as code is what runs, and what a renderer
hides never runs**:

* **Steps.** Every heading — ATX (`## …`) or setext (a line underlined with `===` or `---`) —
  whose own body has a shell block, a prompt or a checklist is a step, in document order, with
  ids s1, s2, …. A leading `Step N:`, `N.` or `步骤 N` is taken off the title and is the number
  dependency references use. Block quotes and list items are transparent: a heading, fence,
  checklist or line inside them counts as it would at the top level (a tutorial often sets a
  command apart in a block quote; a renderer still shows it as code).
* **Commands** come from fenced code blocks (``` or ~~~) whose info string's first word is a
  shell language (bash, sh, shell, zsh, console, shell-session): `bash title="x"` and pandoc's
  `{.bash}` are both bash. Each top-level shell command of a block is one command (continued
  lines, quotes, here-documents and if/for/while/case/{} blocks stay whole); `$ ` prompts are
  dropped, and in console transcripts (console, shell-session) lines without one are output.
* **Not commands:** indented code blocks (four spaces) — CommonMark gives them no language, and
  documents use them for output and examples; HTML blocks and HTML comments, whose content a
  renderer never shows as code (a `rm -rf build` inside `<!-- -->` is commented out, so it does
  not run). A ``` fence inside a raw HTML block (say `<details>` with no blank line after it) is
  not code either, and gets a `warnings` entry, since its author probably meant it to be.
* **Acceptance.** A list item (bulleted or numbered, at any nesting depth) whose text starts
  with `[ ]` or `[x]` is an acceptance criterion; a wrapped item stays one criterion.
* **Lines of a paragraph** (soft-wrapped lines are separate lines, as the author wrote them):
  `Depends on: …` (also `depends_on:`, `Requires:`, `After:`, `依赖：`) names earlier or later
  steps by number (`2`, `s2`, `Step 2`, `步骤 2`) or by title; `Session: NAME` (also `会话：`)
  sends the step to another configured session than the plan's own; `Prompt: …` (also
  `提示词：`) is a prompt, continued by the paragraph's following lines up to the next such line.
  Inline HTML comments are left out of these lines; other inline HTML stays as written (a prompt
  saying `<city>` means the word).
* **Prompt steps.** A fenced ```prompt block is one prompt (its text verbatim, multi-line). A
  heading with prompts is a step of `kind: "prompt"` whose `commands` are its prompts, in order
  (shell blocks beside them are ignored, with a warning).

Steps without prompts or a session line have the shape they always had. Unresolvable
dependencies are dropped with a `warnings` entry.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from markdown_it import MarkdownIt
from markdown_it.token import Token

from orchestrator.payloads import StepSpec

COMMONMARK = MarkdownIt("commonmark")
LANGUAGE = re.compile(r"\{?\.?([\w+-]+)")  # an info string's first word: bash, {.bash}, bash{1,3}
CHECKBOX = re.compile(r"^\[[ xX]\]\s+(.*\S)\s*$")
DEPENDS = re.compile(
    r"^[*_]{0,2}(?:depends[ _]on|dependencies|requires|after|依赖|前置步骤)[*_]{0,2}"
    r"\s*[:：]\s*[*_]{0,2}\s*(.+?)\s*$",
    re.I,
)
PROMPT_LINE = re.compile(r"^[*_]{0,2}(?:prompt|提示词)[*_]{0,2}\s*[:：]\s*[*_]{0,2}\s*(.+?)\s*$", re.I)
SESSION_LINE = re.compile(
    r"^[*_]{0,2}(?:session|会话)[*_]{0,2}\s*[:：]\s*[*_]{0,2}\s*`?([^`\s*]+)`?[*_]{0,2}\s*$", re.I
)
FENCE_LINE = re.compile(r"^\s*(?:`{3,}|~{3,})", re.M)
NUMBERED = re.compile(r"^(?:step\s*(\d+)|(\d+)[.)、]|步骤\s*(\d+))\s*[:：.、)-]?\s*", re.I)
REFERENCE = re.compile(r"^(?:s|step\s*|步骤\s*)?-?\s*(\d+)$", re.I)
SHELL_LANGS = {"bash", "sh", "shell", "zsh", "console", "shell-session", "shellsession"}
CONSOLE_LANGS = {"console", "shell-session", "shellsession"}  # transcripts: `$ ` lines and their output
PROMPT_LANGS = {"prompt"}
PUNCTUATION = set(";&|\n")  # runs of these separate commands
OPENERS = {"if": "fi", "for": "done", "while": "done", "until": "done", "case": "esac", "{": "}"}
CLOSERS = {"fi", "done", "esac", "}"}
HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")


# shell blocks → commands --------------------------------------------------------------------
def _complete(text: str) -> bool:
    """Whether the accumulated lines form whole commands (no open quote, block or here-doc)."""
    if text.endswith("\\"):
        return False
    for match in HEREDOC.finditer(text):
        rest = text[match.end() :].split("\n")[1:]
        if not any(line.strip() == match.group(2) for line in rest):
            return False
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|\n")
        lexer.whitespace = " \t\r"  # a newline separates commands like ';'
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words = list(lexer)
    except ValueError:
        return False
    depth, at_start = 0, True
    for word in words:
        if (at_start or word == "{") and word in OPENERS:
            depth += 1
        elif (at_start or word == "}") and word in CLOSERS:
            depth -= 1
        at_start = set(word) <= PUNCTUATION or word in ("then", "do", "else", "elif", "{", "in")
    return depth <= 0


def split_commands(block: str, console: bool = False) -> list[str]:
    commands: list[str] = []
    lines: list[str] = []
    for raw in block.splitlines():
        line = raw.rstrip()
        if not lines:
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.startswith("$ "):
                line = stripped[2:]
            elif console:
                continue  # a console block's output line
        lines.append(line)
        text = "\n".join(lines)
        if _complete(text):
            commands.append(text.strip())
            lines = []
    if lines:
        commands.append("\n".join(lines).strip())
    return commands


# CommonMark tokens → sections ----------------------------------------------------------------
@dataclass
class _Section:
    title: str
    number: int | None
    commands: list[str] = field(default_factory=list)
    acceptance: list[str] = field(default_factory=list)
    depends: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    session: str | None = None

    def fence(self, info: str, content: str) -> None:
        """A fenced code block in this section's body: shell commands, a prompt, or nothing."""
        found = LANGUAGE.match(info.strip())
        lang = found.group(1).lower() if found else ""
        if lang in SHELL_LANGS:
            self.commands += split_commands(content, console=lang in CONSOLE_LANGS)
        elif lang in PROMPT_LANGS and content.strip():
            self.prompts.append(content.strip())

    def paragraph(self, lines: list[str], list_item: bool) -> None:
        """A paragraph's lines: a checklist item (a list item's first paragraph), directive lines,
        and the lines that continue a criterion or a `Prompt:`."""
        open_: tuple[list[str], str] | None = None  # what a plain line continues, and the joiner
        for number, line in enumerate(lines):
            if number == 0 and list_item and (box := CHECKBOX.match(line)):
                self.acceptance.append(box.group(1))
                open_ = (self.acceptance, " ")
            elif said := PROMPT_LINE.match(line):
                self.prompts.append(said.group(1))
                open_ = (self.prompts, "\n")
            elif where := SESSION_LINE.match(line):
                self.session, open_ = where.group(1), None
            elif deps := DEPENDS.match(line):
                self.depends += [
                    d.strip(" `*_") for d in re.split(r"[,;，；、]|\band\b|和", deps.group(1)) if d.strip(" `*_")
                ]
                open_ = None
            elif open_ is not None and line:
                open_[0][-1] += open_[1] + line


def _heading(text: str) -> tuple[str, int | None]:
    match = NUMBERED.match(text)
    if not match:
        return text.strip(), None
    number = next(int(g) for g in match.groups() if g)
    return (text[match.end() :].strip() or text.strip()), number


def inline_lines(token: Token) -> list[str]:
    """An inline token's source lines without its inline HTML comments (a code span that
    shows a comment keeps it: it is text there)."""
    text, cursor = token.content, 0
    for child in token.children or []:
        if child.type == "code_inline":
            start = text.find(child.markup, cursor)
            end = text.find(child.markup, start + len(child.markup)) if start >= 0 else -1
            cursor = end + len(child.markup) if end >= 0 else cursor
        elif child.type == "html_inline" and (start := text.find(child.content, cursor)) >= 0:
            if child.content.startswith("<!--"):
                text = text[:start] + text[start + len(child.content) :]
                cursor = start
            else:
                cursor = start + len(child.content)
    return [line.strip() for line in text.split("\n")]


def _sections(text: str) -> tuple[list[_Section], list[str]]:
    """The document's headings with what their bodies hold, and warnings about HTML blocks."""
    tokens = COMMONMARK.parse(text)
    sections: list[_Section] = []
    warnings: list[str] = []
    current: _Section | None = None
    for index, token in enumerate(tokens):
        before = tokens[index - 1].type if index else ""
        if token.type == "inline" and before == "heading_open":
            current = _Section(*_heading(" ".join(line for line in inline_lines(token) if line)))
            sections.append(current)
        elif token.type == "html_block" and not token.content.lstrip().startswith("<!--"):
            if FENCE_LINE.search(token.content):
                line = (token.map[0] if token.map else 0) + 1
                warnings.append(
                    f"line {line}: a code fence inside an HTML block is not code in CommonMark, so it does not "
                    "run; leave a blank line between the HTML tag and the fence"
                )
        elif current is None:
            continue
        elif token.type == "fence":
            current.fence(token.info, token.content)
        elif token.type == "inline" and before == "paragraph_open":
            current.paragraph(inline_lines(token), index >= 2 and tokens[index - 2].type == "list_item_open")
    return sections, warnings


# sections → steps ----------------------------------------------------------------------------
def parse_markdown(text: str) -> tuple[list[StepSpec], list[str]]:
    """Steps and warnings (unresolved dependencies, fences hidden in HTML) from a Markdown plan."""
    sections, warnings = _sections(text)
    chosen = [s for s in sections if s.commands or s.prompts or s.acceptance]
    steps: list[StepSpec] = []
    for index, section in enumerate(chosen, start=1):
        depends: list[str] = []
        for ref in section.depends:
            target = _resolve(ref, chosen)
            if target is None or target == index:
                warnings.append(f"s{index}: dependency {ref!r} names no other step; ignored")
            elif f"s{target}" not in depends:
                depends.append(f"s{target}")
        step: StepSpec = {
            "id": f"s{index}",
            "title": section.title,
            "commands": section.prompts or section.commands,
            "depends_on": depends,
            "acceptance": section.acceptance,
        }
        if section.prompts:
            step["kind"] = "prompt"
            if section.commands:
                warnings.append(f"s{index}: has prompts and shell commands; the shell commands are ignored")
        if section.session:
            step["session"] = section.session
        steps.append(step)
    return steps, warnings


def _resolve(ref: str, sections: list[_Section]) -> int | None:
    """A dependency reference → the 1-based index of the step it names."""
    match = REFERENCE.match(ref.strip())
    if match:
        number = int(match.group(1))
        by_heading = [i for i, s in enumerate(sections, start=1) if s.number == number]
        if by_heading:
            return by_heading[0]
        return number if 1 <= number <= len(sections) else None
    wanted = ref.strip().lower()
    for exact in (True, False):
        for i, section in enumerate(sections, start=1):
            title = section.title.lower()
            if title == wanted or (not exact and wanted in title):
                return i
    return None
