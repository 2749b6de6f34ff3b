"""Segmented BPTT with recomputation (`bptt_checkpoint=k`) against plain BPTT.

The loss and every gradient must equal plain `loss_and_grad` to ~1e-12 relative in float64,
for k dividing T or not, k = 1 and k >= T, on the reference backend and on Numba; models the
segmentation cannot handle must raise a GraphRNNError that names what is unsupported.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import graphrnn as gr
from graphrnn.check import random_data
from graphrnn.cli import build_parser, main
from graphrnn.segmented.driver import SegmentedBPTT, segment_length, segments
from graphrnn.segmented.rewrite import build_segment_graph

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"I": 3, "H": 4, "O": 3}
RTOL = 1e-12

GRID = """
model Grid(C, H):
    input  p[C] over i, j
    target k[H] over i, j
    param  A[H, C]
    param  B[H, H]
    d(0) = zeros(H)
    d(i, j) = tanh(A @ p(i, j) + B @ d(i-1, j))
    loss = mean over i of mean over j of softmax_cross_entropy(d(i, j), k(i, j))
"""

# T, k: k divides T, k does not, k = 1, k = T, k > T, one step, and k = ceil(sqrt(T)).
CASES = [(6, 2), (7, 3), (5, 1), (4, 4), (3, 8), (1, 1), (10, "auto")]


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    scale = max(np.abs(expected).max(initial=0.0), 1e-300)
    return float(np.abs(actual - expected).max(initial=0.0) / scale)


def assert_same(model, checkpointed, plain, tau: int, batch: int = 3, seed: int = 2) -> None:
    inputs, targets = random_data(model, tau, batch, seed)
    loss, grads = plain.loss_and_grad(model.params, inputs, targets)
    seg_loss, seg_grads = checkpointed.loss_and_grad(model.params, inputs, targets)
    assert set(seg_grads) == set(grads)
    assert relative_error(seg_loss, loss) < RTOL, (seg_loss, loss)
    for name in grads:
        assert relative_error(seg_grads[name], grads[name]) < RTOL, name
    assert relative_error(checkpointed.loss(model.params, inputs, targets), loss) < RTOL


@pytest.fixture(scope="module", params=["elman", "lstm", "gru_torch", "gru_cho"])
def model(request):
    return gr.load(ROOT / f"models/{request.param}.grnn", seed=1, **SIZES)


@pytest.mark.parametrize("tau, k", CASES)
def test_reference_matches_plain_bptt(model, tau, k):
    plain = model.compile("reference", "float64")
    assert_same(model, model.compile("reference", "float64", bptt_checkpoint=k), plain, tau)


def test_static_input_initial_state_and_parameter_terms():
    """A learned h0 and an h_init input get gradient from the first segment only; a term
    without t counts once; sums, scaled means and a delay outside the recurrence split."""
    model = gr.loads(
        """
model M(I, H):
    input  x[I] over t
    input  c_init[H]
    target y[H] over t
    param  W[H, H] ~ orthogonal
    param  U[H, I]
    param  h0[H] ~ uniform(0.5)
    param  A[H, H]
    param  a[H] ~ uniform(0.5)
    h(0) = h0
    h(t) = tanh(W @ h(t-1) + U @ x(t))
    c(0) = c_init
    c(t) = 0.5 * c(t-1) + h(t)
    s(0) = zeros(H)
    s(t) = tanh(A @ s(t-1) + a)
    loss = (0.3 * (mean over t of mse(c(t) + s(t), y(t)))
            + (sum over t of mse(h(t), h(t-1))) / 2 + 0.01 * sum(W * W))
