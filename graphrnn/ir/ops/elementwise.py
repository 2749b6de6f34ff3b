"""Elementwise ops. Binary ops take equal per-example shapes, or one scalar operand.

VJPs reuse the op's own output where that is cheaper: tanh' = 1 - y^2, sigmoid' = y(1 - y).
"""

from __future__ import annotations

import numpy as np

from graphrnn.ir.ops.leaf import const
from graphrnn.ir.registry import ShapeMismatch, apply, register


def _unary_shape(shapes, **attrs):
    return shapes[0]


def _binary_shape(shapes, **attrs):
    a, b = shapes
    if a == b or b == ():
        return a
    if a == ():
        return b
    raise ShapeMismatch("elementwise operands must have the same shape, or one be a scalar")


def _trailing(node, arrays):
    """Give scalar operands a trailing axis so they broadcast against vectors per example."""
    rank = len(node.shape)
    return [
        a.reshape(a.shape + (1,) * (rank - len(i.shape))) if len(i.shape) < rank else a
        for a, i in zip(arrays, node.inputs)
    ]


def unary(name, fn, scalar, vjp, **facts):
    register(
        name,
        shape=_unary_shape,
        evaluate=lambda env, node, x: fn(x),
        vjp=vjp,
        arity=1,
        scalar=scalar,
        **facts,
    )


def binary(name, fn, scalar, vjp, **facts):
    register(
        name,
        shape=_binary_shape,
        evaluate=lambda env, node, a, b: fn(*_trailing(node, [a, b])),
        vjp=vjp,
        arity=2,
        scalar=scalar,
        **facts,
    )


def _one_minus(y):
    return apply("sub", const(1.0), y)


def _sigmoid(x):
    return 0.5 * np.tanh(0.5 * x) + 0.5


unary("neg", np.negative, "(-{0})", lambda n, g: [apply("neg", g)], linear=True, linear_in=(0,))
unary("exp", np.exp, "exp({0})", lambda n, g: [apply("mul", g, n)], builtin=True)
unary("log", np.log, "log({0})", lambda n, g: [apply("div", g, n.inputs[0])], builtin=True)
unary(
    "sqrt",
    np.sqrt,
    "sqrt({0})",
    lambda n, g: [apply("div", g, apply("mul", const(2.0), n))],
    builtin=True,
)
unary(
    "tanh",
    np.tanh,
    "tanh({0})",
    lambda n, g: [apply("mul", g, _one_minus(apply("mul", n, n)))],
    builtin=True,
)
unary(
    "sigmoid",
    _sigmoid,
    "(0.5 * tanh(0.5 * {0}) + 0.5)",
    lambda n, g: [apply("mul", g, apply("mul", n, _one_minus(n)))],
    builtin=True,
)
unary(
    "relu",
    lambda x: np.maximum(x, 0),
    "max({0}, 0.0)",
    lambda n, g: [apply("mul", g, apply("step", n.inputs[0]))],
    builtin=True,
)
unary(
    "softplus",
    lambda x: np.logaddexp(0.0, x),
    "(max({0}, 0.0) + log(1.0 + exp(-abs({0}))))",
    lambda n, g: [apply("mul", g, apply("sigmoid", n.inputs[0]))],
    builtin=True,
)
unary("step", lambda x: (x > 0).astype(x.dtype), "(1.0 if {0} > 0.0 else 0.0)", lambda n, g: [None])

binary("add", np.add, "({0} + {1})", lambda n, g: [g, g], linear=True, commutative=True)
binary("sub", np.subtract, "({0} - {1})", lambda n, g: [g, apply("neg", g)], linear=True)
binary(
    "mul",
    np.multiply,
    "({0} * {1})",
    lambda n, g: [apply("mul", g, n.inputs[1]), apply("mul", g, n.inputs[0])],
    linear_in=(0, 1),
    commutative=True,
)
binary(
    "div",
    np.divide,
    "({0} / {1})",
    lambda n, g: [
        apply("div", g, n.inputs[1]),
        apply("neg", apply("div", apply("mul", g, n), n.inputs[1])),
    ],
    linear_in=(0,),
)
