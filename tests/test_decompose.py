"""The deterministic Markdown decomposition and the plan checks shared with AI answers."""

from __future__ import annotations

import textwrap

import pytest

from orchestrator.assist.decompose import (
    DECOMPOSITION_SCHEMA,
    check_steps,
    decomposition_schema,
    execution_order,
    parse_markdown,
    split_commands,
)


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
