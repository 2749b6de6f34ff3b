"""Ops on the index axes and the batch: the delay edge and the ops that enter or leave an axis.

delay(v, init; axis, offset) reads v at step t + offset, or `init` where that step is outside
the sequence. It is the only op a cycle may pass through. Its VJP is a delay with the offset
negated (the BPTT recurrence runs the other way) plus, for `init`, the sum of the adjoint over
the boundary steps (`edge_sum`).

Steps of an axis are 1..T in the language and 0..T-1 in arrays; `at`/`place` take the
1-based step, or -1 for the last one.
"""

from __future__ import annotations

import numpy as np

from graphrnn.errors import DSLError
from graphrnn.ir.node import STATIC, Context
from graphrnn.ir.ops.leaf import const
from graphrnn.ir.registry import ShapeMismatch, apply, register


def _take(env, x, axis, start, stop):
    index = [slice(None)] * x.ndim
    index[env.axis_dim(axis)] = slice(start, stop)
    return x[tuple(index)]


def _boundary(env, axis, offset):
    """The array positions where a delay by `offset` reads the initial value."""
    size, k = env.sizes[axis], min(abs(offset), env.sizes[axis])
    return (0, k) if offset < 0 else (size - k, size)


def _delay_shape(shapes, *, axis, offset):
    v, init = shapes
    if v is not None and v != init:
        raise ShapeMismatch(f"the initial value has shape {list(init)}, the value {list(v)}")
    return init


def _delay_context(contexts, *, axis, offset):
    return contexts[0].union(contexts[1]).union(Context(frozenset([axis]), False))


def _delay_eval(env, node, v, init):
    axis, offset = node.attrs["axis"], node.attrs["offset"]
    out = np.empty(env.aligned_shape(node.context, node.shape), dtype=env.dtype)
    v = np.broadcast_to(v, out.shape)
    lo, hi = _boundary(env, axis, offset)
    d, size = env.axis_dim(axis), env.sizes[axis]
    dst = [slice(None)] * out.ndim
    dst[d] = slice(lo, hi)
    out[tuple(dst)] = init
    dst[d] = slice(hi, size) if offset < 0 else slice(0, lo)
    src = (0, size - hi) if offset < 0 else (hi - lo, size)
    out[tuple(dst)] = _take(env, v, axis, *src)
    return out


def _delay_vjp(node, g):
    axis, offset = node.attrs["axis"], node.attrs["offset"]
    zero = const(0.0, node.shape)
    return [
        apply("delay", g, zero, axis=axis, offset=-offset),
        apply("edge_sum", g, axis=axis, offset=offset),
    ]


register(
    "delay",
    shape=_delay_shape,
    evaluate=_delay_eval,
    vjp=_delay_vjp,
    arity=2,
    context=_delay_context,
    linear=True,
    materialises=True,
    along_axes=True,
    reads_in_place=True,
)


def _same_shape(shapes, **attrs):
    return shapes[0]


def _drop_axis(contexts, *, axis, **attrs):
    return Context(contexts[0].axes - {axis}, contexts[0].batched)


def _add_axis(contexts, *, axis, **attrs):
    return Context(contexts[0].axes | {axis}, contexts[0].batched)


def _edge_sum_eval(env, node, x):
    axis, offset = node.attrs["axis"], node.attrs["offset"]
    lo, hi = _boundary(env, axis, offset)
    if x.shape[env.axis_dim(axis)] == 1:
        return x * (hi - lo)
    return _take(env, x, axis, lo, hi).sum(axis=env.axis_dim(axis), keepdims=True)


def _fill(env, node, x, lo, hi):
    axis = node.attrs["axis"]
    out = np.zeros(env.aligned_shape(node.context, node.shape), dtype=env.dtype)
    index = [slice(None)] * out.ndim
    index[env.axis_dim(axis)] = slice(lo, hi)
    out[tuple(index)] = x
    return out


register(
    "edge_sum",
    shape=_same_shape,
    evaluate=_edge_sum_eval,
    vjp=lambda n, g: [apply("edge_fill", g, **n.attrs)],
    arity=1,
    context=_drop_axis,
    linear=True,
    linear_in=(0,),
    along_axes=True,
    reads_in_place=True,
)
register(
    "edge_fill",
    shape=_same_shape,
    evaluate=lambda env, node, x: _fill(env, node, x, *_boundary(env, **node.attrs)),
    vjp=lambda n, g: [apply("edge_sum", g, **n.attrs)],
    arity=1,
    context=_add_axis,
    linear=True,
    linear_in=(0,),
    materialises=True,
    along_axes=True,
    reads_in_place=True,
)


