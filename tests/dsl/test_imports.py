"""Imports inside graphrnn/dsl run one way: no module imports one that imports it back."""

import ast
from pathlib import Path

import graphrnn.dsl

DSL = Path(graphrnn.dsl.__file__).parent


def _dsl_imports(path: Path) -> set[str]:
    """Every dsl module `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "graphrnn.dsl":
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("graphrnn.dsl."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(
                a.name.split(".")[2] for a in node.names if a.name.startswith("graphrnn.dsl.")
            )
    return found - {path.stem}


def test_dsl_imports_have_no_cycle():
    graph = {p.stem: _dsl_imports(p) for p in DSL.glob("*.py")}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dep in graph.get(name, ()):
            assert state.get(dep) != "open", " -> ".join(path + [dep])
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_builtin_arity_comes_from_the_registry():
    from graphrnn.dsl.builtins import OP_FUNCTIONS
    from graphrnn.ir.registry import OPS

    assert OP_FUNCTIONS, "no callable ops"
    for name, (op, arity) in OP_FUNCTIONS.items():
        assert arity == OPS[op].arity, name