""",
        seed=3,
        I=2,
        H=3,
    )
    plain = model.compile("reference", "float64")
    for tau, k in [(7, 3), (6, 1), (5, 5)]:
        fn = model.compile("reference", "float64", bptt_checkpoint=k)
        assert_same(model, fn, plain, tau)


def test_input_grads_off_returns_parameters_only():
    model = gr.load(ROOT / "models/char_lstm.grnn", seed=0, V=3, H=4)
    fn = model.compile("reference", "float64", bptt_checkpoint=2, input_grads=False)
    plain = model.compile("reference", "float64", input_grads=False)
    assert_same(model, fn, plain, tau=5)
    inputs, targets = random_data(model, 5, 2, 0)
    assert set(fn.loss_and_grad(model.params, inputs, targets)[1]) == set(model.params)


def test_numba_matches_plain_bptt():
    model = gr.load(ROOT / "models/lstm.grnn", seed=1, **SIZES)
    plain = model.compile("reference", "float64")
    fn = model.compile("numba", "float64", bptt_checkpoint=3)
    assert isinstance(fn, SegmentedBPTT) and fn.backend == "numba"
    for tau in (8, 3, 1):  # k not dividing T, k = T, k > T; one compiled segment graph
        assert_same(model, fn, plain, tau)


def test_forward_is_the_plain_forward():
    model = gr.load(ROOT / "models/elman.grnn", seed=1, **SIZES)
    inputs, _ = random_data(model, 6, 2, 0)
    plain = model.compile("reference").forward(model.params, inputs)
    outs = model.compile("reference", bptt_checkpoint=2).forward(model.params, inputs)
    assert outs.keys() == plain.keys()
    assert all(np.array_equal(outs[k], plain[k]) for k in plain)


def test_segment_graph_carries_each_state_once():
    model = gr.load(ROOT / "models/lstm.grnn", **SIZES)
    segment = build_segment_graph(model.graph)
    assert sorted(c.label for c in segment.carries) == ["h.C", "h.h"]
    assert set(segment.graph.outputs) == {c.output for c in segment.carries}
    assert "bptt.first" in segment.graph.inputs
    assert not any(name.startswith("bptt.") for name in model.graph.inputs)  # untouched


def test_segment_length_and_bounds():
    assert [segment_length(t) for t in (1, 2, 4, 5, 1000, 4000)] == [1, 2, 2, 3, 32, 64]
    assert segments(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert segments(3, 8) == [(0, 3)]


@pytest.mark.parametrize(
    "path, words",
    [
        ("models/birnn.grnn", "backwards in time"),
        ("models/deep_birnn.grnn", "backwards in time"),
        ("models/many_to_one.grnn", "h(end)"),
        ("models/lstm_classifier.grnn", "h(end)"),
        ("models/lstm_masked.grnn", "masked mean"),
        (GRID, "exactly one sequence axis"),
    ],
)
def test_unsupported_models_are_named(path, words):
    if path == GRID:
        model = gr.loads(GRID, C=2, H=3)
    else:
        model = gr.load(ROOT / path, I=3, H=3, O=3)
    with pytest.raises(gr.GraphRNNError, match="bptt_checkpoint") as error:
        model.compile("reference", bptt_checkpoint=2)
    assert words in str(error.value)
    assert "without bptt_checkpoint" in str(error.value)


@pytest.mark.parametrize(
    "body, words",
    [
        ("h(t) = tanh(W @ h(t-2) + U @ x(t))", "2 steps back"),
        ("h(t) = tanh(W @ h(t-1) + U @ x(t))\n    q = mean over t of h", None),
    ],
)
def test_unsupported_equations_are_named(body, words):
    loss = "loss = mean over t of mse(h(t), y(t))"
    if words is None:  # a whole-sequence value inside the per-step term
        loss, words = "loss = mean over t of mse(h(t) - q, y(t))", "inside a per-step term"
    text = f"""
model M(I, H):
    input x[I] over t
    target y[H] over t
    param W[H, H]
    param U[H, I]
    h(0) = zeros(H)
    {body}
    {loss}
"""
    model = gr.loads(text, I=2, H=3)
    with pytest.raises(gr.GraphRNNError, match=words):
        model.compile("reference", bptt_checkpoint=2)


@pytest.mark.parametrize("k", [0, -1, True, 2.5, "sqrt"])
def test_bad_segment_lengths(k):
    model = gr.load(ROOT / "models/elman.grnn", **SIZES)
    with pytest.raises(gr.GraphRNNError, match="positive integer or 'auto'"):
        model.compile("reference", bptt_checkpoint=k)


def test_sequences_of_different_lengths_are_a_data_error():
    model = gr.load(ROOT / "models/elman.grnn", **SIZES)
    fn = model.compile("reference", bptt_checkpoint=2)
    inputs, targets = random_data(model, 5, 2, 0)
    targets["y"] = targets["y"][:4]
    with pytest.raises(gr.DataError, match="4 steps"):
        fn.loss_and_grad(model.params, inputs, targets)


def test_cli_option_parses():
    args = ["train", "m.grnn", "--task", "chars", "--bptt-checkpoint"]
    assert build_parser().parse_args([*args, "16"]).bptt_checkpoint == 16
    assert build_parser().parse_args([*args, "auto"]).bptt_checkpoint == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*args, "0"])


def test_chars_training_is_unchanged_by_checkpointing(tmp_path):
    """The same run with and without --bptt-checkpoint: the same validation loss."""
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat. " * 20, encoding="utf-8")
    records = []
    for extra in ([], ["--bptt-checkpoint", "3"]):
        run = tmp_path / f"run{len(records)}"
        args = [
            "train", str(ROOT / "models/char_lstm.grnn"), "--task", "chars", "--text", str(text),
            "--dim", "H=6", "--epochs", "1", "--batch", "4", "--seq-len", "10",
            "--backend", "reference", "--dtype", "float64", "--out", str(run), *extra,
        ]  # fmt: skip
        assert main(args) == 0
        lines = (run / "metrics.jsonl").read_text().splitlines()
        records.append([r for r in map(json.loads, lines) if r["event"] == "epoch"][-1])
    assert relative_error(records[1]["val_loss"], records[0]["val_loss"]) < 1e-9
