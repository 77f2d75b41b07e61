"""The deterministic Markdown decomposition and the plan checks shared with AI answers."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from orchestrator.adapters.ai_client import wire_schema
from orchestrator.assist.decompose import (
    DECOMPOSITION_SCHEMA,
    build_prompt,
    check_steps,
    decomposition_schema,
    execution_order,
)
from orchestrator.assist.plan_markdown import parse_markdown, split_commands
from orchestrator.config import SessionConfig


def md(text: str) -> tuple[list[dict], list[str]]:
    return parse_markdown(textwrap.dedent(text))


def test_headings_with_shell_blocks_or_checklists_are_steps() -> None:
    steps, warnings = md("""\
        # Plan
        Intro, no step.
        ## Install
        ```bash
        pip install -r requirements.txt
        # a comment line
        pytest -q
        ```
        ## Background
        Just prose.
        ```python
        print("not a shell block")
        ```
        ## Review
        - [ ] code reviewed
        - [x] docs updated
        - a plain bullet
        """)
    assert warnings == []
    assert steps == [
        {
            "id": "s1",
            "title": "Install",
            "commands": ["pip install -r requirements.txt", "pytest -q"],
            "depends_on": [],
            "acceptance": [],
        },
        {
            "id": "s2",
            "title": "Review",
            "commands": [],
            "depends_on": [],
            "acceptance": ["code reviewed", "docs updated"],
        },
    ]


@pytest.mark.parametrize(
    "line,expected",
    [
        ("Depends on: Step 3", ["s3"]),
        ("depends_on: s3", ["s3"]),
        ("**Depends on:** 3, 1", ["s3", "s1"]),
        ("Requires: deploy the bot", ["s3"]),
        ("依赖：步骤 1 和 步骤 3", ["s1", "s3"]),
        ("After: deploy", ["s3"]),
    ],
)
def test_dependencies_by_number_id_or_title(line: str, expected: list[str]) -> None:
    steps, _ = md(f"""\
        ## Step 1: Build
        ```sh
        make
        ```
        ## Step 2: Test
        {line}
        ```sh
        make test
        ```
        ## Step 3: Deploy the bot
        ```sh
        make deploy
        ```
        """)
    assert steps[1]["depends_on"] == expected


def test_numbers_in_headings_win_over_positions() -> None:
    steps, warnings = md("""\
        ## 10. First
        ```bash
        true
        ```
        ## 20. Second
        Depends on: 10
        ```bash
        true
        ```
        ## Third
        Depends on: 7, nothing-like-this, Third
        ```bash
        true
        ```
        """)
    assert [s["title"] for s in steps] == ["First", "Second", "Third"]
    assert steps[1]["depends_on"] == ["s1"] and steps[2]["depends_on"] == []
    assert len(warnings) == 3 and all(w.startswith("s3: dependency") for w in warnings)


def test_shell_blocks_split_into_whole_commands() -> None:
    block = textwrap.dedent("""\
        $ export CITY=Beijing
        cat > app.py <<'PY'
        print("hi")
        PY
        for i in 1 2; do
          echo $i
        done
        echo "two
        lines"
        pip install \\
          requests
        if [ -f x ]; then echo x; fi
        f() {
          echo in f
        }
        """)
    assert split_commands(block) == [
        "export CITY=Beijing",
        "cat > app.py <<'PY'\nprint(\"hi\")\nPY",
        "for i in 1 2; do\n  echo $i\ndone",
        'echo "two\nlines"',
        "pip install \\\n  requests",
        "if [ -f x ]; then echo x; fi",
        "f() {\n  echo in f\n}",
    ]


def test_console_blocks_keep_only_prompted_lines() -> None:
    assert split_commands("$ make test\n3 passed\n$ echo ok\nok\n", console=True) == ["make test", "echo ok"]


def test_unclosed_things_end_as_one_command() -> None:
    assert split_commands("echo 'never closed\nmore") == ["echo 'never closed\nmore"]


def step(id_: str, *deps: str) -> dict:
    return {"id": id_, "title": id_, "commands": ["true"], "depends_on": list(deps), "acceptance": []}


def test_execution_order_follows_dependencies_then_document_order() -> None:
    steps = [step("a"), step("b", "c"), step("c"), step("d", "a", "b")]
    assert execution_order(steps) == ["a", "c", "b", "d"]
    check_steps(steps)


@pytest.mark.parametrize(
    "steps,problem",
    [
        ([], "empty"),
        ([step("a"), step("a")], "unique"),
        ([step("a", "zz")], "unknown"),
        ([step("a", "a")], "unknown"),
        ([step("a", "b"), step("b", "a")], "cycle"),
    ],
)
def test_bad_plans_are_rejected(steps: list[dict], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_steps(steps)


# prompt steps (agent sessions) ----------------------------------------------------------------
def test_prompt_blocks_and_lines_make_prompt_steps_for_the_session_named() -> None:
    steps, warnings = md("""\
        # Agent plan
        ## Step 1: Scaffold
        Session: `weather/agent`
        ```prompt
        Create the package.
          Keep it small: "one module", 天气 ☀️.
        ```
        - [ ] the package exists
        ## Step 2: Two asks
        Depends on: 1
        Prompt: Write the forecast module.
        **Prompt:** Add its test.
        ## Step 3: Shell
        ```bash
        make test
        ```
        ## Prose about sessions
        Session: the user logs in first, then the bot answers.
        """)
    assert warnings == []
    assert steps == [
        {
            "id": "s1",
            "title": "Scaffold",
            "commands": ['Create the package.\n  Keep it small: "one module", 天气 ☀️.'],
            "depends_on": [],
            "acceptance": ["the package exists"],
            "kind": "prompt",
            "session": "weather/agent",
        },
        {
            "id": "s2",
            "title": "Two asks",
            "commands": ["Write the forecast module.", "Add its test."],
            "depends_on": ["s1"],
            "acceptance": [],
            "kind": "prompt",
        },
        {"id": "s3", "title": "Shell", "commands": ["make test"], "depends_on": [], "acceptance": []},
    ]


def test_a_step_with_prompts_and_shell_blocks_keeps_the_prompts_and_warns() -> None:
    steps, warnings = md("""\
        ## Mixed
        ```bash
        make build
        ```
        ```prompt
        Review the build output.
        ```
        ```prompt
        ```
        """)
    assert [(s["kind"], s["commands"]) for s in steps] == [("prompt", ["Review the build output."])]
    assert warnings == ["s1: has prompts and shell commands; the shell commands are ignored"]


@pytest.mark.parametrize(
    "extra,sessions,problem",
    [
        ({"kind": "shell"}, None, "kind must be command or prompt"),
        ({"session": "nope"}, ["weather/agent"], "session 'nope' is not one of"),
        ({"session": 3}, None, "session 3"),
    ],
)
def test_bad_kinds_and_sessions_are_rejected(extra: dict, sessions: list[str] | None, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_steps([step("a") | extra], sessions)


def test_known_sessions_and_kinds_pass() -> None:
    check_steps(
        [step("a") | {"session": "weather/agent", "kind": "prompt"}, step("b") | {"kind": None}], ["weather/agent"]
    )


def test_the_schema_for_agent_fleets_is_strict_mode_compatible_and_the_shipped_one_unchanged() -> None:
    assert decomposition_schema(False) is DECOMPOSITION_SCHEMA
    schema = decomposition_schema(True)
    item = schema["properties"]["steps"]["items"]
    assert sorted(item["required"]) == sorted(item["properties"]) and item["additionalProperties"] is False
    assert item["properties"]["kind"]["enum"] == ["command", "prompt", None]
    assert "session" not in DECOMPOSITION_SCHEMA["properties"]["steps"]["items"]["properties"]


# CommonMark: what a renderer shows as code runs, what it hides never does ----------------------
def test_html_comments_and_html_blocks_never_yield_steps_or_commands() -> None:
    steps, warnings = md("""\
        ## Build
        ```bash
        make
        ```
        Depends on: Deploy <!-- and Clean, once it is safe -->

        <!--
        ## Clean
        ```bash
        rm -rf build
        ```
        -->

        <details><summary>Old way</summary>
        ```bash
        make legacy
        ```
        </details>

        ## Deploy
        ```bash
        make deploy <!-- not a comment in a shell block -->
        ```
        Prompt: keep `<!-- this -->` and "sunny in <city>" <!-- drop this -->
        """)
    assert [(s["title"], s["commands"], s["depends_on"]) for s in steps] == [
        ("Build", ["make"], ["s2"]),
        ("Deploy", ['keep `<!-- this -->` and "sunny in <city>"'], []),
    ]
    assert not any("rm -rf" in c or "legacy" in c for s in steps for c in s["commands"])
    assert warnings == [
        "line 14: a code fence inside an HTML block is not code in CommonMark, so it does not run; "
        "leave a blank line between the HTML tag and the fence",
        "s2: has prompts and shell commands; the shell commands are ignored",
    ]


def test_setext_headings_are_headings() -> None:
    steps, _ = md("""\
        Plan
        ====
        Build it
        --------
        ```sh
        make
        ```
        Test
        it
        ---
        Depends on: Build it
        ```sh
        make test
        ```
        """)
    assert [(s["id"], s["title"], s["commands"], s["depends_on"]) for s in steps] == [
        ("s1", "Build it", ["make"], []),
        ("s2", "Test it", ["make test"], ["s1"]),
    ]


def test_block_quotes_are_transparent_their_fences_are_commands() -> None:
    steps, _ = md("""\
        ## Step 1: Build
        > **Note:** run it from the repo root.
        > ```bash
        > make build
        > ```
        > - [ ] the build passes

        > ## Step 2: Ask
        > Depends on: 1
        > ```prompt
        > Review the build.
        > ```
        """)
    assert steps == [
        {
            "id": "s1",
            "title": "Build",
            "commands": ["make build"],
            "depends_on": [],
            "acceptance": ["the build passes"],
        },
        {
            "id": "s2",
            "title": "Ask",
            "commands": ["Review the build."],
            "depends_on": ["s1"],
            "acceptance": [],
            "kind": "prompt",
        },
    ]


def test_checklists_nested_in_lists_and_wrapped_items_are_acceptance() -> None:
    steps, _ = md("""\
        ## Step 1: Setup
        ```bash
        true
        ```
        ## Step 2: Ship
        - Before shipping:
          - [ ] the tests pass
            and lint is clean
          - [x] docs updated
            1. [ ] numbered, nested twice
        - [ ] tagged
        Depends on: 1
        - a plain bullet with [ ] inside
        """)
    ship = steps[1]
    assert ship["acceptance"] == [
        "the tests pass and lint is clean",
        "docs updated",
        "numbered, nested twice",
        "tagged",
    ]
    assert ship["depends_on"] == ["s1"]  # a lazy continuation line is still its own line


@pytest.mark.parametrize(
    "fence,commands",
    [
        ('```bash title="install.sh"\nmake\n```', ["make"]),
        ("```{.bash}\nmake\n```", ["make"]),
        ("``` {.sh .numberLines}\nmake\n```", ["make"]),
        ("```zsh{1,2}\nmake\n```", ["make"]),
        ("~~~bash\nmake\n~~~", ["make"]),
        ("~~~ shell\ncat <<'EOF'\n```\nEOF\n~~~", ["cat <<'EOF'\n```\nEOF"]),
        ("```shell-session\n$ make\nmake: done\n```", ["make"]),
        ("````markdown\n```bash\nrm -rf build\n```\n````", []),
        ("```python\nprint(1)\n```", []),
        ("```bashrc\nset -o vi\n```", []),
        ("    make  # an indented code block", []),
        ("```bash\nmake\nmake test", ["make", "make test"]),  # unclosed: CommonMark runs it to the end
    ],
    ids=[
        "attributes",
        "pandoc",
        "pandoc-classes",
        "line-numbers",
        "tildes",
        "tildes-hold-backticks",
        "shell-session-is-a-transcript",
        "fence-in-a-fence",
        "python",
        "not-a-shell-word",
        "indented-code",
        "unclosed",
    ],
)
def test_fences_by_the_first_word_of_their_info_string(fence: str, commands: list[str]) -> None:
    steps, _ = parse_markdown(f"## Build\n\n{fence}\n")
    assert [c for s in steps for c in s["commands"]] == commands


def test_a_prompt_line_runs_to_the_end_of_its_paragraph() -> None:
    steps, _ = md("""\
        ## Forecast
        Prompt: Write weather_bot/forecast.py
        with one forecast(city) function.
        Session: weather/agent
        Prose after the session line is not part of the prompt.
        Prompt: Add its test.

        A new paragraph is not part of it either.
        """)
    assert steps[0]["commands"] == ["Write weather_bot/forecast.py\nwith one forecast(city) function.", "Add its test."]
    assert steps[0]["session"] == "weather/agent"


@pytest.mark.parametrize("agents", [False, True], ids=["shell-fleet", "agent-fleet"])
def test_the_prompt_carries_the_schema_as_real_json(agents: bool) -> None:
    sessions = [SessionConfig("weather/bot", "weather:bot", Path("."))]
    if agents:
        sessions.append(SessionConfig("weather/agent", "weather:agent", Path("."), kind="agent"))
    prompt = build_prompt("plan.md", "## Build\n```bash\nmake\n```\n", sessions, "weather/bot")
    intro, block = prompt.rsplit("\n", 1)
    assert intro.endswith("matching this JSON Schema, no prose and no code fences:")
    schema = decomposition_schema(agents)
    assert json.loads(block) == wire_schema(schema)  # the same object codex gets as --output-schema
    assert ("null" in block) == agents and "None" not in block and "False" not in block and "false" in block
