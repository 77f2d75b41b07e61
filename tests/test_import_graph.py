"""The package reads in one direction: no import cycles, and every module imports only its own
layer or the layers below it. The engine imports no guard, assist, adapter, driver or notify
module — those reach it through the ports in `orchestrator.ports`.

Every import counts: module level, inside functions, and under `TYPE_CHECKING`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "orchestrator"

LEAVES = {
    "errors",
    "clock",
    "redact",
    "schema",
    "config",
    "metadata",
    "envfile",
    "model",
    "ports",
    "events",
    "payloads",
}
RANK = {"": 0, **{leaf: 0 for leaf in LEAVES}, "state": 1, "adapters": 1, "notify": 2, "drivers": 2}
RANK.update({"guards": 3, "assist": 3, "engine": 4, "cli": 5, "dashboard": 5})
# What the engine may import besides itself: the leaves and the state store.
ENGINE_MAY_IMPORT = {"", *LEAVES, "state", "engine"}


def module_names(root: Path, package: str) -> dict[str, Path]:
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join([package, *parts])] = path
    return names


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module → the modules of `package` it imports (a `from pkg import sub` names the submodule)."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
                ]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def layer(module: str) -> str:
    parts = module.split(".")[1:]
    return parts[0] if parts else ""


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        if module.endswith("__main__"):  # `python -m` entry points sit outside the layers
            continue
        here = layer(module)
        for target in sorted(targets):
            there = layer(target)
            if here not in RANK or there not in RANK:
                problems.append(f"{module} → {target}: a layer the test does not know (add it to RANK)")
            elif here == "engine" and there not in ENGINE_MAY_IMPORT:
                problems.append(f"{module} → {target}: the engine gets {there}/ through a port, never an import")
            elif RANK[there] > RANK[here]:
                problems.append(f"{module} → {target}: {here or 'a leaf'} may not import the higher layer {there}/")
    return problems


def test_the_package_has_no_import_cycle() -> None:
    assert find_cycle(import_graph(PACKAGE, "orchestrator")) is None


def test_every_module_imports_only_its_layer_or_below() -> None:
    assert layering_violations(import_graph(PACKAGE, "orchestrator")) == []


def test_the_leaves_import_only_leaves() -> None:
    graph = import_graph(PACKAGE, "orchestrator")
    for leaf in LEAVES:
        name = f"orchestrator.{leaf}"
        if name in graph:
            assert {layer(t) for t in graph[name]} <= LEAVES | {""}, name


ENTRY_MODULES = ("orchestrator.cli.main", "orchestrator.cli.service_main", "orchestrator.cli.replay_main")


@pytest.mark.parametrize("entry", ENTRY_MODULES)
def test_an_entry_point_loads_no_postgres_driver(entry: str) -> None:
    """psycopg is the `postgres` extra: a plain install must start every command and the service.

    The installed-package smoke run once failed this way (the service imported the fleet module,
    and so psycopg, at the top), so the check runs the import for real and reads sys.modules.
    """
    probe = f"import sys, {entry}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'psycopg'"
    probe += " or m in ('orchestrator.state.pg_store', 'orchestrator.state.pg_fleet', 'orchestrator.cli.fleet')))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", f"{entry} loads {result.stdout.strip()}"


def write_package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "orchestrator"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def test_a_cycle_is_found(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "engine/__init__.py": "",
            "engine/supervisor.py": "from orchestrator.model import X\n",
            "model.py": "def f():\n    from orchestrator.engine import supervisor\n",
        },
    )
    cycle = find_cycle(import_graph(pkg, "orchestrator"))
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"orchestrator.engine.supervisor", "orchestrator.model"}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from orchestrator.guards import stall\n", "the engine gets guards/ through a port"),
        ("from ..adapters.tmux import TmuxAdapter\n", "the engine gets adapters/ through a port"),
    ],
)
def test_an_engine_import_of_a_guard_or_adapter_is_refused(tmp_path: Path, source: str, expected: str) -> None:
    pkg = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "engine/__init__.py": "",
            "engine/supervisor.py": source,
            "guards/__init__.py": "",
            "guards/stall.py": "",
            "adapters/__init__.py": "",
            "adapters/tmux.py": "",
        },
    )
    [problem] = layering_violations(import_graph(pkg, "orchestrator"))
    assert expected in problem


def test_a_leaf_importing_upwards_is_refused(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "clock.py": "import orchestrator.state.store\n",
            "state/__init__.py": "",
            "state/store.py": "",
        },
    )
    [problem] = layering_violations(import_graph(pkg, "orchestrator"))
    assert "may not import the higher layer state/" in problem
