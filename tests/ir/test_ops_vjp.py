"""Every op's VJP against central finite differences.

For each registered op with a VJP, Hypothesis draws operand shapes, contexts (static, batched,
over some of the axes t and u) and values; the test builds
loss = batch_mean(sum(random weights * op(operands))) and compares the gradients that
`backpropagate` builds (evaluated by the reference interpreter) with central differences.
Operands in different contexts make `backpropagate` insert `reduce_to`, so its summing over
steps and the batch is checked everywhere too.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from graphrnn.ir.graph import Graph, reachable
from graphrnn.ir.node import STATIC, Context
from graphrnn.ir.registry import OPS, apply
from graphrnn.unroll import unroll

from .gradcheck import AXES, Builder, check_gradients, contexts, gradients, scalar_loss

dims = st.integers(1, 4)
offsets = st.sampled_from([-3, -2, -1, 1, 2, 3])


def shape_of(draw, min_rank=0, max_rank=2):
    rank = draw(st.integers(min_rank, max_rank))
    return tuple(draw(dims) for _ in range(rank))


# ---- one case per op: makes the operands with `b.leaf` and returns the op's node --------------
UNARY_VALUES = {
    "neg": "any",
    "exp": "any",
    "log": "pos",
    "sqrt": "pos",
    "tanh": "any",
    "sigmoid": "any",
    "softplus": "any",
    "relu": "away",
    "step": "away",
}


def unary_case(op, draw, b):
    return apply(op, b.leaf(shape_of(draw), kind=UNARY_VALUES[op]))


def binary_case(op, draw, b):
    shape = shape_of(draw)
    pattern = draw(st.sampled_from(["same", "tensor-scalar", "scalar-tensor"]))
    left, right = {
        "same": (shape, shape),
        "tensor-scalar": (shape, ()),
        "scalar-tensor": ((), shape),
    }[pattern]
    x = b.leaf(left)
    y = b.leaf(right, kind="away" if op == "div" else "any")
    return apply(op, x, y)


def matmul_case(op, draw, b):
    m, n = draw(dims), draw(dims)
    return apply("matmul", b.leaf((m, n)), b.leaf((n,)))


def outer_case(op, draw, b):
    return apply("outer", b.leaf((draw(dims),)), b.leaf((draw(dims),)))


def transpose_case(op, draw, b):
    return apply("transpose", b.leaf((draw(dims), draw(dims))))


def concat_case(op, draw, b):
    head = shape_of(draw, 0, 1)
    parts = [b.leaf(head + (draw(dims),)) for _ in range(draw(st.integers(1, 3)))]
    return apply("concat", *parts)


def slice_case(op, draw, b):
    shape = shape_of(draw, 1, 2)
    n = shape[-1]
    start = draw(st.integers(0, n - 1))
    stop = draw(st.integers(start + 1, n))
    return apply("slice", b.leaf(shape), start=start, stop=stop)


def pad_case(op, draw, b):
    x = b.leaf(shape_of(draw, 1, 2))
    return apply("pad", x, before=draw(st.integers(0, 2)), after=draw(st.integers(0, 2)))


def reduction_case(op, draw, b):
    return apply(op, b.leaf(shape_of(draw)))


def cumsum_case(op, draw, b):
    return apply(op, b.leaf(shape_of(draw, min_rank=1)), reverse=draw(st.booleans()))


def expand_case(op, draw, b):
    shape = shape_of(draw)
    x = b.leaf(draw(st.sampled_from([(), shape])))
    return apply("expand", x, shape=shape)


def reduce_to_case(op, draw, b):
    shape = shape_of(draw)
    x = b.leaf(shape)
    target = draw(contexts)
    return apply("reduce_to", x, context=target, shape=draw(st.sampled_from([shape, ()])))


def vector_case(op, draw, b):
    return apply(op, b.leaf((draw(dims),)))


def pair_case(op, draw, b):
    n = draw(dims)
    prediction = b.leaf((n,))
    target = b.leaf((n,), kind="prob" if op == "softmax_cross_entropy" else "any")
    return apply(op, prediction, target)


def delay_case(op, draw, b):
    axis, shape = draw(st.sampled_from(AXES)), shape_of(draw, 0, 1)
    value = b.leaf(shape, within=axis)
    init = b.leaf(shape, without=axis)
    return apply("delay", value, init, axis=axis, offset=draw(offsets))


def edge_sum_case(op, draw, b):
    axis = draw(st.sampled_from(AXES))
    x = b.leaf(shape_of(draw, 0, 1), within=axis)
    return apply("edge_sum", x, axis=axis, offset=draw(offsets))


def edge_fill_case(op, draw, b):
    axis = draw(st.sampled_from(AXES))
    x = b.leaf(shape_of(draw, 0, 1), without=axis)
    return apply("edge_fill", x, axis=axis, offset=draw(offsets))


def reduce_axis_case(op, draw, b):
    axis = draw(st.sampled_from(AXES))
    x = b.leaf(shape_of(draw, 0, 1), within=axis)
    return apply("reduce_axis", x, axis=axis, kind=draw(st.sampled_from(["sum", "mean"])))


def expand_axis_case(op, draw, b):
    axis = draw(st.sampled_from(AXES))
    return apply("expand_axis", b.leaf(shape_of(draw, 0, 1), without=axis), axis=axis)


def broadcast_case(op, draw, b):
    x = b.leaf(shape_of(draw, 0, 1))
    target = Context(frozenset(draw(st.sets(st.sampled_from(AXES)))), draw(st.booleans()))
    return apply("broadcast", x, context=target)


def step_index(draw, b, axis):
    size = b.env.sizes[axis]
    return draw(st.sampled_from([*range(1, size + 1), *range(-size, 0)]))


def at_case(op, draw, b):
    axis = draw(st.sampled_from(AXES))
    x = b.leaf(shape_of(draw, 0, 1), within=axis)
    return apply("at", x, axis=axis, index=step_index(draw, b, axis))


def place_case(op, draw, b):
    axis = draw(st.sampled_from(AXES))
    x = b.leaf(shape_of(draw, 0, 1), without=axis)
    return apply("place", x, axis=axis, index=step_index(draw, b, axis))


def batch_mean_case(op, draw, b):
    return apply("batch_mean", b.leaf(()))


CASES = {
    **{op: unary_case for op in UNARY_VALUES},
    **{op: binary_case for op in ("add", "sub", "mul", "div")},
    "matmul": matmul_case,
    "outer": outer_case,
    "transpose": transpose_case,
    "concat": concat_case,
    "slice": slice_case,
    "pad": pad_case,
    "sum": reduction_case,
    "mean": reduction_case,
    "cumsum": cumsum_case,
    "expand": expand_case,
    "reduce_to": reduce_to_case,
    "softmax": vector_case,
    "log_softmax": vector_case,
    "softmax_cross_entropy": pair_case,
    "mse": pair_case,
    "delay": delay_case,
    "edge_sum": edge_sum_case,
    "edge_fill": edge_fill_case,
    "reduce_axis": reduce_axis_case,
    "expand_axis": expand_axis_case,
    "broadcast": broadcast_case,
    "at": at_case,
    "place": place_case,
    "batch_mean": batch_mean_case,
}


# ---- images: convolution, pooling, channel ops (graphrnn/ir/ops/conv.py) ---------------------
def window(draw, max_kernel=3, dilate=True, max_padding=1):
    """kernel, stride, padding, dilation and an image size they fit."""
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilate else (1, 1)
    padding = tuple(draw(st.integers(0, min(max_padding, k // 2))) for k in kernel)
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    hw = tuple(
        draw(st.integers(max(1, e - 2 * p), max(1, e - 2 * p) + 3)) for e, p in zip(span, padding)
    )
    return kernel, stride, padding, dilation, hw


def conv_output_hw(hw, kernel, stride, padding, dilation):
    return tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(hw, kernel, stride, padding, dilation)
    )


def conv_case(op, draw, b):
    kernel, stride, padding, dilation, hw = window(draw)
    c, f = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    attrs = {"stride": stride, "padding": padding, "dilation": dilation}
    out_hw = conv_output_hw(hw, kernel, stride, padding, dilation)
    if op == "conv2d":
        return apply(op, b.leaf((c, *hw)), b.leaf((f, c, *kernel)), **attrs)
    if op == "conv2d_input_grad":
        g, w = b.leaf((f, *out_hw)), b.leaf((f, c, *kernel))
        return apply(op, g, w, input_hw=hw, **attrs)
    x, g = b.leaf((c, *hw)), b.leaf((f, *out_hw))
    return apply(op, x, g, kernel=kernel, **attrs)


def pool_case(op, draw, b):
    kernel, stride, padding, _, hw = window(draw, dilate=False)
    c = draw(st.integers(1, 2))
    attrs = {"kernel": kernel, "stride": stride, "padding": padding}
    out = (c, *conv_output_hw(hw, kernel, stride, padding, (1, 1)))
    if op in ("maxpool2d", "avgpool2d"):
        return apply(op, b.leaf((c, *hw)), **attrs)
    if op == "avgpool2d_grad":
        return apply(op, b.leaf(out), input_hw=hw, **attrs)
    if op == "maxpool2d_grad":
        return apply(op, b.leaf((c, *hw)), b.leaf(out), **attrs)
    return apply(op, b.leaf((c, *hw)), b.leaf((c, *hw)), **attrs)


def channel_case(op, draw, b):
    c, h, w = draw(dims), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if op == "channel_expand":
        return apply(op, b.leaf((c,)), height=h, width=w)
    return apply(op, b.leaf((c, h, w)))


if "conv2d" in OPS:
    CASES.update({op: conv_case for op in ("conv2d", "conv2d_input_grad", "conv2d_weight_grad")})
    CASES.update(
        {op: pool_case for op in ("maxpool2d", "maxpool2d_grad", "maxpool2d_gather", "avgpool2d")}
    )
    CASES["avgpool2d_grad"] = pool_case
    CASES.update(
        {
            op: channel_case
            for op in ("global_avgpool", "channel_sum", "channel_expand", "batch_mean_per_channel")
        }
    )


def grid_case(op, draw, b):
    """patches/grid over the builder's axes t (rows) and u (columns), whose lengths are the
    grid's; the image and the map do not vary over them."""
    rows, cols = b.env.sizes["t"], b.env.sizes["u"]
    ph, pw, c = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    attrs = {"axes": ("t", "u"), "rows": rows, "cols": cols, "ph": ph, "pw": pw}
    if op == "patches":
        ctx = draw(contexts)
        image = b.leaf((c, rows * ph, cols * pw), Context(frozenset(), ctx.batched))
        return apply("patches", image, **attrs)
    v = b.leaf((c * ph * pw,), Context(frozenset({"t", "u"}), draw(st.booleans())))
    return apply("grid", v, **attrs)


