"""Truncated BPTT with carried states (graphrnn/train/tbptt.py) and `graphrnn train --tbptt`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphrnn as gr
from graphrnn.cli import main
from graphrnn.train.checkpoint import load_checkpoint
from graphrnn.train.tbptt import CarriedState, check_carries, chunked, chunks, last_chunk_grad

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"I": 2, "H": 4, "O": 3}


def sequences(T: int, B: int, per_step: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T, B, SIZES["I"]))
    shape = (T, B) if per_step else (B,)
    return x, np.eye(SIZES["O"])[rng.integers(0, SIZES["O"], shape)]


def test_chunks_cover_the_sequence():
    assert chunks(7, 3) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert chunks(2, 5) == [slice(0, 2)]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(gr.GraphRNNError, match="positive integer"):
            chunks(4, bad)


def test_carried_state_continues_the_sequence_and_resets():
    model = gr.load(ROOT / "models/lstm.grnn", seed=1, **SIZES)
    fn = model.compile("reference")
    x, y = sequences(8, 3, per_step=True)
    step = CarriedState(fn)
    seen = list(chunked([({"x": x}, {"y": y})] * 2, fn, 3))
    assert [first for first, _, _ in seen] == [True, False, False] * 2
    assert [i["x"].shape[0] for _, i, _ in seen] == [3, 3, 2] * 2
    for first, inputs, targets in seen[:4]:
        before = step.state
        loss, grads = step(model.params, inputs, targets, reset=first)
        initial = None if first else before
        want = fn.loss_and_grad(model.params, inputs, targets, initial=initial)
        assert loss == want[0] and all(np.array_equal(grads[k], want[1][k]) for k in grads)
    # after the reset, the 4th chunk starts again from h(0) = 0: the whole sequence's step 1-3
    _, state = fn.forward(model.params, {"x": x[:3]}, final=True)
    assert all(np.array_equal(step.state[k], state[k]) for k in state)


def test_a_batch_of_another_size_starts_afresh():
    model = gr.load(ROOT / "models/elman.grnn", seed=2, **SIZES)
    fn = model.compile("reference")
    step = CarriedState(fn)
    x, y = sequences(3, 3, per_step=True)
    step(model.params, {"x": x}, {"y": y})
    x2, y2 = sequences(3, 2, per_step=True, seed=1)
    loss, _ = step(model.params, {"x": x2}, {"y": y2})
    assert loss == fn.loss(model.params, {"x": x2}, {"y": y2})


def test_last_chunk_gradient_of_a_many_to_one_loss():
    model = gr.load(ROOT / "models/lstm_classifier.grnn", seed=3, **SIZES)
    fn = model.compile("reference")
    x, y = sequences(9, 4, per_step=False)
    full_loss, full = fn.loss_and_grad(model.params, {"x": x}, {"y": y})
    loss, grads = last_chunk_grad(fn, 9)(model.params, {"x": x}, {"y": y})
    assert loss == full_loss and all(np.array_equal(grads[k], full[k]) for k in full)
    loss, grads = last_chunk_grad(fn, 4)(model.params, {"x": x}, {"y": y})
    assert abs(loss - full_loss) < 1e-12  # the forward pass is exact: the loss is the same
    _, state = fn.forward(model.params, {"x": x[:8]}, final=True)
    _, want = fn.loss_and_grad(model.params, {"x": x[8:]}, {"y": y}, initial=state)
    assert all(np.max(np.abs(grads[k] - want[k])) < 1e-12 for k in want)
    differs = max(np.max(np.abs(grads[k] - full[k])) for k in full if k != "x")
    assert differs > 1e-4  # truncated 4 steps back: not full BPTT


@pytest.mark.parametrize(
    "path, sizes, words",
    [
        ("models/birnn.grnn", SIZES, "'h.bw.h' runs backwards in time"),
        ("models/spatial_rnn_sex.grnn", {"HI": 32, "WI": 32, "K": 2}, "cuts one sequence axis"),
    ],
)
def test_models_that_cannot_carry_a_state_are_refused(path, sizes, words):
    fn = gr.load(ROOT / path, **sizes).compile("reference")
    with pytest.raises(gr.GraphRNNError, match=words):
        check_carries(fn)


def test_per_step_targets_are_not_trained_from_the_last_chunk():
    fn = gr.load(ROOT / "models/elman.grnn", **SIZES).compile("reference")
    with pytest.raises(gr.GraphRNNError, match="target at every step"):
        last_chunk_grad(fn, 2)


def test_train_adding_with_tbptt(tmp_path):
    run = tmp_path / "adding"
    args = [
        "train", str(ROOT / "models/lstm_regressor.grnn"), "--task", "adding", "--dim", "H=4",
        "--epochs", "1", "--steps", "12", "--n-train", "64", "--backend", "reference",
        "--tbptt", "5", "--out", str(run),
    ]  # fmt: skip
    assert main(args) == 0
    _, _, meta = load_checkpoint(run / "checkpoint.npz")
    assert meta["tbptt"] == 5 and meta["step"] == 2


CORPUS = "the cat sat on the mat. " * 10


def train_chars(tmp_path: Path, model: Path, name: str, *options: str) -> Path:
    """`graphrnn train MODEL --task chars` on CORPUS, batch 4, H = 4; the run directory."""
    text = tmp_path / "text.txt"
    text.write_text(CORPUS, encoding="utf-8")
    run = tmp_path / name
    args = ["train", str(model), "--task", "chars", "--text", str(text), "--dim", "H=4"]
    args += ["--batch", "4", "--backend", "reference", "--out", str(run), *options]
    assert main(args) == 0
    return run


def test_chars_chunk_length_is_the_tbptt_length(tmp_path):
    steps = {}
    for k in ("5", "10"):
        run = train_chars(
            tmp_path, ROOT / "models/char_lstm.grnn", k, "--epochs", "1", "--tbptt", k
        )
        steps[k] = load_checkpoint(run / "checkpoint.npz")[2]["step"]
    rows = (len(CORPUS) - 24 - 1) // 4  # the train part (90% of the text), per row
    assert steps == {"5": rows // 5, "10": rows // 10}


def test_tbptt_on_an_image_task_is_refused(tmp_path, capsys):
    args = [
        "train", str(ROOT / "models/spatial_rnn_sex.grnn"), "--task", "digit_images",
        "--tbptt", "4", "--backend", "reference",
        "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    assert main(args) == 2
    assert "cuts one sequence axis" in capsys.readouterr().err


def test_chars_trains_and_samples_a_model_without_init_inputs(tmp_path, capsys):
    """models/elman.grnn over a vocabulary starts from h(0) = zeros(H), with no `*_init`
    input: its state is carried all the same, in training and in sampling."""
    elman = (ROOT / "models/elman.grnn").read_text()
    renames = [("V[O, H]", "Wo[V, H]"), ("V @", "Wo @"), ("Elman(I, H, O)", "Elman(V, H)")]
    for old, new in [*renames, ("[H, I]", "[H, V]"), ("x[I]", "x[V]"), ("O]", "V]")]:
        elman = elman.replace(old, new)
    model = tmp_path / "char_elman.grnn"
    model.write_text(elman, encoding="utf-8")
    run = train_chars(tmp_path, model, "run", "--epochs", "2", "--tbptt", "8")
    capsys.readouterr()
    assert main(["sample", str(run / "checkpoint.npz"), "--prime", "the", "--length", "5"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("the") and len(out) == 8 and set(out) <= set(CORPUS)
    # the carried state: each character is drawn as from a forward pass over all before it
    from graphrnn.train.sample import sample_text

    drawn = sample_text(str(run / "checkpoint.npz"), 12, "the", 1.0, seed=3)
    trained = gr.load_checkpoint(run / "checkpoint.npz")
    fn, vocab, rng = trained.compile("reference"), trained.meta["vocab"], np.random.default_rng(3)
    for i in range(3, len(drawn)):
        x = np.eye(len(vocab))[[vocab.index(c) for c in drawn[:i]]][:, None, :]
        logits = fn.forward(trained.params, {"x": x})["o"][-1, 0]
        p = np.exp(logits - logits.max())
        assert drawn[i] == vocab[int(rng.choice(len(vocab), p=p / p.sum()))]
