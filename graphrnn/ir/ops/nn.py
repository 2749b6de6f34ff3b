"""Neural-network ops on per-example vectors: softmax, log-softmax and the two losses.

softmax_cross_entropy(o, y) = -sum(y * log_softmax(o)) takes a probability vector y (one-hot
for classification); mse(o, y) = mean((o - y)^2) over the vector's elements.
"""

from __future__ import annotations

import numpy as np

from graphrnn.ir.ops.leaf import const
from graphrnn.ir.registry import ShapeMismatch, apply, register


def _vector_shape(shapes, **attrs):
    (s,) = shapes
    if len(s) != 1:
        raise ShapeMismatch("expects a vector")
    return s


def _log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


register(
    "softmax",
    builtin=True,
    shape=_vector_shape,
    evaluate=lambda env, node, x: np.exp(_log_softmax(x)),
    vjp=lambda n, g: [apply("mul", n, apply("sub", g, apply("sum", apply("mul", g, n))))],
    arity=1,
    reads_in_place=True,
)
register(
    "log_softmax",
    builtin=True,
    shape=_vector_shape,
    evaluate=lambda env, node, x: _log_softmax(x),
    vjp=lambda n, g: [
        apply("sub", g, apply("mul", apply("softmax", n.inputs[0]), apply("sum", g)))
    ],
    arity=1,
    reads_in_place=True,
)


def _pair_shape(shapes, **attrs):
    o, y = shapes
    if len(o) != 1 or o != y:
        raise ShapeMismatch("prediction and target must be vectors of the same size")
    return ()


def _xent_vjp(node, g):
    o, y = node.inputs
    probs_minus_y = apply("sub", apply("mul", apply("softmax", o), apply("sum", y)), y)
    return [apply("mul", g, probs_minus_y), apply("neg", apply("mul", g, apply("log_softmax", o)))]


register(
    "softmax_cross_entropy",
    builtin=True,
    shape=_pair_shape,
    evaluate=lambda env, node, o, y: -(y * _log_softmax(o)).sum(axis=-1),
    vjp=_xent_vjp,
    arity=2,
    reads_in_place=True,
)


def _mse_vjp(node, g):
    o, y = node.inputs
    d = apply("mul", g, apply("mul", const(2.0 / o.shape[0]), apply("sub", o, y)))
    return [d, apply("neg", d)]


register(
    "mse",
    builtin=True,
    shape=_pair_shape,
    evaluate=lambda env, node, o, y: ((o - y) ** 2).mean(axis=-1),
    vjp=_mse_vjp,
    arity=2,
    reads_in_place=True,
)