if "patches" in OPS:
    CASES.update({op: grid_case for op in ("patches", "grid")})


def test_every_op_with_a_vjp_has_a_case():
    with_vjp = {name for name, op in OPS.items() if op.vjp is not None}
    assert sorted(with_vjp - set(CASES)) == [], "ops with a VJP but no gradient test"
    assert sorted(set(CASES) - with_vjp) == [], "cases for ops that are gone or have no VJP"


@pytest.mark.parametrize("op", sorted(CASES))
@given(data=st.data())
def test_vjp_matches_finite_differences(op, data):
    b = Builder(data.draw)
    out = CASES[op](op, data.draw, b)
    assert out.op == op
    loss = scalar_loss(b, out)
    check_gradients(b, loss, gradients(loss, b.leaves))


# ---- ops along an axis applied to a value that does not vary over that axis ----------------
# The DSL never writes these, but the IR allows them (autodiff may too): such a value counts
# as the same at every step, as in the unrolled graph, which defines what a folded graph means.
def along_axis_case(op, draw, b):
    axis = draw(st.sampled_from(AXES))
    x = b.leaf(shape_of(draw, 0, 1), without=axis)
    if op == "delay":
        return apply("delay", x, b.leaf(x.shape, without=axis), axis=axis, offset=draw(offsets))
    if op == "edge_sum":
        return apply("edge_sum", x, axis=axis, offset=draw(offsets))
    if op == "reduce_axis":
        return apply("reduce_axis", x, axis=axis, kind=draw(st.sampled_from(["sum", "mean"])))
    return apply("at", x, axis=axis, index=step_index(draw, b, axis))


