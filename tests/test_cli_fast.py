"""A quick `tmux-agent` call imports only what it needs (issue 15, "a fast CLI").

Structural, not timed: each subcommand runs for real (a real pane, config and state DB) in a
subprocess that writes the names in `sys.modules` when it exits, and none of the heavy libraries
may be among them. `bench/cli_cost.py` prints what that buys in milliseconds.

The quick JSON Schema check that keeps jsonschema out of these calls is tested here too: it must
never call a document valid that jsonschema refuses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import jsonschema
import pytest
import yaml

from orchestrator.cli.common import HEAVY_MODULES as HEAVY
from orchestrator.cli.starter import AGENT_CONFIG, ORCHESTRATOR_TOML
from orchestrator.metadata import _METADATA_EXAMPLES
from orchestrator.schema import SchemaValidator, load_schema
from pytest_tmuxagent.service import OrchestratorService, OrchestratorServiceFactory
from pytest_tmuxagent.tmux_server import AgentPaneFactory

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SESSION = "weather/bot"
# `tmux-agent ARGS`, as the console script runs it, then the loaded modules into $MODULES_OUT
PROBE = (
    "import atexit, os, sys\n"
    "atexit.register(lambda: open(os.environ['MODULES_OUT'], 'w').write('\\n'.join(sorted(sys.modules))))\n"
    "from orchestrator.cli.main import main\n"
    "sys.exit(main())\n"
)
APPROVAL = {"key": "k1", "tool": "Bash", "command": "ls", "reason": "asked"}


@pytest.fixture
def idle(agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory) -> OrchestratorService:
    """A config with a real pane, and no orchestrator running."""
    return orchestrator_service([agent_pane(SESSION)], start=False)


def probe(service: OrchestratorService, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `tmux-agent ARGS` (with --config after the subcommand); its result and loaded modules."""
    split = 2 if args[:1] == ("meta",) else 1
    argv = (
        [*args[:split], "--config", str(service.config_path), *args[split:]] if args[:1] != ("--help",) else ["--help"]
    )
    out = service.root / "modules.txt"
    out.unlink(missing_ok=True)
    env = {**os.environ, "MODULES_OUT": str(out)}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, cwd=service.root, timeout=30
    )
    return result, set(out.read_text().splitlines())


def heavy(modules: set[str]) -> list[str]:
    return sorted({name.split(".")[0] for name in modules} & set(HEAVY))


