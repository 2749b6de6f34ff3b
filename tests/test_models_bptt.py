"""Elman and Jordan gradients: the compiled reference backend against a hand-written NumPy
BPTT (forward and backward recurrences as explicit loops over t) and against central finite
differences, for every parameter and the input x, in float64 with a batch of several sequences.

Both models' loss is mean over t of softmax_cross_entropy(o(t), y(t)), and loss_and_grad
averages it over the batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphrnn as gr

MODELS = Path(__file__).resolve().parents[1] / "models"
NI, NH, NO = 3, 4, 3  # input, hidden and output sizes
T, B = 6, 3
EPS = 1e-6


def softmax(o):
    e = np.exp(o - o.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def cross_entropy(o, y):
    log_p = o - o.max(axis=-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=-1, keepdims=True))
    return -(y * log_p).sum(axis=-1)


# ---- Elman: a(t) = U x(t) + W h(t-1) + b, h = tanh(a), o = V h + c ----------------------------
def elman_loss(p, x, y):
    h = np.zeros((x.shape[1], NH))
    total = 0.0
    for t in range(x.shape[0]):
        h = np.tanh(x[t] @ p["U"].T + h @ p["W"].T + p["b"])
        total += cross_entropy(h @ p["V"].T + p["c"], y[t]).sum()
    return total / (x.shape[0] * x.shape[1])


def elman_bptt(p, x, y):
    steps, batch = x.shape[:2]
    hs, probs = [np.zeros((batch, NH))], []
    for t in range(steps):
        hs.append(np.tanh(x[t] @ p["U"].T + hs[-1] @ p["W"].T + p["b"]))
        probs.append(softmax(hs[-1] @ p["V"].T + p["c"]))
    g = {k: np.zeros_like(v) for k, v in p.items()}
    g["x"] = np.zeros_like(x)
    scale = 1.0 / (steps * batch)
    dh_next = np.zeros((batch, NH))
    for t in reversed(range(steps)):
        h, h_prev = hs[t + 1], hs[t]
        do = (probs[t] * y[t].sum(axis=-1, keepdims=True) - y[t]) * scale
        g["V"] += do.T @ h
        g["c"] += do.sum(axis=0)
        dh = do @ p["V"] + dh_next
        da = dh * (1.0 - h * h)
        g["U"] += da.T @ x[t]
        g["W"] += da.T @ h_prev
        g["b"] += da.sum(axis=0)
        g["x"][t] = da @ p["U"]
        dh_next = da @ p["W"]
    return g


# ---- Jordan: a(t) = U x(t) + W y_hat(t-1) + b, h = tanh(a), o = V h + c, y_hat = softmax(o) ----
def jordan_loss(p, x, y):
    y_hat = np.zeros((x.shape[1], NO))
    total = 0.0
    for t in range(x.shape[0]):
        h = np.tanh(x[t] @ p["U"].T + y_hat @ p["W"].T + p["b"])
        o = h @ p["V"].T + p["c"]
        total += cross_entropy(o, y[t]).sum()
        y_hat = softmax(o)
    return total / (x.shape[0] * x.shape[1])


def jordan_bptt(p, x, y):
    steps, batch = x.shape[:2]
    hats, hs = [np.zeros((batch, NO))], []
    for t in range(steps):
        hs.append(np.tanh(x[t] @ p["U"].T + hats[-1] @ p["W"].T + p["b"]))
        hats.append(softmax(hs[-1] @ p["V"].T + p["c"]))
    g = {k: np.zeros_like(v) for k, v in p.items()}
    g["x"] = np.zeros_like(x)
    scale = 1.0 / (steps * batch)
    d_hat = np.zeros((batch, NO))  # adjoint of y_hat(t), from a(t+1)
    for t in reversed(range(steps)):
        h, prob, hat_prev = hs[t], hats[t + 1], hats[t]
        do = (prob * y[t].sum(axis=-1, keepdims=True) - y[t]) * scale
        do += prob * (d_hat - (d_hat * prob).sum(axis=-1, keepdims=True))
        g["V"] += do.T @ h
        g["c"] += do.sum(axis=0)
        da = (do @ p["V"]) * (1.0 - h * h)
        g["U"] += da.T @ x[t]
        g["W"] += da.T @ hat_prev
        g["b"] += da.sum(axis=0)
        g["x"][t] = da @ p["U"]
        d_hat = da @ p["W"]
    return g


CASES = {"elman": (elman_loss, elman_bptt), "jordan": (jordan_loss, jordan_bptt)}


@pytest.fixture(params=sorted(CASES))
def setup(request):
    name = request.param
    model = gr.load(MODELS / f"{name}.grnn", seed=3, I=NI, H=NH, O=NO)
    rng = np.random.default_rng(11)
    params = {k: rng.normal(0.0, 0.5, v.shape) for k, v in model.params.items()}
    x = rng.normal(0.0, 1.0, (T, B, NI))
    y = np.eye(NO)[rng.integers(0, NO, (T, B))]
    fn = model.compile(backend="reference", dtype="float64")
    return name, fn, params, x, y


def assert_close(actual, expected, what, rtol=1e-6, atol=1e-9):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    error = np.abs(actual - expected)
    bad = error > rtol * np.abs(expected) + atol
    assert not bad.any(), (
        f"{what}: {int(bad.sum())} of {bad.size} elements differ, "
        f"worst {float(error.max()):.3e} at {np.unravel_index(error.argmax(), error.shape)}"
    )


def test_loss_matches_numpy_forward(setup):
    name, fn, params, x, y = setup
    loss_fn, _ = CASES[name]
    loss, _ = fn.loss_and_grad(params, {"x": x}, {"y": y})
    assert loss == pytest.approx(loss_fn(params, x, y), rel=1e-12)


def test_gradients_match_handwritten_bptt(setup):
    name, fn, params, x, y = setup
    _, bptt = CASES[name]
    _, grads = fn.loss_and_grad(params, {"x": x}, {"y": y})
    expected = bptt(params, x, y)
    assert set(grads) == set(expected)
    for key, value in expected.items():
        assert_close(grads[key], value, f"{name}: d loss / d {key}", rtol=1e-10, atol=1e-13)


def test_gradients_match_finite_differences(setup):
    """Every element of every parameter and of x, perturbed one at a time."""
    name, fn, params, x, y = setup
    loss_fn, bptt = CASES[name]
    _, grads = fn.loss_and_grad(params, {"x": x}, {"y": y})
    for key in [*params, "x"]:
        base = x if key == "x" else params[key]
        numeric = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            shifted = []
            for sign in (1.0, -1.0):
                value = base.copy()
                value[index] += sign * EPS
                p = params if key == "x" else {**params, key: value}
                shifted.append(fn.loss(p, {"x": value if key == "x" else x}, {"y": y}))
            numeric[index] = (shifted[0] - shifted[1]) / (2 * EPS)
        assert_close(grads[key], numeric, f"{name}: d loss / d {key} vs finite differences")
    # and the NumPy model agrees with its own gradient too, so the reference above is sound
    expected = bptt(params, x, y)
    u = np.random.default_rng(5).normal(0.0, 1.0, params["W"].shape)
    shifted = [loss_fn({**params, "W": params["W"] + s * EPS * u}, x, y) for s in (1.0, -1.0)]
    assert (shifted[0] - shifted[1]) / (2 * EPS) == pytest.approx(
        np.sum(expected["W"] * u), rel=1e-6
    )


def test_batch_examples_are_independent(setup):
    """The gradient for x of one sequence does not depend on the other sequences in the batch."""
    name, fn, params, x, y = setup
    _, grads = fn.loss_and_grad(params, {"x": x}, {"y": y})
    _, alone = fn.loss_and_grad(params, {"x": x[:, :1]}, {"y": y[:, :1]})
    assert_close(grads["x"][:, :1] * B, alone["x"], f"{name}: x gradient of the first sequence")
