"""The syntax tree of a model file, as the parser reads it (no meaning attached yet).

Every node is a frozen dataclass with a ``loc`` naming its span in the file, so that the
lowering can report any mistake at its place. Equality and ``repr`` ignore ``loc``: two
trees compare equal when they have the same structure, which keeps tests short.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from graphrnn.errors import Loc, Source


def _loc() -> Loc:
    return field(compare=False, repr=False)  # type: ignore[return-value]


# Expressions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    """An integer or float literal (``1``, ``0.5``, ``1e-3``)."""

    value: int | float
    loc: Loc = _loc()


@dataclass(frozen=True)
class Name:
    """A bare identifier: a value, a size, an axis, a function or an initialiser."""

    id: str
    loc: Loc = _loc()


@dataclass(frozen=True)
class Attr:
    """``base.name``: a member of a call result, e.g. ``enc.h``."""

    base: Expr
    name: str
    loc: Loc = _loc()


@dataclass(frozen=True)
class Subscript:
    """``base[index]``: one member of an indexed family of values, e.g. ``h[l-1]``."""

    base: Expr
    index: Expr
    loc: Loc = _loc()


@dataclass(frozen=True)
class Call:
    """``func(args, kw = value)``: a function call *or* a read such as ``h(t-1)``.

    Both have the same syntax; the lowering decides which one it is.
    """

    func: Expr
    args: tuple[Expr, ...]
    kwargs: tuple[tuple[str, Expr], ...]
    loc: Loc = _loc()


@dataclass(frozen=True)
class BinOp:
    """``left op right`` with ``op`` one of ``+ - * / @``."""

    op: str
    left: Expr
    right: Expr
    loc: Loc = _loc()


@dataclass(frozen=True)
class Neg:
    """Unary minus (``-1`` is ``Neg(Num(1))``)."""

    operand: Expr
    loc: Loc = _loc()


@dataclass(frozen=True)
class Reduce:
    """``mean over t of body`` or ``sum over t of body``."""

    kind: Literal["mean", "sum"]
    axis: str
    body: Expr
    loc: Loc = _loc()


Expr = Num | Name | Attr | Subscript | Call | BinOp | Neg | Reduce


# Statements ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The left side of ``=``: a name, or one member ``name[subscript]`` of a family."""

    name: str
    subscript: Expr | None
    loc: Loc = _loc()


@dataclass(frozen=True)
class InputDecl:
    """``input x[I] over t`` or ``target y[O] over t``; ``over`` is empty for static data."""

    kind: Literal["input", "target"]
    name: str
    dims: tuple[Expr, ...]
    over: tuple[str, ...]
    loc: Loc = _loc()


@dataclass(frozen=True)
class ParamDecl:
    """``param W[H, I] ~ init``; ``init`` is None when no initialiser is written."""

    name: str
    dims: tuple[Expr, ...]
    init: Expr | None
    loc: Loc = _loc()


@dataclass(frozen=True)
class Equation:
    """``target(index, ...) = value``: a value defined element by element along axes."""

    target: Target
    index: tuple[Expr, ...]
    value: Expr
    loc: Loc = _loc()


@dataclass(frozen=True)
class Assign:
    """``target = value``: a whole value bound to a name."""

    target: Target
    value: Expr
    loc: Loc = _loc()


@dataclass(frozen=True)
class Return:
    """``return value`` in a ``def``."""

    value: Expr
    loc: Loc = _loc()


@dataclass(frozen=True)
class For:
    """``for var in start..stop:``, expanded by the compiler (``stop`` included)."""

    var: str
    start: Expr
    stop: Expr
    body: tuple[Stmt, ...]
    loc: Loc = _loc()


Stmt = InputDecl | ParamDecl | Equation | Assign | Return | For


# Definitions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeParam:
    """A size parameter of a model, ``H`` or ``O = 10``."""

    name: str
    default: Expr | None
    loc: Loc = _loc()


@dataclass(frozen=True)
class FuncParam:
    """A parameter of a def: ``x over a`` binds a generic axis, ``act = tanh`` a default."""

    name: str
    over: str | None
    default: Expr | None
    loc: Loc = _loc()


@dataclass(frozen=True)
class ModelDef:
    """``model Name(params): body``."""

    name: str
    params: tuple[SizeParam, ...]
    body: tuple[Stmt, ...]
    loc: Loc = _loc()


@dataclass(frozen=True)
class FuncDef:
    """``def name(params): body``: a reusable block, expanded at each call."""

    name: str
    params: tuple[FuncParam, ...]
    body: tuple[Stmt, ...]
    loc: Loc = _loc()


@dataclass(frozen=True)
class Module:
    """A whole model file: its definitions in order, and the text they came from."""

    items: tuple[ModelDef | FuncDef, ...]
    source: Source = field(compare=False, repr=False)
    loc: Loc = _loc()