@pytest.mark.parametrize(
    ("args", "metadata"),
    [
        (("--help",), {}),
        (("send", SESSION, "--", "make", "test"), {}),  # with the pane check
        (("send", "--no-check", SESSION, "--", "true"), {}),
        (("status",), {}),
        (("status", "--json"), {}),
        (("meta", "set", SESSION, "blockers", '["missing OPENAI_API_KEY"]'), {}),
        (("unblock", SESSION), {}),
        (("reply", SESSION, "--", "yes"), {"state": "waiting_input"}),
        (("approve", SESSION), {"state": "waiting_approval", "pending_approval": APPROVAL}),
        (("deny", SESSION), {"state": "waiting_approval", "pending_approval": APPROVAL}),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else "",
)
def test_a_quick_subcommand_imports_no_heavy_library(
    idle: OrchestratorService, args: tuple[str, ...], metadata: dict[str, Any]
) -> None:
    for key, value in metadata.items():
        idle.meta_set(SESSION, key, value)
    result, modules = probe(idle, *args)
    assert result.returncode == 0, result.stderr
    assert "orchestrator.cli.main" in modules  # the probe saw the real call
    assert heavy(modules) == [], f"tmux-agent {' '.join(args)} imported {heavy(modules)}"


def test_send_to_a_closed_window_is_one_line_and_exit_2_without_libtmux(
    agent_pane: AgentPaneFactory, orchestrator_service: OrchestratorServiceFactory
) -> None:
    """The window is gone but its session lives on (weather:logs): tmux's display-message alone
    would answer with the other window's pane, and the command would be typed there."""
    idle = orchestrator_service([agent_pane(SESSION), agent_pane("weather/logs")], start=False)
    idle.tmux.server.cmd("kill-window", "-t", idle.panes[0].target)
    result, modules = probe(idle, "send", SESSION, "--", "true")
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("tmux-agent: error: key 'target': no tmux pane for target 'weather:bot'")
    assert "libtmux" not in heavy(modules)
    store = idle.store()
    try:
        assert store.queued(SESSION) == []  # refused before anything was queued
    finally:
        store.close()


def test_status_with_a_plan_still_prints_it(idle: OrchestratorService) -> None:
    """The assist layer is imported only for a session with a plan or suggestions; then it prints them."""
    plan = {"source": "docs/plan.md", "generated_by": "markdown", "steps": [{"id": "s1", "status": "succeeded"}]}
    idle.meta_set(SESSION, "task_decomposition", plan)
    result, _ = probe(idle, "status")
    assert result.returncode == 0, result.stderr
    assert "  plan: 1/1 done" in result.stdout and "from docs/plan.md by markdown" in result.stdout
    assert json.loads(probe(idle, "status", "--json")[0].stdout)["sessions"][0]["plan_progress"]["total"] == 1


# the quick schema check -----------------------------------------------------------------------
def starter_documents() -> list[tuple[str, object]]:
    return [
        ("agent_config.schema.json", yaml.safe_load(AGENT_CONFIG)),
        ("orchestrator_config.schema.json", tomllib.loads(ORCHESTRATOR_TOML)),
    ]


@pytest.mark.parametrize(("schema", "document"), starter_documents())
def test_the_starter_files_fit_without_jsonschema(schema: str, document: object) -> None:
    assert SchemaValidator(load_schema(schema)).surely_fits(document)


@pytest.mark.parametrize(("key", "example"), sorted(_METADATA_EXAMPLES.items()))
def test_every_metadata_example_fits_without_jsonschema(key: str, example: str) -> None:
    metadata = load_schema("metadata.schema.json")
    validator = SchemaValidator({**metadata["properties"][key], "$defs": metadata.get("$defs", {})})
    assert validator.surely_fits(json.loads(example))


MISFITS = [
    ("agent_config.schema.json", {"sessions": [{"name": "a", "target": "x:y", "colour": "red"}]}),  # unknown key
    ("agent_config.schema.json", {"sessions": [{"name": "-bad", "target": "x:y"}]}),  # pattern
    ("agent_config.schema.json", {"sessions": [{"name": "a"}]}),  # required
    ("agent_config.schema.json", {"sessions": [{"name": "a", "target": ""}]}),  # minLength
    ("agent_config.schema.json", {"sessions": [{"name": "a", "target": "x", "kind": "robot"}]}),  # enum
    ("agent_config.schema.json", {"sessions": [{"name": "a", "target": "x", "retry_safe": 1}]}),  # boolean
    ("agent_config.schema.json", {"sessions": [{"name": "a", "target": "x", "env": {"K": 1}}]}),  # additional schema
    ("orchestrator_config.schema.json", {"stall_timeout_seconds": -1}),  # bound
    ("orchestrator_config.schema.json", {"failure_alert_threshold": True}),  # a bool is no number
    ("audit_event.schema.json", {"ts": "2026-01-01T00:00:00Z", "event": "made_up_event", "session": None}),
    ("audit_event.schema.json", {"ts": "2026-01-01T00:00:00Z", "event": "command_result", "session": "a"}),  # if/then
]


@pytest.mark.parametrize(("schema", "document"), MISFITS)
def test_the_quick_check_never_passes_what_jsonschema_refuses(schema: str, document: object) -> None:
    loaded = load_schema(schema)
    assert not jsonschema.Draft202012Validator(loaded).is_valid(document)  # a real misfit
    validator = SchemaValidator(loaded)
    assert not validator.surely_fits(document) and not validator.is_valid(document)
    assert list(validator.iter_errors(document))  # jsonschema's own errors, for the one-line message


ODD_VALUES: list[object] = [
    None,
    True,
    0,
    3,
    -1,
    1.5,
    "",
    "x",
    "2030-01-31T09:30:00.000000Z",
    [],
    ["a"],
    [1],
    {},
    {"a": 1},
]


def test_the_combined_validator_agrees_with_jsonschema_on_every_metadata_key() -> None:
    metadata = load_schema("metadata.schema.json")
    defs = metadata.get("$defs", {})
    for key, sub in metadata["properties"].items():
        schema = {**sub, "$defs": defs}
        full = jsonschema.Draft202012Validator(schema)
        ours = SchemaValidator(schema)
        for value in [*ODD_VALUES, json.loads(_METADATA_EXAMPLES.get(key, "null"))]:
            assert ours.is_valid(value) == full.is_valid(value), (key, value)
            assert not ours.surely_fits(value) or full.is_valid(value), (key, value)
