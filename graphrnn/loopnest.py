"""Backend-neutral loop nests: what a kernel computes, written once and printed per backend.

An op's kernel is a list of `Nest`s. A nest runs its `body` once for every point of its
parallel dimensions: the free leading dimensions of the node it computes (its step axes not
fixed by an enclosing recurrence, then the batch) followed by `dims`. The Numba printer turns
the dimensions into `for` loops; the CUDA printer into one thread per point of a grid-stride
loop. So a body must give the same result whatever the order of the points, and no two points
may write one element.

A body is statements (`Let`, `Assign`, `For`, `If`) over expressions written in the formula
language the elementwise ops share (Python syntax: + - * / // %, comparisons, `a if c else
b`, max/min/abs, tanh/exp/log/sqrt). Expressions name three kinds of things through
placeholder tokens that only the printers resolve:

- locals (`Builder.let`, loop variables): each printer gives them names in its own scope;
- buffer elements (`Builder.ref`): the printer knows layouts, views and inlined constants;
- the index of a step axis (`Builder.axis`): a loop variable, or the step of a recurrence.

Sizes are written as they are named everywhere: `B` for the batch, `S_<axis>` for the length
of an axis; integers in index expressions, floats in value expressions.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from graphrnn.ir.node import Node

Dim = int | str  # a compile-time size, or a run-time one ("B", "S_<axis>")
TOKEN = re.compile(r"\b__(L|R|A)(\w+?)__\b")


@dataclass(frozen=True)
class Local:
    """A scalar of a body; `kind` is "value" (the kernel's float type) or "index"."""

    token: str
    name: str
    kind: str


@dataclass(frozen=True)
class Ref:
    """One element of `node`: `elems` index its per-example shape; `override` reads some step
    axes at other indices; `batch` is the batch index (None: the nest's own)."""

    node: Node
    elems: tuple[str, ...]
    override: tuple[tuple[str, str], ...] = ()
    batch: str | None = None


@dataclass
class Let:
    local: Local
    expr: str


@dataclass
class Assign:
    """`target op= expr`; a Ref target is a store into a buffer the nest writes."""

    target: Ref | Local
    expr: str
    op: str = "="


@dataclass
class For:
    var: Local
    start: str
    stop: str
    body: list = field(default_factory=list)
    reverse: bool = False


@dataclass
class If:
    cond: str
    body: list = field(default_factory=list)
    orelse: list = field(default_factory=list)


Statement = Let | Assign | For | If


@dataclass
class Nest:
    """One parallel nest computing (part of) `node`. `elementwise` marks fused formula
    nests, whose float literals a printer may type as the kernel's float type."""

    node: Node
    dims: list[tuple[str, Dim]]
    body: list[Statement]
    refs: dict[str, Ref]
    locals: dict[str, Local]
    tag: str
    elementwise: bool = False

    @property
    def elems(self) -> list[str]:
        return [name for name, _ in self.dims]

    def writes(self) -> list[Node]:
        """The nodes whose buffers the nest stores into, in order of first store."""
        found: dict[int, Node] = {}
        for s in walk(self.body):
            if isinstance(s, Assign) and isinstance(s.target, Ref):
                found.setdefault(s.target.node.id, s.target.node)
        return list(found.values())


def walk(body: list[Statement]) -> Iterator[Statement]:
    for s in body:
        yield s
        if isinstance(s, For):
            yield from walk(s.body)
        elif isinstance(s, If):
            yield from walk(s.body)
            yield from walk(s.orelse)


class Builder:
    """Writes one nest. Templates call `let`, `set`, `store`, `loop`, `when`/`otherwise` and
    embed `ref(...)`, `axis(...)` and locals in their expression strings."""

    def __init__(self, node: Node, dims: list[tuple[str, Dim]], tag: str | None = None):
        self.nest = Nest(node, list(dims), [], {}, {}, tag or node.op)
        self._stack = [self.nest.body]
        self._names: set[str] = {name for name, _ in dims}

    @property
    def elems(self) -> list[str]:
        return self.nest.elems

    def _local(self, name: str, kind: str) -> Local:
        unique, k = name, 1
        while unique in self._names:
            unique, k = f"{name}{k}", k + 1
        self._names.add(unique)
        local = Local(f"__L{len(self.nest.locals)}__", unique, kind)
        self.nest.locals[local.token] = local
        return local

    def _add(self, statement: Statement) -> None:
        self._stack[-1].append(statement)

    def ref(self, node: Node, elems, override: dict | None = None, batch: str | None = None):
        token = f"__R{len(self.nest.refs)}__"
        items = tuple(sorted((override or {}).items()))
        self.nest.refs[token] = Ref(node, tuple(str(e) for e in elems), items, batch)
        return token

    @staticmethod
    def axis(axis: str) -> str:
        """The current index along a step axis (a loop variable or the recurrence's step)."""
        return f"__A{axis}__"

    def let(self, name: str, expr, kind: str = "value") -> str:
        local = self._local(name, kind)
        self._add(Let(local, str(expr)))
        return local.token

    def set(self, local: str, expr, op: str = "=") -> None:
        self._add(Assign(self.nest.locals[local], str(expr), op))

    def store(self, node: Node, elems, expr, op: str = "=") -> None:
        self._add(Assign(Ref(node, tuple(str(e) for e in elems)), str(expr), op))

    @contextmanager
    def loop(self, name: str, stop: Dim, start: Dim = 0, reverse: bool = False):
        var = self._local(name, "index")
        statement = For(var, str(start), str(stop), [], reverse)
        self._add(statement)
        self._stack.append(statement.body)
        yield var.token
        self._stack.pop()

    @contextmanager
    def when(self, cond: str):
        statement = If(cond)
        self._add(statement)
        self._stack.append(statement.body)
        yield
        self._stack.pop()

    @contextmanager
    def otherwise(self):
        statement = self._stack[-1][-1]
        if not isinstance(statement, If):
            raise AssertionError("otherwise() must follow when()")
        self._stack.append(statement.orelse)
        yield
        self._stack.pop()


def resolve(expr: str, names: dict[str, str]) -> str:
    """Replace the tokens of `expr` by their printed text (`names`: token -> text)."""
    return TOKEN.sub(lambda m: names[m.group(0)], expr)


@functools.lru_cache(maxsize=4096)
def parse(expr: str) -> ast.expr:
    """The syntax tree of a formula (cached: templates repeat their formulas)."""
    return ast.parse(expr.strip(), mode="eval").body


def lead_dims(node: Node, axes: tuple[str, ...], fixed) -> list[tuple[str, Dim]]:
    """The free leading dimensions of a node's nest: its axes not fixed by a recurrence, then
    the batch; named as every printer names them."""
    dims: list[tuple[str, Dim]] = [
        (f"i_{a}", f"S_{a}") for a in axes if a in node.axes and a not in fixed
    ]
    if node.batched:
        dims.append(("ib", "B"))
    return dims
