"""The Numba backend against the reference interpreter, on every shipped model.

float64 must agree to 1e-10 relative; float32 to 1e-4. Kernels are cached on disk under
GRAPHRNN_CACHE_DIR, so a second run of the suite compiles nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

import graphrnn as gr
from graphrnn.check import random_data
from graphrnn.dsl import parse_file
from tests.test_unroll import examples

# The SpatialRNN classifier is compared at its own reduced sizes in tests/test_spatial_rnn.py
# (its whole network is a minute or more of Numba compilation; once is enough).
WHOLE_NETWORK_TESTED_ELSEWHERE = {"spatial_rnn_sex"}
MODELS = sorted(
    p
    for p in Path(__file__).resolve().parents[2].glob("models/*.grnn")
    if p.stem not in WHOLE_NETWORK_TESTED_ELSEWHERE
)
SMALL = {"I": 3, "H": 4, "O": 3, "L": 2}


def load_small(path: Path):
    module = parse_file(str(path))
    model = next(i for i in module.items if type(i).__name__ == "ModelDef")
    sizes = {p.name: SMALL.get(p.name, 3) for p in model.params if p.default is None}
    return gr.load(path, seed=1, **sizes)


def assert_close(actual, expected, rtol, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    scale = max(np.abs(expected).max(initial=0.0), 1e-30)
    error = np.abs(actual - expected).max(initial=0.0) / scale
    assert error < rtol, f"{what}: relative error {error:.3e}"


def compare(model, dtype: str, rtol: float, tau: int = 5, batch: int = 3):
    inputs, targets = random_data(model, tau, batch, seed=2)
    params = {k: v.astype(dtype) for k, v in model.params.items()}
    inputs = {k: v.astype(dtype) for k, v in inputs.items()}
    targets = {k: v.astype(dtype) for k, v in targets.items()}
    reference = model.compile("reference", dtype="float64")
    fast = model.compile("numba", dtype=dtype)
    expected, actual = reference.forward(params, inputs), fast.forward(params, inputs)
    assert set(actual) == set(expected)
    for name in expected:
        assert_close(actual[name], expected[name], rtol, f"forward {name}")
    if model.graph.loss is None:
        return
    loss0, grads0 = reference.loss_and_grad(params, inputs, targets)
    loss1, grads1 = fast.loss_and_grad(params, inputs, targets)
    assert_close(loss1, loss0, rtol, "loss")
    assert set(grads1) == set(grads0)
    for name in grads0:
        assert_close(grads1[name], grads0[name], rtol, f"gradient of {name}")


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_numba_matches_reference_float64(path):
    compare(load_small(path), "float64", 1e-10)


@pytest.mark.parametrize("name", ["elman", "lstm", "gru_torch"])
def test_numba_matches_reference_float32(name):
    path = Path(__file__).resolve().parents[2] / "models" / f"{name}.grnn"
    if not path.exists():
        pytest.fail(f"models/{name}.grnn is missing")
    compare(load_small(path), "float32", 1e-4)


def test_numba_large_products_use_blas_and_match():
    """Above the BLAS threshold products become np.dot calls; values must not change."""
    model = gr.load(Path(__file__).resolve().parents[2] / "models/elman.grnn", I=70, H=70, O=5)
    fast = model.compile("numba", dtype="float64")
    source = fast.executor.source(fast.adjoint)
    assert "np.dot(" in source
    compare(model, "float64", 1e-10, tau=4, batch=2)


def test_compile_time_does_not_depend_on_sequence_length():
    """The kernel is a rolled loop: its source is the same for every T."""
    model = load_small(Path(__file__).resolve().parents[2] / "models/elman.grnn")
    fast = model.compile("numba", dtype="float64")
    source = fast.executor.source(fast.adjoint)
    for tau in (1, 7):
        inputs, targets = random_data(model, tau, 2, seed=0)
        fast.loss_and_grad(model.params, inputs, targets)
    assert fast.executor.source(fast.adjoint) == source
    assert len(fast.executor.kernels) == 1


@settings(max_examples=4, deadline=None)
@given(ex=examples())
def test_numba_matches_reference_on_random_cells(ex):
    """Random cells (tests/test_unroll.py): LSTM-like, feedback, backward, two-step lags, both
    directions, losses per step or from h(end); each draw compiles its own kernels."""
    inputs, targets = {"x": ex.data["x"]}, {"y": ex.data["y"]}
    reference = ex.model.compile("reference", dtype="float64")
    fast = ex.model.compile("numba", dtype="float64")
    expected, actual = reference.forward(ex.params, inputs), fast.forward(ex.params, inputs)
    for name in expected:
        assert_close(actual[name], expected[name], 1e-10, f"forward {name}")
    loss0, grads0 = reference.loss_and_grad(ex.params, inputs, targets)
    loss1, grads1 = fast.loss_and_grad(ex.params, inputs, targets)
    assert_close(loss1, loss0, 1e-10, "loss")
    assert set(grads1) == set(grads0)
    for name in grads0:
        assert_close(grads1[name], grads0[name], 1e-10, f"gradient of {name}")


DIVIDING = """
model Divide(I):
    input x[I] over t
    param w[I] ~ ones
    h(0) = zeros(I)
    h(t) = x(t) / w + h(t-1)
    loss = sum over t of sum(h(t))
"""


def test_division_by_zero_gives_inf_and_nan_as_in_numpy():
    """Numba's default error model raises ZeroDivisionError; kernels must give NumPy's IEEE
    results instead (the reference's), including for a zero parameter."""
    model = gr.loads(DIVIDING, I=3, seed=0)
    params = {"w": np.array([1.0, 0.0, -0.0])}
    x = np.ones((4, 2, 3))
    x[:, :, 2] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = model.compile("reference").forward(params, {"x": x})["h"]
    actual = model.compile("numba", dtype="float64").forward(params, {"x": x})["h"]
    assert np.isfinite(expected[..., 0]).all()
    assert np.isinf(expected[..., 1]).all() and np.isnan(expected[..., 2]).all()
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(actual[~np.isnan(actual)], expected[~np.isnan(expected)])
