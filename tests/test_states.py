"""Stateful calls: initial states given, final states returned (graphrnn/states.py).

The oracle for gradients is a hand-written NumPy Elman BPTT of one chunk, its initial state
held constant: the cut that truncated BPTT makes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphrnn as gr
from tests.test_running_stats import SEQUENCE

SIZES = {"I": 3, "H": 5, "O": 4}


def elman_chunk(p: dict, x: np.ndarray, y: np.ndarray, h0: np.ndarray):
    """Loss, parameter gradients, dloss/dh0 and the last h of models/elman.grnn on one chunk
    (batch-mean of the mean over steps of the softmax cross-entropy), by hand."""
    T, B, _ = x.shape
    hs, probs, loss = [h0], [], 0.0
    for t in range(T):
        h = np.tanh(x[t] @ p["U"].T + hs[-1] @ p["W"].T + p["b"])
        o = h @ p["V"].T + p["c"]
        e = np.exp(o - o.max(axis=1, keepdims=True))
        probs.append(e / e.sum(axis=1, keepdims=True))
        loss -= np.sum(y[t] * np.log(probs[-1])) / (T * B)
        hs.append(h)
    g = {k: np.zeros_like(v) for k, v in p.items()}
    dh_next = np.zeros_like(h0)
    for t in reversed(range(T)):
        do = (probs[t] - y[t]) / (T * B)
        g["V"] += do.T @ hs[t + 1]
        g["c"] += do.sum(axis=0)
        da = (do @ p["V"] + dh_next) * (1 - hs[t + 1] ** 2)
        g["U"] += da.T @ x[t]
        g["W"] += da.T @ hs[t]
        g["b"] += da.sum(axis=0)
        dh_next = da @ p["W"]
    return loss, g, dh_next, hs[-1]


def data(T: int, B: int = 3, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T, B, SIZES["I"]))
    y = np.eye(SIZES["O"])[rng.integers(0, SIZES["O"], (T, B))]
    return x, y


def chunks(T: int, cuts: list[int]) -> list[slice]:
    edges = [0, *cuts, T]
    return [slice(a, b) for a, b in zip(edges, edges[1:])]


@pytest.mark.parametrize("path", ["models/elman.grnn", "models/lstm.grnn", "models/gru_cho.grnn"])
def test_forward_over_chunks_equals_the_whole_sequence(path):
    model = gr.load(path, seed=3, **SIZES)
    fn = model.compile("reference")
    x, _ = data(11)
    whole = fn.forward(model.params, {"x": x})
    state, parts = None, []
    for part in chunks(11, [4, 5, 9]):
        outs, state = fn.forward(model.params, {"x": x[part]}, initial=state, final=True)
        parts.append(outs)
    for name, value in whole.items():
        joined = np.concatenate([p[name] for p in parts])
        assert np.max(np.abs(joined - value)) < 1e-12, name
    assert set(state) == set(fn.states)
    for name, shape in fn.states.items():
        assert state[name].shape == (3, *shape)


def test_chunk_gradients_are_the_truncated_bptt_gradients():
    model = gr.load("models/elman.grnn", seed=4, **SIZES)
    fn = model.compile("reference")
    x, y = data(10)
    h = np.zeros((3, SIZES["H"]))
    for part in chunks(10, [3, 7]):
        loss, grads, final = fn.loss_and_grad(
            model.params, {"x": x[part]}, {"y": y[part]}, initial={"h": h}, final=True
        )
        want_loss, want, dh0, h = elman_chunk(model.params, x[part], y[part], h)
        assert abs(loss - want_loss) < 1e-12
        for name in want:
            assert np.max(np.abs(grads[name] - want[name])) < 1e-12, name
        assert np.max(np.abs(grads["initial:h"] - dh0)) < 1e-12  # the cut adjoint
        assert np.max(np.abs(final["h"] - h)) < 1e-12
    # a truncated gradient differs from full BPTT: the test can tell them apart
    _, full = fn.loss_and_grad(model.params, {"x": x}, {"y": y})
    _, first, _, _ = elman_chunk(model.params, x[7:], y[7:], np.zeros((3, SIZES["H"])))
    assert np.max(np.abs(full["W"] - first["W"])) > 1e-3


def test_numba_stateful_calls_match_the_reference():
    model = gr.load("models/lstm.grnn", seed=5, **SIZES)
    ref, nb = model.compile("reference"), model.compile("numba", input_grads=False)
    x, y = data(6)
    _, state = ref.forward(model.params, {"x": x[:2]}, final=True)
    want = ref.loss_and_grad(model.params, {"x": x[2:]}, {"y": y[2:]}, initial=state, final=True)
    got = nb.loss_and_grad(model.params, {"x": x[2:]}, {"y": y[2:]}, initial=state, final=True)
    assert abs(got[0] - want[0]) < 1e-12
    assert set(got[1]) == set(model.params)  # input_grads=False: no initial-state adjoint
    for name, g in got[1].items():
        assert np.max(np.abs(g - want[1][name])) < 1e-10, name
    for name, s in got[2].items():
        assert np.max(np.abs(s - want[2][name])) < 1e-12, name
    loss, final = nb.loss(model.params, {"x": x[2:]}, {"y": y[2:]}, initial=state, final=True)
    assert abs(loss - want[0]) < 1e-12 and set(final) == {"h.h", "h.C"}


def test_initial_replaces_the_models_initial_value():
    model = gr.load("models/elman.grnn", seed=6, **SIZES)
    fn = model.compile("reference")
    x, _ = data(4)
    plain = fn.forward(model.params, {"x": x})["h"]
    zeros = fn.forward(model.params, {"x": x}, initial={"h": np.zeros((3, SIZES["H"]))})["h"]
    ones = fn.forward(model.params, {"x": x}, initial={"h": np.ones((3, SIZES["H"]))})["h"]
    assert np.max(np.abs(plain - zeros)) < 1e-15
    assert np.max(np.abs(plain[0] - ones[0])) > 1e-3


def test_backward_recurrences_have_no_final_state():
    model = gr.load("models/birnn.grnn", seed=0, **SIZES)
    fn = model.compile("reference")
    x, _ = data(4)
    _, final = fn.forward(model.params, {"x": x}, final=True)
    assert set(final) == {"h.fw.h"} and set(fn.states) == {"h.fw.h", "h.bw.h"}


@pytest.mark.parametrize(
    "initial, words",
    [
        ({"hh": np.zeros((3, 5))}, "'hh' is not a state of model 'Elman'; its states"),
        ({"h": np.zeros(5)}, "'h' has shape [5]; expected [batch, 5]"),
        ({"h": np.zeros((3, 4))}, "'h' has shape [3, 4]; expected [batch, 5]"),
        ({"h": np.zeros((2, 5))}, "batch size 2, other data has 3"),
        ({"h": "zeros"}, "'h' is not a numeric array"),
        ([np.zeros((3, 5))], "initial must be a dict of arrays by state name"),
    ],
)
def test_bad_initial_states_are_named(initial, words):
    model = gr.load("models/elman.grnn", **SIZES)
    fn = model.compile("reference")
    with pytest.raises(gr.DataError) as info:
        fn.forward(model.params, {"x": data(4)[0]}, initial=initial)
    assert words in str(info.value)


def test_a_two_step_delay_cannot_carry_a_final_state():
    text = """
