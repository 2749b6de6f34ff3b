"""Batch norm in evaluation mode (graphrnn/running_stats.py, Model.eval_graph, Compiled's
batch statistics): eval-mode values against NumPy, running statistics against
torch.nn.BatchNorm2d, per-example evaluation, the eval graph's gradients against finite
differences, and models without batch norm untouched. Reference backend, float64."""

from __future__ import annotations

import numpy as np
import pytest

import graphrnn as gr
from graphrnn.errors import DataError, GraphRNNError
from graphrnn.running_stats import BatchStats, update_state

MODEL = """
model BN(C = 2, F = 3, H = 4, W = 5):
    input  x[C, H, W]
    target y[F]
    param K[F, C, 3, 3] ~ kaiming
    param gamma[F]      ~ ones
    param beta[F]       ~ zeros
    h = conv2d(x, K, padding = 1)
    n = batchnorm2d(h, gamma, beta)
    o = global_avgpool(tanh(n))
    loss = softmax_cross_entropy(o, y)
"""

SEQUENCE = """
model Seq(C = 2, H = 3, W = 2):
    input  x[C, H, W] over t
    target y[C]
    param gamma[C] ~ ones
    param beta[C]  ~ zeros
    n(t) = batchnorm2d(x(t), gamma, beta)
    o = global_avgpool(sum over t of n(t))
    loss = softmax_cross_entropy(o, y)
"""

EPS = 1e-5


def _data(rng, batch, c=2, hw=(4, 5), k=3):
    return rng.normal(1.0, 2.0, (batch, c) + hw), np.eye(k)[rng.integers(0, k, batch)]


def _random(model, rng):
    params = {k: v + rng.normal(0.0, 0.3, v.shape) for k, v in model.params.items()}
    state = {
        k: rng.normal(size=v.shape) if k.endswith("mean") else rng.uniform(0.5, 2.0, v.shape)
        for k, v in model.state.items()
    }
    return params, state


def test_model_state_starts_at_zero_mean_and_unit_variance():
    model = gr.loads(MODEL)
    # named after gamma; a gamma named `<scope>.gamma` would name them `<scope>.running_mean`
    assert set(model.state) == {"gamma.running_mean", "gamma.running_var"}
    np.testing.assert_array_equal(model.state["gamma.running_mean"], np.zeros(3))
    np.testing.assert_array_equal(model.state["gamma.running_var"], np.ones(3))
    graph = model.eval_graph()
    assert graph.state_names == set(model.state) and graph.state_names <= set(graph.params)
    assert not set(model.state) & set(model.params)


def test_eval_mode_normalises_with_the_given_running_statistics():
    rng = np.random.default_rng(0)
    model = gr.loads(MODEL)
    params, state = _random(model, rng)
    x, _ = _data(rng, 4)
    h = model.compile().forward(params, {"x": x})["h"]
    got = model.compile(mode="eval").forward({**params, **state}, {"x": x})["n"]
    scale = params["gamma"] / np.sqrt(state["gamma.running_var"] + EPS)
    expected = (h - state["gamma.running_mean"][:, None, None]) * scale[:, None, None]
    expected += params["beta"][:, None, None]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    train = model.compile().forward(params, {"x": x})["n"]  # batch statistics differ
    assert np.abs(train - got).max() > 1e-3


def test_eval_mode_needs_the_running_statistics():
    rng = np.random.default_rng(0)
    model = gr.loads(MODEL)
    x, _ = _data(rng, 2)
    with pytest.raises(DataError, match="missing running statistic 'gamma.running_mean'.*state"):
        model.compile(mode="eval").forward(model.params, {"x": x})
    with pytest.raises(GraphRNNError, match="mode must be one of train, eval"):
        model.compile(mode="test")


