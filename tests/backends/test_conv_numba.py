"""The Numba backend against the reference interpreter on small convolutional nets built with
the IR builder: forward values, the loss and every gradient, float64 to 1e-10 relative.

Kernels are cached under GRAPHRNN_CACHE_DIR; when it is not set these tests use a shared
directory under the system temp dir, so a second run compiles nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

import graphrnn.ir.ops  # noqa: F401  (registers the primitives)
from graphrnn.backends import numba_cpu, reference
from graphrnn.compiled import Compiled
from graphrnn.ir.graph import Graph, reachable, resolve_aliases
from graphrnn.ir.node import Context
from graphrnn.ir.ops import conv
from graphrnn.ir.ops.leaf import bind, const, input_node, param_node, placeholder
from graphrnn.ir.registry import apply

RTOL = 1e-10


@pytest.fixture(scope="module", autouse=True)
def kernel_cache():
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("GRAPHRNN_CACHE_DIR"):
            mp.setenv("GRAPHRNN_CACHE_DIR", str(Path(tempfile.gettempdir()) / "graphrnn-cache"))
        yield


def assert_close(actual, expected, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(np.abs(expected).max(initial=0.0), 1e-30)
    error = np.abs(actual - expected).max(initial=0.0) / scale
    assert error < RTOL, f"{what}: relative error {error:.3e}"


def param(name, shape):
    return param_node(name, shape, ("normal", (0.5,)))


def make_graph(x, y, logits, params, axes=(), **outputs) -> Graph:
    graph = Graph(
        "convnet",
        axes,
        inputs={"x": x},
        targets={"y": y},
        params={p.name: p for p in params},
        outputs={"logits": logits, **outputs},
        loss=apply("softmax_cross_entropy", logits, y),
    )
    return resolve_aliases(graph)


def random_values(graph: Graph, batch: int, steps: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {n: rng.normal(0.0, 0.5, p.shape) for n, p in graph.params.items()}
    x = graph.inputs["x"]
    lead = (steps,) if x.axes else ()
    inputs = {"x": rng.normal(0.0, 1.0, lead + (batch,) + x.shape)}
    classes = graph.targets["y"].shape[0]
    targets = {"y": np.eye(classes)[rng.integers(0, classes, batch)]}
    return params, inputs, targets


def compare(graph: Graph, batch: int = 3, steps: int = 1, forward: bool = True, grad: bool = True):
    """Forward outputs (one kernel) and loss + gradients (a second kernel) of both backends."""
    params, inputs, targets = random_values(graph, batch, steps)
    slow = Compiled(graph, "float64", reference.run, "reference")
    fast = numba_cpu.compile(graph, "float64")
    if forward:
        expected, actual = slow.forward(params, inputs), fast.forward(params, inputs)
        assert set(actual) == set(expected)
        for name in expected:
            assert_close(actual[name], expected[name], f"forward {name}")
    if grad:
        loss0, grads0 = slow.loss_and_grad(params, inputs, targets)
        loss1, grads1 = fast.loss_and_grad(params, inputs, targets)
        assert_close(loss1, loss0, "loss")
        assert set(grads1) == set(grads0)
        for name in grads0:
            assert_close(grads1[name], grads0[name], f"gradient of {name}")
    return fast


def ops_in(graph: Graph) -> set[str]:
    return {n.op for n in reachable(graph.roots())}


def test_tiny_conv_net_matches_reference():
    """conv -> relu -> maxpool -> global_avgpool -> softmax_cross_entropy."""
    x = input_node("x", (2, 7, 7))
    y = input_node("y", (3,), role="target")
    w = param("w", (3, 2, 3, 3))
    h = apply("relu", conv.conv2d(x, w, padding=1))
    logits = apply("global_avgpool", conv.maxpool2d(h, 2))
    fast = compare(make_graph(x, y, logits, [w]))
    adjoint_ops = ops_in(fast.adjoint)
    assert {"conv2d_weight_grad", "conv2d_input_grad", "maxpool2d_grad"} <= adjoint_ops


def test_conv_net_with_every_layer_matches_reference():
    """Stride, padding, dilation, batch norm (its statistics span the batch), padded max
    pooling, a second convolution with a bias. Loss and gradients; the loss is the forward."""
    x = input_node("x", (2, 9, 8))
    y = input_node("y", (3,), role="target")
    w1, gamma, beta = param("w1", (4, 2, 3, 2)), param("gamma", (4,)), param("beta", (4,))
    w2, b2 = param("w2", (3, 4, 2, 3)), param("b2", (3,))
    h = conv.conv2d(x, w1, stride=(1, 2), padding=(2, 1), dilation=2)
    bn = conv.batchnorm2d(h, gamma, beta)
    h = conv.maxpool2d(apply("relu", bn.y), 3, stride=2, padding=1)
    h = conv.add_channel_bias(conv.conv2d(h, w2, stride=(2, 1), padding=1), b2)
    logits = apply("global_avgpool", apply("tanh", h))
    graph = make_graph(x, y, logits, [w1, gamma, beta, w2, b2])
    fast = compare(graph, batch=4, forward=False)
    adjoint_ops = ops_in(fast.adjoint)
    assert {"channel_sum", "channel_expand", "batch_mean_per_channel"} <= adjoint_ops


def test_every_conv_op_lowers_like_the_reference():
    """Each op of ops/conv.py as a forward output, including those only gradients use,
    with operands that vary over the batch or not (a static kernel, a batched one)."""
    x = input_node("x", (2, 6, 5))
    y = input_node("y", (2,), role="target")
    w = param("w", (3, 2, 2, 2))
    geometry = {"stride": 2, "padding": 1, "dilation": 1}
    pooling = {"kernel": 2, "stride": 1, "padding": 0}
    a = conv.conv2d(x, w, **geometry)  # [3, 4, 3]
    back = apply("conv2d_input_grad", a, w, input_hw=(6, 5), **geometry)  # [2, 6, 5]
    kernel = apply("conv2d_weight_grad", x, a, kernel=(2, 2), **geometry)  # batched [3, 2, 2, 2]
    dilated = conv.conv2d(back, kernel, stride=1, padding=2, dilation=2)
    pooled = conv.maxpool2d(back, 2, stride=1)
    outputs = {
        "conv2d": a,
        "conv2d_input_grad": back,
        "conv2d_weight_grad": kernel,
        "conv2d_batched_kernel": dilated,
        "maxpool2d": conv.maxpool2d(x, 3, stride=2, padding=1),
        "maxpool2d_gather": apply("maxpool2d_gather", back, apply("tanh", back), **pooling),
        "maxpool2d_grad": apply("maxpool2d_grad", back, pooled, **pooling),
        "avgpool2d": conv.avgpool2d(x, (2, 3), stride=(2, 1), padding=1),
        "avgpool2d_grad": apply(
            "avgpool2d_grad", a, input_hw=(6, 5), kernel=2, stride=2, padding=1
        ),
        "global_avgpool": apply("global_avgpool", x),
        "channel_sum": apply("channel_sum", x),
        "channel_expand": apply("channel_expand", apply("channel_sum", x), height=2, width=3),
        "batch_mean_per_channel": apply("batch_mean_per_channel", x),
    }
    logits = apply("slice", apply("global_avgpool", a), start=0, stop=2)
    compare(make_graph(x, y, logits, [w], **outputs), batch=3, grad=False)


def test_convolutional_recurrence_matches_reference():
    """h(t) = tanh(conv(x(t), wx) + conv(maxpool(h(t-1)), wh)): conv and pooling inside a
    loop over t (the pooling gradient scatters into the current step's slice only), and
    weight gradients summed over the steps and the batch."""
    shape = (3, 5, 4)
    x = input_node("x", (2, 5, 4), axes=("t",))
    y = input_node("y", (3,), role="target")
    wx, wh = param("wx", (3, 2, 3, 3)), param("wh", (3, 3, 3, 3))
    h = placeholder(shape, Context(frozenset({"t"}), True), name="h")
    previous = apply("delay", h, const(0.0, shape), axis="t", offset=-1)
    drive = conv.conv2d(x, wx, padding=1)
    pooled = conv.maxpool2d(previous, 3, stride=1, padding=1)
    value = apply("tanh", apply("add", drive, conv.conv2d(pooled, wh, padding=1)))
    bind(h, value)
    last = apply("at", value, axis="t", index=-1)
    logits = apply("global_avgpool", conv.maxpool2d(last, 2, stride=1, padding=1))
    fast = compare(make_graph(x, y, logits, [wx, wh], axes=("t",)), 2, 4, forward=False)
    assert "for t_t in range(S_t - 1, -1, -1):" in fast.executor.source(fast.adjoint)


# (kernel, stride, padding, dilation) per axis; chosen so that some taps have an empty or
# clipped range of valid outputs: padding beyond the kernel's reach, strides that skip input
# rows, a 1x1 kernel, dilation 3 on a short axis.
AWKWARD = [
    ((3, 2), (3, 1), (4, 0), (1, 2)),
    ((1, 1), (2, 3), (0, 1), (1, 1)),
    ((2, 3), (1, 2), (1, 3), (3, 1)),
]


def test_conv_templates_clip_every_tap_like_the_reference():
    """conv2d, its input gradient and its weight gradient at awkward geometries, all in one
    graph (one compile): the tap-outer templates compute each tap's valid output range."""
    x = input_node("x", (2, 7, 6))
    y = input_node("y", (2,), role="target")
    outputs, ws = {}, []
    for k, (kernel, stride, padding, dilation) in enumerate(AWKWARD):
        geometry = {"stride": stride, "padding": padding, "dilation": dilation}
        w = param(f"w{k}", (3, 2) + kernel)
        ws.append(w)
        out = conv.conv2d(x, w, **geometry)
        outputs[f"conv{k}"] = out
        outputs[f"back{k}"] = apply("conv2d_input_grad", out, w, input_hw=(7, 6), **geometry)
        outputs[f"kernel{k}"] = apply("conv2d_weight_grad", x, out, kernel=kernel, **geometry)
    pooled = [apply("global_avgpool", outputs[f"conv{k}"]) for k in range(len(AWKWARD))]
    logits = apply("slice", apply("add", apply("add", *pooled[:2]), pooled[2]), start=0, stop=2)
    compare(make_graph(x, y, logits, ws, **outputs), batch=2)
