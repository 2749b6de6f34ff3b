"""Leaves of the graph: inputs, parameters, constants, and the placeholder used for cycles.

A placeholder (`alias`) stands for a value that is defined later (an equation that reads
itself through a delay, an adjoint still being summed); `resolve_aliases` removes them.
"""

from __future__ import annotations

import numpy as np

from graphrnn.errors import Loc
from graphrnn.ir.node import STATIC, Context, Node
from graphrnn.ir.registry import ShapeMismatch, register


def _leaf_shape(shapes, **attrs):
    return attrs["shape"]


def _never(env, node, *arrays):
    raise RuntimeError(f"leaf '{node.label()}' must be bound by the backend, not evaluated")


register("input", shape=_leaf_shape, evaluate=_never, vjp=None, arity=0, leaf=True)
register("param", shape=_leaf_shape, evaluate=_never, vjp=None, arity=0, leaf=True)
register("alias", shape=_leaf_shape, evaluate=_never, vjp=None, arity=None, leaf=True)


def _const_eval(env, node, *arrays):
    lead = (1,) * (len(env.axes) + 1)
    return np.full(lead + tuple(node.shape), node.attrs["value"], dtype=env.dtype)


def _const_shape(shapes, **attrs):
    if any(d < 0 for d in attrs["shape"]):
        raise ShapeMismatch(f"negative size in {attrs['shape']}")
    return attrs["shape"]


register("const", shape=_const_shape, evaluate=_const_eval, vjp=None, arity=0, whole_array=True)


def input_node(name: str, shape, axes=(), loc: Loc | None = None, role: str = "input") -> Node:
    return Node(
        "input", [], {"role": role}, tuple(shape), Context(frozenset(axes), True), name, loc
    )


def param_node(name: str, shape, init: tuple, loc: Loc | None = None) -> Node:
    return Node("param", [], {"init": init}, tuple(shape), STATIC, name, loc)


def const(value: float, shape=(), loc: Loc | None = None) -> Node:
    return Node(
        "const", [], {"value": float(value), "shape": tuple(shape)}, tuple(shape), STATIC, None, loc
    )


def placeholder(shape, context: Context, name: str | None = None, loc: Loc | None = None) -> Node:
    shape = tuple(shape) if shape is not None else None
    return Node("alias", [], {"shape": shape}, shape, context, name, loc)


def bind(alias: Node, value: Node) -> None:
    """Make a placeholder stand for `value`; `resolve_aliases` then removes it."""
    alias.inputs = [value]
    alias.shape = value.shape
    alias.context = value.context


def resolve(node: Node) -> Node:
    seen = set()
    while node.op == "alias":
        if not node.inputs or node.id in seen:
            raise RuntimeError(f"unbound or cyclic placeholder {node!r}")
        seen.add(node.id)
        node = node.inputs[0]
    return node