@pytest.mark.parametrize("op", ["delay", "edge_sum", "reduce_axis", "at"])
@given(data=st.data())
def test_axis_ops_on_values_constant_along_the_axis(op, data):
    b = Builder(data.draw)
    out = along_axis_case(op, data.draw, b)
    loss = scalar_loss(b, out)
    unrolled = unroll(Graph("g", AXES, loss=loss), dict(b.env.sizes))
    folded_value, unrolled_value = b.evaluate([loss, unrolled.loss])
    np.testing.assert_allclose(
        folded_value.reshape(()),
        unrolled_value.reshape(()),
        rtol=1e-12,
        atol=1e-12,
        err_msg=f"{op} of a value constant along {out.attrs['axis']}: reference vs unrolled",
    )
    check_gradients(b, loss, gradients(loss, b.leaves))


# ---- contexts that differ: the gradient of a static value sums over steps and the batch ------
def _fixed_builder(seed: int, t: int = 3, u: int = 2, batch: int = 2) -> Builder:
    sizes = iter([t, u, batch, seed])
    return Builder(lambda strategy: next(sizes))


def _reduces(node) -> bool:
    return any(n.op == "reduce_to" for n in reachable([node]))


def test_static_matrix_times_sequence_sums_over_steps_and_batch():
    b = _fixed_builder(1)
    W = b.leaf((3, 2), STATIC)
    x = b.leaf((2,), Context(frozenset({"t"}), True))
    loss = scalar_loss(b, apply("tanh", apply("matmul", W, x)))
    grads = gradients(loss, b.leaves)
    assert _reduces(grads[0]), "the gradient of a static W must be summed with reduce_to"
    assert grads[0].context == STATIC and grads[0].shape == (3, 2)
    check_gradients(b, loss, grads)


