"""Variable-length sequences through a mask (models/lstm_masked.grnn) are exact: a padded,
masked batch gives the loss and gradients of each sequence run alone at its own length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphrnn as gr

MODEL = Path(__file__).resolve().parents[1] / "models" / "lstm_masked.grnn"


def batch_of(lengths, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    T, B = max(lengths), len(lengths)
    x = rng.normal(size=(T, B, n_in))
    y = np.eye(n_out)[rng.integers(0, n_out, (T, B))]
    m = np.zeros((T, B))
    for b, n in enumerate(lengths):
        m[:n, b] = 1.0
        x[n:, b] = rng.normal(size=(T - n, n_in)) * 100.0  # padding must not matter
    return x, y, m


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_masked_batch_equals_each_sequence_alone(backend):
    lengths = [5, 3, 1, 4]
    model = gr.load(MODEL, I=3, H=4, O=3, seed=2)
    fn = model.compile(backend, dtype="float64")
    x, y, m = batch_of(lengths, 3, 3, seed=0)
    loss, grads = fn.loss_and_grad(model.params, {"x": x, "m": m}, {"y": y})
    losses, per_example = [], []
    for b, n in enumerate(lengths):
        inputs = {"x": x[:n, b : b + 1], "m": np.ones((n, 1))}
        lb, gb = fn.loss_and_grad(model.params, inputs, {"y": y[:n, b : b + 1]})
        losses.append(lb)
        per_example.append(gb)
    assert loss == pytest.approx(np.mean(losses), rel=1e-12)
    for name in model.params:
        expected = np.mean([g[name] for g in per_example], axis=0)
        np.testing.assert_allclose(grads[name], expected, rtol=1e-10, atol=1e-13)
    h = fn.forward(model.params, {"x": x, "m": m})["h"]
    for b, n in enumerate(lengths):
        alone = fn.forward(model.params, {"x": x[:n, b : b + 1], "m": np.ones((n, 1))})["h"]
        np.testing.assert_allclose(h[-1, b], alone[-1, 0], rtol=1e-12)
