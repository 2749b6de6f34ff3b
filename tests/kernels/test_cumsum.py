"""cumsum, the op added as docs/architecture.md's worked example: its record (ir/ops/
structure.py) and its kernel (kernels/structure.py) are all it took, so these tests check
that everything else picks it up: the language, the reference, both printed kernels, the
gradient."""

from __future__ import annotations

import numpy as np
import pytest

import graphrnn as gr
from graphrnn.backends.cuda_source import kernel_sources
from tests.backends.test_cupy_gpu import compare_model, emulated
from tests.backends.test_numba import compare

MODEL = """
model RunningSum(I):
    input x[I] over t
    target y[I] over t
    param w[I] ~ uniform
    param U[I, I] ~ glorot_uniform
    h(0) = zeros(I)
    h(t) = tanh(cumsum(x(t) * w) + U @ cumsum(h(t-1)))
    loss = mean over t of mse(h(t), y(t))
"""


@pytest.fixture(scope="module")
def model():
    return gr.loads(MODEL, I=4, seed=0)


def test_reference_is_numpys_cumsum(model):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 2, 4))
    w = model.params["w"]
    h = model.compile("reference").forward(model.params, {"x": x})["h"]
    prev = np.zeros((2, 4))
    for t in range(3):
        prev = np.tanh(np.cumsum(x[t] * w, -1) + np.cumsum(prev, -1) @ model.params["U"].T)
        np.testing.assert_allclose(h[t], prev, rtol=1e-12)


def test_gradient_against_finite_differences(model):
    rng = np.random.default_rng(2)
    inputs = {"x": rng.normal(size=(4, 3, 4))}
    targets = {"y": rng.normal(size=(4, 3, 4))}
    fn = model.compile("reference")
    _, grads = fn.loss_and_grad(model.params, inputs, targets)
    eps = 1e-6
    for name, value in model.params.items():
        direction = rng.normal(size=value.shape)
        up = {**model.params, name: value + eps * direction}
        down = {**model.params, name: value - eps * direction}
        numeric = (fn.loss(up, inputs, targets) - fn.loss(down, inputs, targets)) / (2 * eps)
        analytic = float(np.sum(grads[name] * direction))
        assert abs(numeric - analytic) <= 1e-7 * max(1.0, abs(analytic)), name


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-4)])
def test_numba_matches_reference(model, dtype, rtol):
    compare(model, dtype, rtol)


def test_emulated_cuda_matches_reference(model):
    compare_model(emulated(model.graph, "float64"), model, 1e-10)


def test_both_directions_are_printed_as_running_sums(model):
    fast = emulated(model.graph, "float64")
    sources = kernel_sources(fast.prepared(fast.adjoint), "float64")
    cumsums = [s for name, s in sources.items() if name.endswith("_cumsum")]
    assert len(cumsums) >= 3, list(sources)
    assert any("--e" in s for s in cumsums) and any("++e" in s for s in cumsums)
