"""Symbolic BPTT on folded graphs: the shape of the adjoint graph, and what it computes.

The adjoint of a recurrent model is again a folded graph: its recurrence is a delay with the
offset negated, scheduled as a loop that runs backwards, and its size does not depend on the
sequence length. Gradients in float32 agree with float64 to float32 accuracy, and a loss
that mixes per-example terms with a static penalty is differentiated correctly for any batch.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphrnn as gr
from graphrnn.autodiff import backpropagate, grad
from graphrnn.ir.node import Context
from graphrnn.ir.ops.leaf import const, input_node, param_node
from graphrnn.ir.registry import apply
from graphrnn.schedule import Loop, schedule

SIZES = {"I": 3, "H": 4, "O": 3}
EPS = 1e-6


def load(name: str, seed: int = 0) -> gr.Model:
    return gr.load(f"models/{name}.grnn", seed=seed, **SIZES)


def data(tau: int, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(tau, batch, SIZES["I"]))
    y = np.eye(SIZES["O"])[rng.integers(0, SIZES["O"], (tau, batch))]
    return {"x": x}, {"y": y}


def random_params(model: gr.Model, seed: int = 1):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0.0, 0.5, v.shape) for k, v in model.params.items()}


# ---- the adjoint graph ---------------------------------------------------------------------------
def test_elman_adjoint_recurrence_is_a_delay_with_offset_plus_one():
    adjoint = grad(load("elman").graph)
    delays = [n for n in adjoint.nodes() if n.op == "delay"]
    assert {d.attrs["offset"] for d in delays} == {-1, 1}
    backward = [d for d in delays if d.attrs["offset"] == 1]
    assert all(d.attrs["axis"] == "t" for d in backward)
    loops = [i for i in schedule(adjoint.roots()) if isinstance(i, Loop)]
    reverse = [loop for loop in loops if not loop.forward]
    assert len(reverse) == 1 and reverse[0].axis == "t"
    assert {d.id for d in reverse[0].delays} == {d.id for d in backward}
    assert all(loop.forward for loop in loops if loop is not reverse[0])


@pytest.mark.parametrize("name", ["elman", "jordan"])
def test_adjoint_size_does_not_depend_on_the_sequence_length(name):
    model = load(name)
    folded = model.graph
    adjoint = grad(folded)
    size = len(adjoint.nodes())
    assert not any(n.op in ("at", "place") for n in adjoint.nodes())
    assert not any(n.name and "@" in n.name for n in adjoint.nodes())
    assert size <= 8 * len(folded.nodes())
    assert len(grad(folded).nodes()) == size
    # the unrolled adjoint grows with tau; the folded one is the same graph for every tau
    unrolled = [len(grad(model.unroll(tau)).nodes()) for tau in (2, 4, 8)]
    assert unrolled[0] < unrolled[1] < unrolled[2]
    fn = model.compile()
    params = random_params(model)
    losses = []
    for tau in (1, 3, 9):
        inputs, targets = data(tau, batch=2, seed=tau)
        loss, grads = fn.loss_and_grad(params, inputs, targets)
        assert grads["x"].shape == (tau, 2, SIZES["I"])
        losses.append(loss)
        assert len(fn.adjoint.nodes()) == size
    assert len(set(losses)) == 3


@pytest.mark.parametrize("name", ["elman", "jordan"])
def test_folded_gradient_equals_gradient_of_the_unrolled_graph(name):
    from graphrnn.backends import reference
    from graphrnn.compiled import Compiled

    model = load(name)
    params = random_params(model)
    inputs, targets = data(5, batch=3)
    _, folded = model.compile().loss_and_grad(params, inputs, targets)
    unrolled = Compiled(model.unroll(5), "float64", reference.run, "reference")
    _, expected = unrolled.loss_and_grad(params, inputs, targets)
    for key, value in expected.items():
        np.testing.assert_allclose(folded[key], value, rtol=1e-10, atol=1e-14, err_msg=key)


def test_grad_of_a_subset_of_leaves():
    model = load("elman")
    full, part = grad(model.graph), grad(model.graph, wrt=["W", "x"])
    assert set(part.outputs) == {"loss", "grad:W", "grad:x"}
    assert set(full.outputs) == {"loss"} | {f"grad:{k}" for k in ["U", "W", "b", "V", "c", "x"]}


def test_grad_without_a_loss_is_an_error():
    model = load("elman")
    graph = model.graph
    no_loss = type(graph)(graph.name, graph.axes, graph.inputs, graph.targets, graph.params)
    no_loss.outputs = dict(graph.outputs)
    with pytest.raises(ValueError, match="no loss"):
        grad(no_loss)


def test_backpropagate_gives_zero_for_an_unreachable_leaf():
    x = input_node("x", (2,), ("t",))
    unused = param_node("P", (3,), ("zeros", ()))
    loss = apply("sum", apply("tanh", x))
    dx, dp = backpropagate([(loss, const(1.0))], [x, unused])
    assert dp.op == "const" and dp.attrs["value"] == 0.0 and dp.shape == (3,)
    assert dx.shape == (2,) and dx.context == Context(frozenset({"t"}), True)


# ---- float32 against float64 ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["elman", "jordan"])
def test_float32_gradients_agree_with_float64(name):
    model = load(name, seed=4)
    inputs, targets = data(6, batch=3, seed=7)
    loss64, g64 = model.compile(dtype="float64").loss_and_grad(model.params, inputs, targets)
    loss32, g32 = model.compile(dtype="float32").loss_and_grad(model.params, inputs, targets)
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    assert set(g32) == set(g64)
    for key in g64:
        assert g32[key].dtype == np.float32, key
        scale = np.abs(g64[key]).max()
        error = np.abs(g32[key].astype(np.float64) - g64[key]).max()
        assert error <= 1e-4 * scale + 1e-7, f"{key}: {error:.2e} vs scale {scale:.2e}"
        assert error > 0 or scale == 0 or g32[key].size < 3, f"{key}: float32 ran in float64?"


# ---- a loss with a static penalty term -----------------------------------------------------------
PENALISED = """
model Penalised(I, O):
    input  x[I] over t
    target y[O] over t
    param  V[O, I]
    param  b[O] ~ ones
    loss = (mean over t of mse(V @ x(t) + b, y(t))) + 0.5 * sum(b * b)