def test_running_statistics_follow_torch_batchnorm2d():
    """Five training batches of different sizes (one of a single example): the running
    averages equal torch.nn.BatchNorm2d's (momentum 0.1, unbiased running variance)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    model = gr.loads(MODEL)
    params, _ = _random(model, rng)
    fn = model.compile()
    bn = torch.nn.BatchNorm2d(3, eps=EPS, momentum=0.1).double().train()
    state = model.state
    for batch in (4, 2, 3, 1, 5):
        x, y = _data(rng, batch)
        loss, grads, stats = fn.loss_and_grad(params, {"x": x}, {"y": y}, batch_stats=True)
        assert set(grads) == set(model.params) | {"x"} and set(stats) == {"gamma"}
        assert stats["gamma"].count == batch * 4 * 5
        state = update_state(state, stats)
        with torch.no_grad():
            bn(torch.tensor(fn.forward(params, {"x": x})["h"]))
    np.testing.assert_allclose(state["gamma.running_mean"], bn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(state["gamma.running_var"], bn.running_var.numpy(), rtol=1e-12)
    assert fn.loss_and_grad(params, {"x": x}, {"y": y})[1].keys() == grads.keys()


def test_statistics_over_a_sequence_pool_the_steps():
    """A batch norm over t has per-step batch statistics; the running statistics are one per
    channel, updated with the statistics over batch, pixels and steps together."""
    rng = np.random.default_rng(2)
    model = gr.loads(SEQUENCE)
    x = rng.normal(0.5, 1.5, (4, 3, 2, 3, 2))  # [T, B, C, H, W]
    y = np.eye(2)[[0, 1, 1]]
    _, _, stats = model.compile().loss_and_grad(model.params, {"x": x}, {"y": y}, True)
    (s,) = stats.values()
    np.testing.assert_allclose(s.mean, x.mean(axis=(0, 1, 3, 4)), rtol=1e-12)
    np.testing.assert_allclose(s.var, x.var(axis=(0, 1, 3, 4)), rtol=1e-12)
    assert s.count == 4 * 3 * 3 * 2


def test_one_example_is_evaluated_alone_as_in_a_batch():
    rng = np.random.default_rng(3)
    model = gr.loads(MODEL)
    params, state = _random(model, rng)
    fn = model.compile(mode="eval")
    x, _ = _data(rng, 5)
    together = fn.forward({**params, **state}, {"x": x})["o"]
    for k in range(5):
        alone = fn.forward({**params, **state}, {"x": x[k : k + 1]})["o"]
        np.testing.assert_allclose(alone[0], together[k], rtol=1e-13, atol=1e-15)


def test_eval_graph_gradients_match_finite_differences():
    """Every parameter's and the input's gradient through the eval graph; the running
    statistics get none."""
    rng = np.random.default_rng(4)
    model = gr.loads(MODEL)
    params, state = _random(model, rng)
    fn = model.compile(mode="eval")
    x, y = _data(rng, 3)
    _, grads = fn.loss_and_grad({**params, **state}, {"x": x}, {"y": y})
    assert set(grads) == set(model.params) | {"x"}
    values = {**params, **state, "x": x}
    h = 1e-6
    for name in [*model.params, "x"]:
        direction = rng.normal(size=values[name].shape)

        def loss_at(sign, name=name, direction=direction):
            moved = dict(values, **{name: values[name] + sign * h * direction})
            inputs = {"x": moved.pop("x")}
            return fn.loss(moved, inputs, {"y": y})

        numeric = (loss_at(1) - loss_at(-1)) / (2 * h)
        analytic = float(np.sum(grads[name] * direction))
        assert abs(numeric - analytic) <= 1e-6 * max(abs(analytic), 1e-3), name


def test_models_without_batch_norm_are_unaffected():
    model = gr.load("models/lstm_classifier.grnn", I=3, H=4, O=2)
    assert model.state == {} and model.eval_graph() is model.graph
    assert not model.graph.batchnorms and model.graph.state_names == set()
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(4, 2, 3)), np.eye(2)[[0, 1]]
    fn = model.compile()
    loss, grads = fn.loss_and_grad(model.params, {"x": x}, {"y": y})
    again = fn.loss_and_grad(model.params, {"x": x}, {"y": y}, batch_stats=True)
    assert again[0] == loss and again[2] == {}
    assert [k for k in fn.adjoint.outputs if not k.startswith(("grad:", "loss"))] == []


def test_update_state_keeps_dtype_and_refuses_unknown_batch_norms():
    state = {"a.running_mean": np.zeros(2, np.float32), "a.running_var": np.ones(2, np.float32)}
    stats = {"a": BatchStats(np.array([1.0, 2.0]), np.array([3.0, 4.0]), 5)}
    new = update_state(state, stats)
    assert new["a.running_mean"].dtype == np.float32
    np.testing.assert_allclose(new["a.running_mean"], [0.1, 0.2])
    np.testing.assert_allclose(new["a.running_var"], [0.9 + 0.1 * 3.75, 0.9 + 0.1 * 5.0])
    np.testing.assert_array_equal(state["a.running_mean"], 0)  # not modified in place
    with pytest.raises(DataError, match="no running statistics.*'b'"):
        update_state(state, {"b": stats["a"]})