model Two(I, H):
    input x[I] over t
    param U[H, I] ~ glorot_uniform
    h(0) = zeros(H)
    h(t) = tanh(U @ x(t) + h(t-2))
"""
    model = gr.loads(text, I=2, H=3)
    fn = model.compile("reference")
    x = np.zeros((4, 1, 2))
    assert fn.forward(model.params, {"x": x}, initial={"h": np.ones((1, 3))})["h"].shape
    with pytest.raises(gr.DataError, match=r"read 2 steps back .* one-step delays only"):
        fn.forward(model.params, {"x": x}, final=True)


# models/elman.grnn with a learned initial state and a loss summed over t
SUMMED = (
    Path("models/elman.grnn")
    .read_text()
    .replace("h(0) = zeros(H)", "param h0[H] ~ uniform(0.5)\n    h(0) = h0")
    .replace("mean over t", "sum over t")
)


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_uncut_chunk_gradients_add_up_to_full_bptt(backend):
    """Chunks run from the last to the first, each given the next one's adjoint of the
    state it hands on: their gradients add up to full BPTT (the loss is a sum over t)."""
    model = gr.loads(SUMMED, seed=7, **SIZES)
    fn = model.compile(backend)
    x, y = data(9)
    parts = chunks(9, [2, 6])
    states = [None]
    for part in parts[:-1]:
        states.append(fn.forward(model.params, {"x": x[part]}, initial=states[-1], final=True)[1])
    total, summed, adjoint = 0.0, {k: 0.0 for k in model.params}, None
    for part, state in reversed(list(zip(parts, states))):
        loss, grads = fn.loss_and_grad(
            model.params, {"x": x[part]}, {"y": y[part]}, initial=state, final_adjoint=adjoint
        )
        total += loss
        summed = {k: summed[k] + grads[k] for k in summed}
        adjoint = {"h": grads["initial:h"]} if state is not None else None
    want_loss, want = fn.loss_and_grad(model.params, {"x": x}, {"y": y})
    assert abs(total - want_loss) < 1e-12 * abs(want_loss)
    for name, g in want.items():
        if name in summed:
            assert np.max(np.abs(summed[name] - g)) < 1e-12 * np.max(np.abs(g)), name
    assert np.max(np.abs(want["h0"])) > 1e-3  # the learned h0 gets its gradient, once


def test_a_final_adjoint_must_name_a_state_with_a_final_value():
    model = gr.load("models/birnn.grnn", **SIZES)
    fn = model.compile("reference")
    x, y = data(4)
    with pytest.raises(gr.DataError, match="'h.bw.h' has no final state to seed"):
        fn.loss_and_grad(
            model.params, {"x": x}, {"y": y}, final_adjoint={"h.bw.h": np.zeros((3, 5))}
        )
    with pytest.raises(gr.DataError, match="final_adjoint state 'h' is not a state"):
        fn.loss_and_grad(model.params, {"x": x}, {"y": y}, final_adjoint={"h": np.zeros((3, 5))})


def test_batch_statistics_are_refused_with_stateful_calls():
    o = "    o = global_avgpool(sum over t of n(t))"
    assert o in SEQUENCE
    recurrent = (
        "    s(0) = zeros(C, H, W)\n    s(t) = s(t-1) + n(t)\n    o = global_avgpool(s(end))"
    )
    text = SEQUENCE.replace(o, recurrent)  # batch norm inside a recurrence
    model = gr.loads(text)
    fn = model.compile("reference")
    assert fn.states == {"s": (2, 3, 2)}
    x, y = np.ones((3, 2, 2, 3, 2)), np.eye(2)[[0, 1]]
    assert len(fn.loss_and_grad(model.params, {"x": x}, {"y": y}, batch_stats=True)[2]) == 1
    with pytest.raises(gr.GraphRNNError, match="batch_stats cannot be combined with initial"):
        fn.loss_and_grad(model.params, {"x": x}, {"y": y}, batch_stats=True, final=True)


def test_checkpointed_bptt_takes_initial_and_final_states():
    model = gr.load("models/lstm.grnn", seed=8, **SIZES)
    plain, segmented = model.compile("reference"), model.compile("reference", bptt_checkpoint=2)
    x, y = data(7)
    _, state = plain.forward(model.params, {"x": x[:3]}, final=True)
    want = plain.loss_and_grad(model.params, {"x": x[3:]}, {"y": y[3:]}, initial=state, final=True)
    got = segmented.loss_and_grad(
        model.params, {"x": x[3:]}, {"y": y[3:]}, initial=state, final=True
    )
    assert abs(got[0] - want[0]) < 1e-12
    for name in model.params:
        assert np.max(np.abs(got[1][name] - want[1][name])) < 1e-12, name
    for name in state:
        assert np.max(np.abs(got[2][name] - want[2][name])) < 1e-12, name
    assert segmented.states == plain.states
