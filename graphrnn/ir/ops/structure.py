"""Ops that move, join or reduce per-example elements: concat, slice, pad, sum, mean, and the
two broadcasting ops `expand` and `reduce_to` that autodiff inserts where contexts differ.

concat/slice/pad act on the last per-example dimension.
"""

from __future__ import annotations

import numpy as np

from graphrnn.ir.node import Context
from graphrnn.ir.ops.leaf import const
from graphrnn.ir.registry import ShapeMismatch, apply, register


def _concat_shape(shapes, **attrs):
    if not shapes:
        raise ShapeMismatch("concat needs at least one operand")
    heads = {s[:-1] for s in shapes}
    if any(len(s) == 0 for s in shapes) or len(heads) != 1:
        raise ShapeMismatch("concat joins along the last dimension; the others must agree")
    return shapes[0][:-1] + (sum(s[-1] for s in shapes),)


def _concat_eval(env, node, *arrays):
    lead = np.broadcast_shapes(*(a.shape[:-1] for a in arrays))
    return np.concatenate([np.broadcast_to(a, lead + a.shape[-1:]) for a in arrays], axis=-1)


def _concat_vjp(node, g):
    grads, start = [], 0
    for x in node.inputs:
        grads.append(apply("slice", g, start=start, stop=start + x.shape[-1]))
        start += x.shape[-1]
    return grads


register(
    "concat",
    builtin=True,
    shape=_concat_shape,
    evaluate=_concat_eval,
    vjp=_concat_vjp,
    arity=None,
    linear=True,
    reads_in_place=True,
)


def _slice_shape(shapes, *, start, stop):
    (s,) = shapes
    if not s or not 0 <= start < stop <= s[-1]:
        raise ShapeMismatch(f"slice {start}:{stop} is outside the last dimension of size {s[-1:]}")
    return s[:-1] + (stop - start,)


register(
    "slice",
    shape=_slice_shape,
    evaluate=lambda env, node, x: x[..., node.attrs["start"] : node.attrs["stop"]],
    vjp=lambda n, g: [
        apply(
            "pad",
            g,
            before=n.attrs["start"],
            after=n.inputs[0].shape[-1] - n.attrs["stop"],
        )
    ],
    arity=1,
    linear=True,
    linear_in=(0,),
    reads_in_place=True,
)


def _pad_shape(shapes, *, before, after):
    (s,) = shapes
    return s[:-1] + (s[-1] + before + after,)


def _pad_eval(env, node, x):
    widths = [(0, 0)] * (x.ndim - 1) + [(node.attrs["before"], node.attrs["after"])]
    return np.pad(x, widths)


register(
    "pad",
    shape=_pad_shape,
    evaluate=_pad_eval,
    vjp=lambda n, g: [
        apply("slice", g, start=n.attrs["before"], stop=n.attrs["before"] + n.inputs[0].shape[-1])
    ],
    arity=1,
    linear=True,
    linear_in=(0,),
    reads_in_place=True,
)


def _per_example_axes(node):
    return tuple(range(-len(node.inputs[0].shape), 0))


register(
    "sum",
    builtin=True,
    shape=lambda shapes: (),
    evaluate=lambda env, node, x: x.sum(axis=_per_example_axes(node)),
    vjp=lambda n, g: [apply("expand", g, shape=n.inputs[0].shape)],
    arity=1,
    linear=True,
    linear_in=(0,),
    reads_in_place=True,
)
register(
    "mean",
    builtin=True,
    shape=lambda shapes: (),
    evaluate=lambda env, node, x: x.mean(axis=_per_example_axes(node)),
    vjp=lambda n, g: [
        apply(
            "expand",
            apply("div", g, const(float(np.prod(n.inputs[0].shape)))),
            shape=n.inputs[0].shape,
        )
    ],
    arity=1,
    linear=True,
    linear_in=(0,),
    reads_in_place=True,
)


def _expand_shape(shapes, *, shape):
    if shapes[0] != () and shapes[0] != shape:
        raise ShapeMismatch(f"cannot expand {shapes[0]} to {shape}")
    return shape


def _expand_eval(env, node, x):
    extra = len(node.shape) - len(node.inputs[0].shape)
    x = x.reshape(x.shape + (1,) * extra)
    return np.broadcast_to(x, x.shape[: x.ndim - len(node.shape)] + node.shape)


register(
    "expand",
    shape=_expand_shape,
    evaluate=_expand_eval,
    vjp=lambda n, g: [g],
    arity=1,
    linear=True,
    linear_in=(0,),
    reads_in_place=True,
)


def _reduce_to_shape(shapes, *, context, shape):
    if shape != () and shape != shapes[0]:
        raise ShapeMismatch(f"cannot reduce {shapes[0]} to {shape}")
    return shape


def _reduce_to_eval(env, node, x):
    target: Context = node.attrs["context"]
    lead = [i for i, a in enumerate(env.axes) if a not in target.axes and x.shape[i] != 1]
    if not target.batched:
        lead.append(len(env.axes))
    rank = len(node.inputs[0].shape) - len(node.shape)
    trailing = list(range(x.ndim - rank, x.ndim))
    x = x.sum(axis=tuple(lead), keepdims=True) if lead else x
    return x.sum(axis=tuple(trailing)) if trailing else x


register(
    "reduce_to",
    shape=_reduce_to_shape,
    evaluate=_reduce_to_eval,
    vjp=lambda n, g: [apply("expand", g, shape=n.inputs[0].shape)],
    arity=1,
    context=lambda contexts, *, context, shape: Context(
        contexts[0].axes & context.axes, contexts[0].batched and context.batched
    ),
    linear=True,
    linear_in=(0,),
    reads_in_place=True,
)


def _broadcast_shape(shapes, *, context):
    return shapes[0]


def _broadcast_eval(env, node, x):
    return np.broadcast_to(x, env.aligned_shape(node.context, node.shape))


register(
    "broadcast",
    shape=_broadcast_shape,
    evaluate=_broadcast_eval,
    vjp=lambda n, g: [g],
    arity=1,
    context=lambda contexts, *, context: contexts[0].union(context),
    linear=True,
    linear_in=(0,),
    materialises=True,
    along_axes=True,
    reads_in_place=True,
)


def _cumsum_shape(shapes, reverse: bool = False):
    (s,) = shapes
    if not s:
        raise ShapeMismatch("cumsum runs along the last dimension; give it a vector or matrix")
    return s


def _cumsum_eval(env, node, x):
    if node.attrs.get("reverse", False):
        return np.flip(np.cumsum(np.flip(x, -1), axis=-1), -1)
    return np.cumsum(x, axis=-1)


register(
    "cumsum",
    builtin=True,
    shape=_cumsum_shape,
    evaluate=_cumsum_eval,
    # y_j = sum_{i <= j} x_i, so dL/dx_i = sum_{j >= i} g_j: the sum from the other end.
    vjp=lambda n, g: [apply("cumsum", g, reverse=not n.attrs.get("reverse", False))],
    arity=1,
    linear=True,
    linear_in=(0,),
    reads_in_place=True,
)
