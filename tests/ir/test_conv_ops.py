"""Convolution, pooling and batch-norm ops (graphrnn/ir/ops/conv.py).

- every op's VJP against central finite differences (tests/ir/gradcheck.py), with operands in
  random contexts (static, batched, over the index axes t and u), so the NumPy evaluations
  see arbitrary leading dims and `reduce_to` sums weight gradients over steps and the batch;
- conv2d and pooling values against direct loop nests written here;
- against torch.nn.functional (conv2d, max_pool2d, avg_pool2d, batch_norm) when torch imports;
- shape errors, and the closure of the gradient ops under differentiation.

Hypothesis draws kernels 1-3, strides 1-2, paddings 0-2 and dilations 1-2.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphrnn.backends import reference
from graphrnn.compiled import Compiled
from graphrnn.errors import ShapeError
from graphrnn.ir.graph import Graph
from graphrnn.ir.node import STATIC, Context
from graphrnn.ir.ops import conv
from graphrnn.ir.ops.leaf import input_node, param_node
from graphrnn.ir.registry import OPS, EvalEnv, apply

from .gradcheck import Builder, check_gradients, gradients, make_leaf, scalar_loss

kernels = st.integers(1, 3)
strides = st.integers(1, 2)
paddings = st.integers(0, 2)
dilations = st.integers(1, 2)
channels = st.integers(1, 3)


@st.composite
def windows(draw, kind="conv"):
    """Geometry of one conv (kind="conv") or pooling ("max", "avg") and a fitting image size."""
    kernel = (draw(kernels), draw(kernels))
    stride = (draw(strides), draw(strides))
    if kind == "max":
        padding = tuple(draw(st.integers(0, min(2, k // 2))) for k in kernel)
    else:
        padding = (draw(paddings), draw(paddings))
    dilation = (draw(dilations), draw(dilations)) if kind == "conv" else (1, 1)
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    hw = tuple(draw(st.integers(max(1, s - 2 * p), s + 3)) for s, p in zip(spans, padding))
    out = tuple((n + 2 * p - s) // t + 1 for n, p, s, t in zip(hw, padding, spans, stride))
    return {
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "hw": hw,
        "out": out,
    }


def conv_attrs(geo):
    return {k: geo[k] for k in ("stride", "padding", "dilation")}


def pool_attrs(geo):
    return {k: geo[k] for k in ("kernel", "stride", "padding")}


def distinct(b: Builder) -> None:
    """Give the last leaf values spaced 0.01 apart, so no window has a (near) tie."""
    value = b.values[-1]
    b.values[-1] = (b.rng.permutation(value.size).reshape(value.shape) - value.size / 2) * 0.01


# ---- loop-nest references on [N, C, H, W] ----------------------------------------------------
def loop_conv2d(x, w, stride, padding, dilation):
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, f, ho, wo))
    for oh in range(ho):
        for ow in range(wo):
            for i in range(kh):
                for j in range(kw):
                    ih, iw = oh * sh - ph + i * dh, ow * sw - pw + j * dw
                    if 0 <= ih < h and 0 <= iw < wd:
                        for b in range(n):
                            for ff in range(f):
                                for cc in range(c):
                                    out[b, ff, oh, ow] += x[b, cc, ih, iw] * w[ff, cc, i, j]
    return out


def loop_pool(x, kind, kernel, stride, padding):
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out = np.zeros((n, c, ho, wo))
    for b in range(n):
        for cc in range(c):
            for oh in range(ho):
                for ow in range(wo):
                    cells = [
                        x[b, cc, oh * sh - ph + i, ow * sw - pw + j]
                        for i in range(kh)
                        for j in range(kw)
                        if 0 <= oh * sh - ph + i < h and 0 <= ow * sw - pw + j < wd
                    ]
                    out[b, cc, oh, ow] = max(cells) if kind == "max" else sum(cells) / (kh * kw)
    return out


def evaluate(node, leaves, env):
    return reference.evaluate([node], env, {n.id: v for n, v in leaves})[node.id]


# ---- values ------------------------------------------------------------------------------
@given(geo=windows(), c=channels, f=channels, seed=st.integers(0, 2**31))
def test_conv2d_equals_loop_nest_over_any_leading_dims(geo, c, f, seed):
    """x over (t, batch), w static: the aligned arrays have leading dims (T, B) and (1, 1)."""
    rng = np.random.default_rng(seed)
    t, batch = 2, 3
    env = EvalEnv(("t",), {"t": t}, batch, np.dtype("float64"))
    x = make_leaf("x", (c,) + geo["hw"], Context(frozenset({"t"}), True))
    w = make_leaf("w", (f, c) + geo["kernel"], STATIC)
    xv = rng.normal(size=(t, batch, c) + geo["hw"])
    wv = rng.normal(size=(1, 1, f, c) + geo["kernel"])
    y = apply("conv2d", x, w, **conv_attrs(geo))
    assert y.shape == (f,) + geo["out"]
    got = evaluate(y, [(x, xv), (w, wv)], env)
    expected = loop_conv2d(xv.reshape((-1,) + xv.shape[2:]), wv[0, 0], **conv_attrs(geo))
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["max", "avg"])
@given(data=st.data())
def test_pooling_equals_loop_nest(kind, data):
    geo = data.draw(windows(kind))
    c, seed = data.draw(channels), data.draw(st.integers(0, 2**31))
    stride = data.draw(st.sampled_from([geo["stride"], None]))
    stride = stride or geo["kernel"]
    rng = np.random.default_rng(seed)
    env = EvalEnv((), {}, 2, np.dtype("float64"))
    x = make_leaf("x", (c,) + geo["hw"], Context(frozenset(), True))
    padded = tuple(n + 2 * p for n, p in zip(geo["hw"], geo["padding"]))
    if any(k > n for k, n in zip(geo["kernel"], padded)):
        return  # no window fits; the shape error is tested below
    xv = rng.normal(size=(2, c) + geo["hw"])
    y = apply(f"{kind}pool2d", x, kernel=geo["kernel"], stride=stride, padding=geo["padding"])
    expected = loop_pool(xv, kind, geo["kernel"], stride, geo["padding"])
    np.testing.assert_allclose(evaluate(y, [(x, xv)], env), expected, rtol=1e-12, atol=1e-12)


def test_defaults_and_int_attributes():
    x = make_leaf("x", (2, 5, 6), Context(frozenset(), True))
    w = make_leaf("w", (3, 2, 3, 3), STATIC)
    assert apply("conv2d", x, w).shape == (3, 3, 4)
    assert apply("conv2d", x, w, stride=2, padding=1, dilation=(1, 2)).shape == (3, 3, 2)
    assert apply("maxpool2d", x, kernel=2).shape == (2, 2, 3)  # stride defaults to the kernel
    assert apply("avgpool2d", x, kernel=(2, 3), stride=1).shape == (2, 4, 4)
    assert apply("global_avgpool", x).shape == (2,)
    mean = apply("batch_mean_per_channel", x)
    assert mean.shape == (2,) and mean.context == STATIC


@given(geo=windows(), c=channels, f=channels, seed=st.integers(0, 2**31))
def test_gradient_ops_are_adjoints_of_conv2d(geo, c, f, seed):
    """<conv(x, w), g> = <x, input_grad(g, w)> = <w, sum_b weight_grad(x, g)>."""
    rng = np.random.default_rng(seed)
    env = EvalEnv((), {}, 2, np.dtype("float64"))
    x = make_leaf("x", (c,) + geo["hw"], Context(frozenset(), True))
    w = make_leaf("w", (f, c) + geo["kernel"], STATIC)
    g = make_leaf("g", (f,) + geo["out"], Context(frozenset(), True))
    xv, gv = rng.normal(size=(2,) + x.shape), rng.normal(size=(2,) + g.shape)
    wv = rng.normal(size=(1,) + w.shape)
    leaves = [(x, xv), (w, wv), (g, gv)]
    attrs = conv_attrs(geo)
    y = evaluate(apply("conv2d", x, w, **attrs), leaves, env)
    dx = evaluate(apply("conv2d_input_grad", g, w, input_hw=geo["hw"], **attrs), leaves, env)
    dw = evaluate(apply("conv2d_weight_grad", x, g, kernel=geo["kernel"], **attrs), leaves, env)
    lhs = np.sum(y * gv)
    np.testing.assert_allclose(np.sum(xv * dx), lhs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.sum(wv * dw.sum(axis=0)), lhs, rtol=1e-10, atol=1e-10)


# ---- VJPs against finite differences ----------------------------------------------------
def conv2d_case(draw, b):
    geo, c, f = draw(windows()), draw(channels), draw(channels)
    x = b.leaf((c,) + geo["hw"])
    w = b.leaf((f, c) + geo["kernel"])
    return apply("conv2d", x, w, **conv_attrs(geo))


def conv2d_input_grad_case(draw, b):
    geo, c, f = draw(windows()), draw(channels), draw(channels)
    g = b.leaf((f,) + geo["out"])
    w = b.leaf((f, c) + geo["kernel"])
    return apply("conv2d_input_grad", g, w, input_hw=geo["hw"], **conv_attrs(geo))


def conv2d_weight_grad_case(draw, b):
    geo, c, f = draw(windows()), draw(channels), draw(channels)
    x = b.leaf((c,) + geo["hw"])
    g = b.leaf((f,) + geo["out"])
    return apply("conv2d_weight_grad", x, g, kernel=geo["kernel"], **conv_attrs(geo))


def maxpool2d_case(draw, b):
    geo, c = draw(windows("max")), draw(channels)
    x = b.leaf((c,) + geo["hw"])
    distinct(b)
    return apply("maxpool2d", x, **pool_attrs(geo))


def maxpool2d_grad_case(draw, b):
    geo, c = draw(windows("max")), draw(channels)
    x = b.leaf((c,) + geo["hw"])
    distinct(b)
    g = b.leaf((c,) + geo["out"])
    return apply("maxpool2d_grad", x, g, **pool_attrs(geo))


def maxpool2d_gather_case(draw, b):
    geo, c = draw(windows("max")), draw(channels)
    x = b.leaf((c,) + geo["hw"])
    distinct(b)
    u = b.leaf((c,) + geo["hw"])
    return apply("maxpool2d_gather", x, u, **pool_attrs(geo))


def avgpool2d_case(draw, b):
    geo, c = draw(windows("avg")), draw(channels)
    return apply("avgpool2d", b.leaf((c,) + geo["hw"]), **pool_attrs(geo))


def avgpool2d_grad_case(draw, b):
    geo, c = draw(windows("avg")), draw(channels)
    g = b.leaf((c,) + geo["out"])
    return apply("avgpool2d_grad", g, input_hw=geo["hw"], **pool_attrs(geo))


def image_case(op):
    def case(draw, b):
        shape = (draw(channels), draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        return apply(op, b.leaf(shape))

    return case


def channel_expand_case(draw, b):
    v = b.leaf((draw(channels),))
    return apply("channel_expand", v, height=draw(st.integers(1, 4)), width=draw(st.integers(1, 4)))


CASES = {
    "conv2d": conv2d_case,
    "conv2d_input_grad": conv2d_input_grad_case,
    "conv2d_weight_grad": conv2d_weight_grad_case,
    "maxpool2d": maxpool2d_case,
    "maxpool2d_grad": maxpool2d_grad_case,
    "maxpool2d_gather": maxpool2d_gather_case,
    "avgpool2d": avgpool2d_case,
    "avgpool2d_grad": avgpool2d_grad_case,
    "global_avgpool": image_case("global_avgpool"),
    "channel_sum": image_case("channel_sum"),
    "channel_expand": channel_expand_case,
    "batch_mean_per_channel": image_case("batch_mean_per_channel"),
}


def test_every_conv_op_has_a_vjp_and_a_case():
    assert sorted(CASES) == sorted(conv.OP_NAMES)
    for name in conv.OP_NAMES:
        assert name in OPS and OPS[name].vjp is not None, f"{name} has no VJP"


@pytest.mark.parametrize("op", sorted(CASES))
@given(data=st.data())
def test_vjp_matches_finite_differences(op, data):
    b = Builder(data.draw)
    out = CASES[op](data.draw, b)
    assert out.op == op
    loss = scalar_loss(b, out)
    check_gradients(b, loss, gradients(loss, b.leaves))


def test_inputs_without_gradient_are_declared():
    """A VJP returns None exactly for the inputs ZERO_GRADIENT_INPUTS names, with a reason."""
    x = make_leaf("x", (2, 4, 4), Context(frozenset(), True))
    g = make_leaf("g", (2, 2, 2), Context(frozenset(), True))
    pool = {"kernel": 2, "stride": 2, "padding": 0}
    nodes = [apply("maxpool2d_grad", x, g, **pool), apply("maxpool2d_gather", x, x, **pool)]
    nodes += [
        apply("conv2d", x, make_leaf("w", (3, 2, 2, 2), STATIC)),
        apply("maxpool2d", x, **pool),
    ]
    for node in nodes:
        contributions = OPS[node.op].vjp(node, make_leaf("a", node.shape, node.context))
        none = {i for i, c in enumerate(contributions) if c is None}
        declared = conv.ZERO_GRADIENT_INPUTS.get(node.op, {})
        assert none == set(declared), node.op
        assert all(len(reason) > 20 for reason in declared.values())
    assert set(conv.ZERO_GRADIENT_INPUTS) == {"maxpool2d_grad", "maxpool2d_gather"}


# ---- batch normalisation ----------------------------------------------------------------
@given(data=st.data())
def test_batchnorm_gradient_matches_finite_differences(data):
    """The composition's gradient, through the batch statistics, from autodiff alone."""
    b = Builder(data.draw)
    c = data.draw(channels)
    h, w = data.draw(st.integers(1, 3)), data.draw(st.integers(2, 3))
    axes = data.draw(st.sets(st.sampled_from(("t", "u"))))
    x = b.leaf((c, h, w), Context(frozenset(axes), True))
    gamma = b.leaf((c,), STATIC, kind="pos")
    beta = b.leaf((c,), STATIC)
    bn = conv.batchnorm2d(x, gamma, beta, eps=0.1)
    assert bn.mean.context == Context(frozenset(axes), False)
    out = apply("tanh", bn.y)
    loss = scalar_loss(b, out)
    check_gradients(b, loss, gradients(loss, b.leaves))


