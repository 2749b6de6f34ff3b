"""Per-example linear algebra: matrix times vector, outer product, transpose.

`matmul(A[m, n], v[n]) -> [m]` is the only product the equations need; its VJP is an outer
product for A and a transposed product for v, so gradients stay in these three ops.
"""

from __future__ import annotations

import numpy as np

from graphrnn.ir.registry import ShapeMismatch, apply, register


def _matmul_shape(shapes, **attrs):
    a, v = shapes
    if len(a) != 2 or len(v) != 1:
        raise ShapeMismatch("'@' multiplies a matrix [m, n] by a vector [n]")
    if a[1] != v[0]:
        raise ShapeMismatch(f"inner sizes differ: {a[1]} != {v[0]}")
    return (a[0],)


def _matmul_eval(env, node, a, v):
    return np.matmul(a, v[..., None])[..., 0]


register(
    "matmul",
    shape=_matmul_shape,
    evaluate=_matmul_eval,
    vjp=lambda n, g: [
        apply("outer", g, n.inputs[1]),
        apply("matmul", apply("transpose", n.inputs[0]), g),
    ],
    arity=2,
    linear_in=(0, 1),
)


def _outer_shape(shapes, **attrs):
    a, b = shapes
    if len(a) != 1 or len(b) != 1:
        raise ShapeMismatch("outer takes two vectors")
    return (a[0], b[0])


register(
    "outer",
    builtin=True,
    shape=_outer_shape,
    evaluate=lambda env, node, a, b: a[..., :, None] * b[..., None, :],
    vjp=lambda n, g: [
        apply("matmul", g, n.inputs[1]),
        apply("matmul", apply("transpose", g), n.inputs[0]),
    ],
    arity=2,
    linear_in=(0, 1),
)


def _transpose_shape(shapes, **attrs):
    (a,) = shapes
    if len(a) != 2:
        raise ShapeMismatch("transpose takes a matrix")
    return (a[1], a[0])


register(
    "transpose",
    builtin=True,
    shape=_transpose_shape,
    evaluate=lambda env, node, a: np.swapaxes(a, -1, -2),
    vjp=lambda n, g: [apply("transpose", g)],
    arity=1,
    linear=True,
    linear_in=(0,),
    reads_in_place=True,
)
