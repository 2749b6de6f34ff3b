"""The import graph of graphrnn/, read from the source: no cycles, and no module importing
the package itself.

Every `import` and `from ... import` counts, also those inside functions (a lazy import
still ties the two modules together). `from pkg import name` is an edge to the submodule
pkg.name where there is one, else to pkg; relative imports are resolved; the packages above
an imported module are not edges of their own. A module that reads a name from
graphrnn/__init__ (`import graphrnn`, `from graphrnn import load`) depends on everything the
package imports, so it is reported too.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "graphrnn"


@dataclass(frozen=True)
class Edge:
    target: str
    line: int
    name: str | None  # for `from X import name`: the name read from the module X


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package below root."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _base(module: str, is_package: bool, level: int) -> str:
    """The package a relative import of `level` dots in `module` starts from."""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    return ".".join(parts[: len(parts) - (level - 1)])


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    """The edges from `module` to other modules of the package."""
    is_package = path.name == "__init__.py"
    edges = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            edges += [Edge(a.name, node.lineno, None) for a in node.names if a.name in modules]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = _base(module, is_package, node.level)
                source = f"{base}.{source}" if source else base
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:
                    edges.append(Edge(sub, node.lineno, None))
                elif source in modules:
                    edges.append(Edge(source, node.lineno, alias.name))
    return edges


def import_graph(root: Path, package: str) -> dict[str, list[Edge]]:
    modules = module_files(root, package)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def cycles(graph: dict[str, list[Edge]]) -> list[tuple[list[str], list[str]]]:
    """Per strongly connected component of more than one module, or of one that imports
    itself (Tarjan's algorithm): its modules, and one cycle through them (the first module
    repeated at the end)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for e in graph[v]:
            if e.target not in index:
                visit(e.target)
                low[v] = min(low[v], low[e.target])
            elif e.target in on_stack:
                low[v] = min(low[v], index[e.target])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    found = []
    for component in components:
        start = min(component)
        if len(component) > 1 or any(e.target == start for e in graph[start]):
            found.append((sorted(component), _cycle_through(graph, start, set(component))))
    return sorted(found)


def _cycle_through(graph: dict[str, list[Edge]], start: str, members: set[str]) -> list[str]:
    """A shortest path from `start` back to itself inside one component (breadth first)."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for e in graph[v]:
                if e.target == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if e.target in members and e.target not in parent:
                    parent[e.target] = v
                    following.append(e.target)
        frontier = following
    raise AssertionError(f"{start} is on no cycle")


def package_imports(graph: dict[str, list[Edge]], package: str) -> list[str]:
    """Imports of the package's __init__ for a name that is not a submodule, by any module."""
    return [
        f"{m}:{e.line} imports {package}" + (f" for '{e.name}'" if e.name else "")
        for m, edges in sorted(graph.items())
        if m != package
        for e in edges
        if e.target == package
    ]


# ---- the graph builder on a package made for it ------------------------------------------
def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_builder_finds_cycles_through_relative_lazy_and_submodule_imports(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import f\n",
            "pkg/a.py": "from . import b\ndef f():\n    return b\n",
            "pkg/b.py": "def g():\n    from .sub import c\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/c.py": "from ..a import f\n",
            "pkg/d.py": "import pkg\nfrom pkg import f\nfrom pkg import sub\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    members = ["pkg.a", "pkg.b", "pkg.sub.c"]
    assert cycles(graph) == [(members, [*members, "pkg.a"])]
    assert package_imports(graph, "pkg") == ["pkg.d:1 imports pkg", "pkg.d:2 imports pkg for 'f'"]


def test_the_builder_sees_a_module_that_imports_itself(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from pkg import a\n"})
    assert cycles(import_graph(tmp_path, "pkg")) == [(["pkg.a"], ["pkg.a", "pkg.a"])]


# ---- graphrnn itself ----------------------------------------------------------------------
def test_the_graph_covers_graphrnn():
    graph = import_graph(ROOT, PACKAGE)
    assert "graphrnn.passes._common" in {e.target for e in graph["graphrnn.passes.simplify"]}
    assert "graphrnn.ir.ops" in {e.target for e in graph[PACKAGE]}


def test_graphrnn_has_no_import_cycle():
    found = cycles(import_graph(ROOT, PACKAGE))
    report = [f"{', '.join(ms)}; e.g. {' -> '.join(cycle)}" for ms, cycle in found]
    assert found == [], "modules that import each other in a circle:\n" + "\n".join(report)


def test_no_module_imports_the_graphrnn_package():
    found = package_imports(import_graph(ROOT, PACKAGE), PACKAGE)
    assert found == [], "import the module that defines the name instead:\n" + "\n".join(found)