@given(data=st.data())
def test_eval_batchnorm_gradient_matches_finite_differences(data):
    """Evaluation mode: the running statistics are fixed static leaves (not differentiated,
    as the eval graph's running statistics are not); x, gamma and beta get exact gradients."""
    b = Builder(data.draw)
    c = data.draw(channels)
    h, w = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    axes = data.draw(st.sets(st.sampled_from(("t", "u"))))
    x = b.leaf((c, h, w), Context(frozenset(axes), True))
    gamma = b.leaf((c,), STATIC, kind="pos")
    beta = b.leaf((c,), STATIC)
    rm, rv = make_leaf("rm", (c,), STATIC), make_leaf("rv", (c,), STATIC)
    shape = b.env.aligned_shape(STATIC, (c,))
    b.fixed += [rm, rv]
    b.fixed_values += [b.rng.normal(size=shape), b.rng.uniform(0.3, 2.0, shape)]
    bn = conv.batchnorm2d(x, gamma, beta, eps=0.1, running_mean=rm, running_var=rv)
    assert (bn.mean, bn.var) == (rm, rv)
    loss = scalar_loss(b, apply("tanh", bn.y))
    check_gradients(b, loss, gradients(loss, b.leaves))


def test_batchnorm_normalises_over_batch_and_pixels():
    rng = np.random.default_rng(0)
    env = EvalEnv((), {}, 5, np.dtype("float64"))
    x = make_leaf("x", (3, 4, 2), Context(frozenset(), True))
    one, zero = make_leaf("g", (3,), STATIC), make_leaf("b", (3,), STATIC)
    bn = conv.batchnorm2d(x, one, zero, eps=0.0)
    xv = rng.normal(2.0, 3.0, (5, 3, 4, 2))
    leaves = {x.id: xv, one.id: np.ones((1, 3)), zero.id: np.zeros((1, 3))}
    values = reference.evaluate([bn.y, bn.mean, bn.var], env, leaves)
    y = values[bn.y.id]
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1.0, rtol=1e-12)
    np.testing.assert_allclose(values[bn.mean.id][0], xv.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(values[bn.var.id][0], xv.var(axis=(0, 2, 3)), rtol=1e-12)


# ---- second order: gradients of gradients -------------------------------------------------
@settings(max_examples=8)
@given(data=st.data())
def test_gradient_of_a_gradient_matches_finite_differences(data):
    """Differentiate (random weights * dloss/dw) again: every op in the first gradient is
    differentiated, so the gradient ops' own VJPs are exercised inside autodiff."""
    b = Builder(data.draw)
    geo = data.draw(windows())
    c, f = data.draw(channels), data.draw(channels)
    x = b.leaf((c,) + geo["hw"], Context(frozenset(), True))
    w = b.leaf((f, c) + geo["kernel"], STATIC)
    h = apply("tanh", apply("conv2d", x, w, **conv_attrs(geo)))
    h = apply("avgpool2d", h, kernel=1, stride=1, padding=0)
    loss = scalar_loss(b, apply("global_avgpool", apply("mul", h, h)))
    dx, dw = gradients(loss, [x, w])
    second = apply("add", apply("sum", apply("mul", dw, dw)), scalar_loss(b, dx))
    check_gradients(b, second, gradients(second, b.leaves))


# ---- shape errors ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "build, message",
    [
        (lambda x, w: apply("conv2d", x, make_leaf("k", (4, 3, 3, 3), STATIC)), "2 channels"),
        (lambda x, w: apply("conv2d", x, w, padding=-1), "padding must be at least 0"),
        (lambda x, w: apply("conv2d", x, w, stride=(1, 0)), "stride must be at least 1"),
        (lambda x, w: apply("conv2d", x, w, dilation=3), "the padded image is only 5x6"),
        (lambda x, w: apply("conv2d", w, w), "must be an image [C, H, W]"),
        (lambda x, w: apply("maxpool2d", x, kernel=2, padding=2), "at most half the kernel"),
        (lambda x, w: apply("avgpool2d", x, kernel=7), "the padded image is only 5x6"),
        (lambda x, w: apply("channel_expand", x, height=2, width=2), "takes a vector [C]"),
        (lambda x, w: apply("conv2d", x, w, strides=2), "not ['strides']"),
        (lambda x, w: apply("maxpool2d", x), "pooling needs a kernel size"),
        (lambda x, w: apply("avgpool2d", x, kernel=2, dilation=2), "not ['dilation']"),
        (
            lambda x, w: apply("conv2d_input_grad", x, w, input_hw=(5, 6)),
            "the adjoint has 2 channels but the kernel has 3 filters",
        ),
    ],
)
def test_shape_errors_say_what_is_wrong(build, message):
    x = make_leaf("x", (2, 5, 6), Context(frozenset(), True))
    w = make_leaf("w", (3, 2, 3, 3), STATIC)
    with pytest.raises(ShapeError) as error:
        build(x, w)
    assert message in str(error.value)


