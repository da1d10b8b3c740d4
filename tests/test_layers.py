"""The package's layers import downward only, and no modules import each other in a circle.

Every ``import`` and ``from ... import`` of the package is read from the source (those inside
functions too, which a run-time check would miss) and held to this order, lowest first.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "asr_lightning"
#: Each top-level module or subpackage of asr_lightning, by layer; a module may import its own
#: layer (other modules than itself, without a cycle) and any lower one.
LAYERS = [
    {"errors", "artifacts"},
    {"audio", "text"},
    {"data"},
    {"model"},
    {"decoding"},
    {"inference"},
    {"export"},
    {"serve", "sagemaker", "report"},
    {"training", "cli"},
    {"__init__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> list[tuple[str, str, int]]:
    """``(importing module, imported module, line)`` of every import of the package by itself."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{module}:{node.lineno}: use absolute imports")
            if isinstance(node, ast.ImportFrom) and node.module == PACKAGE.name:
                names = [f"{PACKAGE.name}.{alias.name}" for alias in node.names]  # submodules
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                names = []
            found += [
                (module, name, node.lineno) for name in names if name.split(".")[0] == PACKAGE.name
            ]
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_of_the_package_has_a_layer():
    parts = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()}
    parts = {p for p in parts if not p.startswith((".", "_")) or p == "__init__"} - {"py"}
    parts.discard("__pycache__")
    assert parts <= set(RANK), f"give {sorted(parts - set(RANK))} a layer in LAYERS"


def test_imports_run_downward_only():
    upward = [
        f"{source}:{line} imports {target} ({_layer(source)} is below {_layer(target)})"
        for source, target, line in _imports()
        if RANK[_layer(target)] > RANK[_layer(source)]
    ]
    assert not upward, "\n".join(upward)


def test_no_modules_import_each_other_in_a_circle():
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target, _ in _imports():
        if target != source:
            graph[source].add(target)
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)
