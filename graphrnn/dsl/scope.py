"""The lowering's state types and value helpers, shared by lower.py and its helper modules.

They live here, below every module that lowers, so imports inside dsl/ run one way:
ast, builtins -> scope -> calls, keyword_builtins -> expressions -> lower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graphrnn.dsl import ast
from graphrnn.dsl.builtins import Builtin
from graphrnn.errors import DSLError, Loc
from graphrnn.ir.node import Node
from graphrnn.ir.ops.leaf import const


@dataclass(frozen=True)
class Axis:
    """An axis as a value: what `t` is bound to inside a model over t."""

    name: str


@dataclass
class Scope:
    """The names of one model body or one definition call.

    `lowerer` is the Lowerer (dsl/lower.py) that owns the graph being built; it is typed
    loosely here so that this module need not import the one that uses it."""

    lowerer: Any
    prefix: str
    values: dict[str, object] = field(default_factory=dict)
    equations: dict[str, tuple[ast.Equation, dict]] = field(default_factory=dict)
    inits: dict[str, tuple[ast.Equation, dict]] = field(default_factory=dict)
    lowered: dict[str, Node] = field(default_factory=dict)
    placeholders: dict[str, Node] = field(default_factory=dict)
    index_axes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    assigned_later: set[str] = field(default_factory=set)
    busy: set[str] = field(default_factory=set)
    hidden_axes: frozenset[str] = frozenset()
    delays: dict[tuple, Node] = field(default_factory=dict)
    result: object = None

    def qualified(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name


@dataclass
class Frame:
    """Where an expression is lowered: its scope, loop variables and the equation it is in."""

    scope: Scope
    bindings: dict[str, object]
    equation: str | None = None
    call_name: str | None = None


def where(frame: Frame) -> str | None:
    """The note an error inside an equation carries: which equation it is."""
    return f"in the equation for '{frame.equation}'" if frame.equation else None


def as_node(value, loc: Loc) -> Node:
    """A graph node for a lowered value: nodes as they are, numbers as constants."""
    if isinstance(value, Node):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return const(float(value), loc=loc)
    raise DSLError(f"expected a value, got {describe(value)}", loc)


def describe(value) -> str:
    """A lowered value in words, for error messages."""
    if isinstance(value, Axis):
        return f"the axis '{value.name}'"
    if isinstance(value, Builtin):
        return f"the function '{value.name}'"
    if isinstance(value, ast.FuncDef):
        return f"the definition '{value.name}'"
    if isinstance(value, Node):
        return "a value of the network (not a number known when compiling)"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"the number {value!r}"
    return type(value).__name__


def integer(value, what: str, loc: Loc) -> int:
    """`value` as a compile-time integer, or a located error naming `what` it is."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DSLError(f"{what} must be an integer, got {describe(value)}", loc)
    return value


def positive(value, what: str, loc: Loc | None) -> int:
    """`value` as a positive compile-time integer (a size), or a located error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        shown = repr(value) if isinstance(value, (int, float)) else describe(value)
        raise DSLError(f"{what} must be a positive integer, got {shown}", loc)
    return value