# ---- PyTorch -------------------------------------------------------------------------------
def compiled(x, params, y, **outputs):
    """A reference-backend model whose loss is sum(y * r) per example, r a target."""
    r = input_node("r", y.shape, role="target")
    graph = Graph(
        "conv",
        (),
        inputs={"x": x},
        targets={"r": r},
        params={p.name: p for p in params},
        outputs={"y": y, **outputs},
        loss=apply("sum", apply("mul", y, r)),
    )
    return Compiled(graph, "float64", reference.run, "reference")


def torch_grads(torch, y_fn, arrays: dict, r):
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items()}
    y = y_fn(**tensors)
    (y * torch.tensor(r)).sum().div(r.shape[0]).backward()
    return y.detach().numpy(), {k: t.grad.numpy() for k, t in tensors.items()}


def assert_matches_torch(model, params, xv, torch_y, torch_g, r):
    ours = model.forward(params, {"x": xv})["y"]
    np.testing.assert_allclose(ours, torch_y, rtol=1e-10, atol=1e-12)
    _, grads = model.loss_and_grad(params, {"x": xv}, {"r": r})
    for name, expected in torch_g.items():
        np.testing.assert_allclose(grads[name], expected, rtol=1e-9, atol=1e-12, err_msg=name)


@settings(max_examples=10)
@given(geo=windows(), c=channels, f=channels, seed=st.integers(0, 2**31))
def test_conv2d_matches_torch(geo, c, f, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    attrs = conv_attrs(geo)
    x = input_node("x", (c,) + geo["hw"])
    w = param_node("w", (f, c) + geo["kernel"], ("zeros", ()))
    model = compiled(x, [w], conv.conv2d(x, w, **attrs))
    xv, wv = rng.normal(size=(2, c) + geo["hw"]), rng.normal(size=w.shape)
    r = rng.normal(size=(2, f) + geo["out"])
    y, g = torch_grads(
        torch, lambda x, w: torch.nn.functional.conv2d(x, w, **attrs), {"x": xv, "w": wv}, r
    )
    assert_matches_torch(model, {"w": wv}, xv, y, g, r)


@pytest.mark.parametrize("kind", ["max", "avg"])
@settings(max_examples=10)
@given(data=st.data())
def test_pooling_matches_torch(kind, data):
    """max_pool2d, and avg_pool2d with its default count_include_pad=True."""
    torch = pytest.importorskip("torch")
    geo = data.draw(windows(kind))
    c, seed = data.draw(channels), data.draw(st.integers(0, 2**31))
    if any(2 * p > k for p, k in zip(geo["padding"], geo["kernel"])):
        return  # PyTorch rejects padding above half the kernel for both poolings
    rng = np.random.default_rng(seed)
    x = input_node("x", (c,) + geo["hw"])
    model = compiled(x, [], apply(f"{kind}pool2d", x, **pool_attrs(geo)))
    xv = rng.permutation(2 * c * geo["hw"][0] * geo["hw"][1]).reshape((2, c) + geo["hw"]) * 0.1
    r = rng.normal(size=(2, c) + geo["out"])
    pool = getattr(torch.nn.functional, f"{kind}_pool2d")
    y, g = torch_grads(
        torch, lambda x: pool(x, geo["kernel"], geo["stride"], geo["padding"]), {"x": xv}, r
    )
    assert_matches_torch(model, {}, xv, y, g, r)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_matches_torch(training):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    b, c, h, w = 4, 3, 5, 2
    x = input_node("x", (c, h, w))
    gamma = param_node("gamma", (c,), ("ones", ()))
    beta = param_node("beta", (c,), ("zeros", ()))
    params = {"gamma": rng.uniform(0.5, 2.0, c), "beta": rng.normal(size=c)}
    running = {"running_mean": rng.normal(size=c), "running_var": rng.uniform(0.5, 2.0, c)}
    stats = {}
    if training:
        bn = conv.batchnorm2d(x, gamma, beta, eps=1e-3)
        stats = {"mean": bn.mean, "var": bn.var}
        leaves = [gamma, beta]
    else:
        rm = param_node("running_mean", (c,), ("zeros", ()))
        rv = param_node("running_var", (c,), ("ones", ()))
        bn = conv.batchnorm2d(x, gamma, beta, eps=1e-3, running_mean=rm, running_var=rv)
        leaves = [gamma, beta, rm, rv]
        params.update(running)
    model = compiled(x, leaves, bn.y, **stats)
    xv, r = rng.normal(1.0, 2.0, (b, c, h, w)), rng.normal(size=(b, c, h, w))
    torch_running = {k: torch.tensor(v) for k, v in running.items()}

    def norm(x, gamma, beta):
        return torch.nn.functional.batch_norm(
            x, torch_running["running_mean"], torch_running["running_var"], gamma, beta,
            training=training, momentum=0.1, eps=1e-3,
        )  # fmt: skip

    arrays = {"x": xv, "gamma": params["gamma"], "beta": params["beta"]}
    y, g = torch_grads(torch, norm, arrays, r)
    assert_matches_torch(model, params, xv, y, g, r)
    if training:
        out = model.forward(params, {"x": xv})
        mean, var = conv.update_running_stats(
            running["running_mean"], running["running_var"], out["mean"], out["var"], b * h * w
        )
        np.testing.assert_allclose(mean, torch_running["running_mean"].numpy(), rtol=1e-12)
        np.testing.assert_allclose(var, torch_running["running_var"].numpy(), rtol=1e-12)