"""

PENALTY_ONLY = """
model PenaltyOnly(I):
    input x[I] over t
    param b[I] ~ ones
    o(t) = x(t) * 2.0
    loss = sum(b * b)
"""


def finite_difference(fn, params, inputs, targets, key):
    numeric = np.zeros_like(params[key])
    for index in np.ndindex(numeric.shape):
        shifted = []
        for sign in (1.0, -1.0):
            value = params[key].copy()
            value[index] += sign * EPS
            shifted.append(fn.loss({**params, key: value}, inputs, targets))
        numeric[index] = (shifted[0] - shifted[1]) / (2 * EPS)
    return numeric


@pytest.mark.parametrize("batch", [1, 3])
def test_static_penalty_in_the_loss_has_the_right_gradient(batch):
    """mean_b(data term_b + penalty) = mean_b(data term_b) + penalty, so d/db of the penalty
    is b itself, not b divided by the batch size."""
    model = gr.loads(PENALISED, I=2, O=2)
    rng = np.random.default_rng(batch)
    params = {k: rng.normal(size=v.shape) for k, v in model.params.items()}
    inputs = {"x": rng.normal(size=(4, batch, 2))}
    targets = {"y": rng.normal(size=(4, batch, 2))}
    fn = model.compile()
    _, grads = fn.loss_and_grad(params, inputs, targets)
    for key in params:
        numeric = finite_difference(fn, params, inputs, targets, key)
        np.testing.assert_allclose(grads[key], numeric, rtol=1e-6, atol=1e-9, err_msg=key)


@pytest.mark.parametrize("batch", [1, 4])
def test_loss_that_does_not_vary_over_the_batch(batch):
    model = gr.loads(PENALTY_ONLY, I=2)
    params = {"b": np.array([0.5, -1.5])}
    inputs = {"x": np.zeros((3, batch, 2))}
    fn = model.compile()
    loss, grads = fn.loss_and_grad(params, inputs, {})
    assert loss == pytest.approx(2.5)
    np.testing.assert_allclose(grads["b"], 2 * params["b"], rtol=1e-12)
