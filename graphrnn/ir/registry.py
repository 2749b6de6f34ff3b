"""The op registry: every op is one record holding its shape rule, NumPy evaluation and VJP.

`apply` is the single way nodes are made, so every node of every stage has passed its op's
shape rule. A shape rule raises `ShapeMismatch` with a sentence; `apply` turns it into a
`ShapeError` at the user's line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from graphrnn.errors import Loc, ShapeError
from graphrnn.ir.node import STATIC, Context, Node

Shape = tuple[int, ...]


class ShapeMismatch(Exception):
    """Raised by shape rules; carries only the sentence, the place is added by `apply`."""


@dataclass
class EvalEnv:
    """What an evaluation needs beyond the operands: axis order and sizes, batch, dtype."""

    axes: tuple[str, ...]
    sizes: dict[str, int]
    batch: int
    dtype: np.dtype

    def axis_dim(self, axis: str) -> int:
        return self.axes.index(axis)

    def aligned_shape(self, context: Context, shape: Shape) -> Shape:
        lead = tuple(self.sizes[a] if a in context.axes else 1 for a in self.axes)
        return lead + ((self.batch if context.batched else 1),) + tuple(shape)


ShapeRule = Callable[..., Shape]
Evaluate = Callable[..., np.ndarray]
VJP = Callable[[Node, Node], Sequence[Node | None]]
ContextRule = Callable[..., Context]


@dataclass
class Op:
    """One primitive. `evaluate(env, node, *arrays)` works on aligned arrays (see node.py).

    Facts about the op, read by the passes and backends instead of lists of op names:
      elementwise     it has a `scalar` formula, applied to each element (fused by backends)
      linear          linear in all its operands together: f(a x + b y) = a f(x) + b f(y)
      linear_in       operand positions it is linear in with the others fixed: a zero there
                      gives a zero
      commutative     its two operands can be swapped without changing the result, exactly
      leaf            bound by the backend (or stands for a later value): never rewritten
      whole_array     computed for the whole buffer at once, outside any loop (a constant, a
                      size), never a per-element loop of its own
      materialises    its reference evaluation builds an array of the node's own stored
                      context, whatever its operands vary over
      along_axes      works along the index axes or widens the context (delay, at, sums and
                      expansions over t, broadcast): its value depends on sizes bound at run time
      reads_in_place  its kernel reads its operands element by element, so a sliced operand
                      is read in place at shifted indices instead of copied
      builtin         a model file calls it by its name, with its operands as arguments

    `kernel(node)` gives the op's loop nests (graphrnn/loopnest.py), which both compiled
    backends print; it is attached by the op family's module in graphrnn/kernels/.
    """

    name: str
    shape: ShapeRule
    evaluate: Evaluate
    vjp: VJP | None
    arity: int | None
    context: ContextRule | None = None
    elementwise: bool = False
    scalar: str | None = None
    linear: bool = False
    linear_in: tuple[int, ...] = ()
    commutative: bool = False
    leaf: bool = False
    whole_array: bool = False
    materialises: bool = False
    along_axes: bool = False
    reads_in_place: bool = False
    builtin: bool = False
    kernel: Callable | None = None


OPS: dict[str, Op] = {}


def register(
    name: str,
    *,
    shape: ShapeRule,
    evaluate: Evaluate,
    vjp: VJP | None,
    arity: int | None,
    context: ContextRule | None = None,
    scalar: str | None = None,
    linear: bool = False,
    linear_in: tuple[int, ...] = (),
    commutative: bool = False,
    leaf: bool = False,
    whole_array: bool = False,
    materialises: bool = False,
    along_axes: bool = False,
    reads_in_place: bool = False,
    builtin: bool = False,
) -> Op:
    """`scalar` is the elementwise formula, e.g. "tanh({0})", that every compiled backend
        expands into its fused loops, written with + - * /, max, conditional expressions and the
    functions tanh, exp, log and sqrt, which every backend provides. The other keywords are
    the facts documented on `Op`."""
    op = Op(
        name,
        shape,
        evaluate,
        vjp,
        arity,
        context,
        elementwise=scalar is not None,
        scalar=scalar,
        linear=linear,
        linear_in=linear_in,
        commutative=commutative,
        leaf=leaf,
        whole_array=whole_array,
        materialises=materialises,
        along_axes=along_axes,
        reads_in_place=reads_in_place,
        builtin=builtin,
    )
    OPS[name] = op
    return op


def union_context(contexts: Sequence[Context]) -> Context:
    result = STATIC
    for c in contexts:
        result = result.union(c)
    return result


def apply(op_name: str, *inputs: Node, loc: Loc | None = None, name: str | None = None, **attrs):
    """Make a node, checking arity and shapes; the only constructor of non-leaf nodes."""
    op = OPS[op_name]
    if op.arity is not None and len(inputs) != op.arity:
        raise ShapeError(
            f"'{op_name}' takes {op.arity} argument(s), got {len(inputs)}",
            loc,
            _note(name),
        )
    try:
        shape = tuple(op.shape([i.shape for i in inputs], **attrs))
    except ShapeMismatch as e:
        shapes = ", ".join(_fmt_shape(i.shape) for i in inputs)
        raise ShapeError(f"{op_name}: {e} (operand shapes {shapes})", loc, _note(name)) from None
    contexts = [i.context for i in inputs]
    context = op.context(contexts, **attrs) if op.context else union_context(contexts)
    return Node(op_name, list(inputs), attrs, shape, context, name, loc)


def _note(name: str | None) -> str | None:
    return f"in the equation for '{name}'" if name else None


def _fmt_shape(shape: Shape | None) -> str:
    return "[" + ", ".join(map(str, shape)) + "]" if shape is not None else "[?]"