def _reduce_axis_eval(env, node, x):
    axis = node.attrs["axis"]
    d = env.axis_dim(axis)
    if x.shape[d] == 1:
        return x if node.attrs["kind"] == "mean" else x * env.sizes[axis]
    reduce = np.mean if node.attrs["kind"] == "mean" else np.sum
    return reduce(x, axis=d, keepdims=True)


def _reduce_axis_vjp(node, g):
    if node.attrs["kind"] == "mean":
        g = apply("div", g, apply("axis_size", axis=node.attrs["axis"]))
    return [apply("expand_axis", g, axis=node.attrs["axis"])]


def _reduce_axis_shape(shapes, *, axis, kind):
    if kind not in ("sum", "mean"):
        raise ShapeMismatch(f"unknown reduction '{kind}'")
    return shapes[0]


register(
    "reduce_axis",
    shape=_reduce_axis_shape,
    evaluate=_reduce_axis_eval,
    vjp=_reduce_axis_vjp,
    arity=1,
    context=_drop_axis,
    linear=True,
    linear_in=(0,),
    along_axes=True,
    reads_in_place=True,
)
register(
    "expand_axis",
    shape=_same_shape,
    evaluate=lambda env, node, x: np.broadcast_to(x, env.aligned_shape(node.context, node.shape)),
    vjp=lambda n, g: [apply("reduce_axis", g, axis=n.attrs["axis"], kind="sum")],
    arity=1,
    context=_add_axis,
    linear=True,
    linear_in=(0,),
    materialises=True,
    along_axes=True,
    reads_in_place=True,
)


def _position(env, node):
    """The 0-based step a fixed-step read names; a located error past either end (the
    compiled call checks this before any backend runs, so this guards graphs run directly)."""
    axis, index = node.attrs["axis"], node.attrs["index"]
    size = env.sizes[axis]
    pos = size + index if index < 0 else index - 1
    if not 0 <= pos < size:
        raise DSLError(
            f"step {index} of '{axis}' is read here, but the sequence has {size} steps",
            node.loc,
            "give longer sequences, or read the last step with end, e.g. h(end)",
        )
    return pos


def _at_eval(env, node, x):
    axis = node.attrs["axis"]
    pos = _position(env, node)
    if x.shape[env.axis_dim(axis)] == 1:
        return x
    return _take(env, x, axis, pos, pos + 1)


def _place_eval(env, node, x):
    pos = _position(env, node)
    return _fill(env, node, x, pos, pos + 1)


register(
    "at",
    shape=_same_shape,
    evaluate=_at_eval,
    vjp=lambda n, g: [apply("place", g, **n.attrs)],
    arity=1,
    context=_drop_axis,
    linear=True,
    linear_in=(0,),
    along_axes=True,
    reads_in_place=True,
)
register(
    "place",
    shape=_same_shape,
    evaluate=_place_eval,
    vjp=lambda n, g: [apply("at", g, **n.attrs)],
    arity=1,
    context=_add_axis,
    linear=True,
    linear_in=(0,),
    materialises=True,
    along_axes=True,
    reads_in_place=True,
)


def _scalar_shape(shapes, **attrs):
    if shapes and shapes[0] != ():
        raise ShapeMismatch("the loss must be a scalar per example")
    return ()


register(
    "batch_mean",
    shape=_scalar_shape,
    evaluate=lambda env, node, x: x.mean(axis=len(env.axes), keepdims=True),
    vjp=lambda n, g: [apply("div", g, apply("batch_size")) if n.inputs[0].batched else g],
    arity=1,
    context=lambda contexts: Context(contexts[0].axes, False),
    linear=True,
    linear_in=(0,),
    reads_in_place=True,
)


def _size_const(env, value):
    return np.full((1,) * (len(env.axes) + 1), value, dtype=env.dtype)


register(
    "batch_size",
    shape=_scalar_shape,
    evaluate=lambda env, node: _size_const(env, env.batch),
    vjp=None,
    arity=0,
    context=lambda contexts: STATIC,
    whole_array=True,
)
register(
    "axis_size",
    shape=_scalar_shape,
    evaluate=lambda env, node: _size_const(env, env.sizes[node.attrs["axis"]]),
    vjp=None,
    arity=0,
    context=lambda contexts, axis: STATIC,
    whole_array=True,
)