def test_sequence_vector_times_static_scalar_sums_elements_too():
    b = _fixed_builder(2, t=4, u=1, batch=3)
    v = b.leaf((3,), Context(frozenset({"t", "u"}), True))
    s = b.leaf((), STATIC)
    loss = scalar_loss(b, apply("mul", v, s))
    grads = gradients(loss, b.leaves)
    assert _reduces(grads[1]) and grads[1].shape == () and grads[1].context == STATIC
    check_gradients(b, loss, grads)


def test_batched_scalar_times_static_vector():
    b = _fixed_builder(3, t=2, u=3, batch=3)
    s = b.leaf((), Context(frozenset(), True))
    v = b.leaf((4,), STATIC)
    loss = scalar_loss(b, apply("div", v, apply("exp", s)))
    check_gradients(b, loss, gradients(loss, b.leaves))


def test_batch_mean_of_a_value_the_same_for_every_example():
    """batch_mean of a value that does not vary over the batch is that value, so its
    derivative is 1 whatever the batch size (e.g. a loss that is a pure weight penalty)."""
    b = _fixed_builder(4, t=2, u=1, batch=3)
    w = b.leaf((), STATIC)
    loss = apply("batch_mean", w)
    (value,) = b.evaluate([loss])
    np.testing.assert_allclose(value.reshape(()), b.values[0].reshape(()), rtol=1e-12)
    check_gradients(b, loss, gradients(loss, b.leaves))


@pytest.mark.parametrize("op", ["add", "sub"])
def test_batch_mean_of_a_batched_value_plus_a_static_one(op):
    """mean_b(x_b + s) = mean_b(x_b) + s, so d/ds is 1: the adjoint that batch_mean passes down
    is the same for every example, and a static operand must still be summed over the batch."""
    b = _fixed_builder(5, t=1, u=1, batch=4)
    x = b.leaf((), Context(frozenset(), True))
    s = b.leaf((), STATIC)
    loss = apply("batch_mean", apply(op, x, s))
    grads = gradients(loss, b.leaves)
    ds = float(np.asarray(b.evaluate([grads[1]])[0]).reshape(()))
    assert ds == pytest.approx(1.0 if op == "add" else -1.0, rel=1e-12)
    check_gradients(b, loss, grads)
