"""Issue 12's training and command-line cases: runs never lose work, diverging runs stop,
bad files and options are clear errors naming the option or file, checkpoints carry their
model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import graphrnn as gr
from graphrnn.cli import main
from graphrnn.errors import DataError
from graphrnn.train.checkpoint import load_checkpoint, save_checkpoint
from graphrnn.train.loop import train
from graphrnn.train.optim import Adam, Momentum

ROOT = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 3))
Y = X @ np.array([[1.5], [-2.0], [0.5]]) + 0.3
INIT = {"W": np.zeros((3, 1)), "b": np.zeros(1)}


def linreg(params, batch):
    x, y = batch
    err = x @ params["W"] + params["b"] - y
    return 0.5 * float(np.mean(err**2)), {"W": x.T @ err / len(x), "b": err.sum(0) / len(x)}


BATCHES = [(X[k : k + 8], Y[k : k + 8]) for k in range(0, 64, 8)]


def _adding(out: Path, *extra: str) -> list[str]:
    return [
        "train", str(ROOT / "models/lstm_regressor.grnn"), "--task", "adding",
        "--dim", "H=3", "--epochs", "1", "--steps", "5", "--n-train", "32",
        "--backend", "reference", "--out", str(out), *extra,
    ]  # fmt: skip


# item 3 -------------------------------------------------------------------------------
def test_adam_that_diverges_finitely_stops_with_the_figures(tmp_path):
    with pytest.raises(DataError) as info:
        train(linreg, INIT, BATCHES, optimizer=Adam(lr=1e6), epochs=20, progress=False)
    text = str(info.value)
    assert "the loss grew from" in text and "the run diverged" in text
    assert "try a lower learning rate (now 1e+06)" in text


def test_a_converging_run_is_not_called_diverged():
    history = train(linreg, INIT, BATCHES, optimizer=Adam(lr=0.05), epochs=20, progress=False)
    assert history.losses[-1] < history.losses[0]


# item 9 -------------------------------------------------------------------------------
def test_train_into_an_existing_run_refuses_and_names_the_flags(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_adding(out)) == 0
    before = {p: (out / p).read_bytes() for p in ("checkpoint.npz", "metrics.jsonl")}
    capsys.readouterr()
    assert main(_adding(out)) == 2
    err = capsys.readouterr().err
    assert "already holds a run (checkpoint.npz, metrics.jsonl)" in err
    assert "--resume" in err and "--overwrite" in err
    assert {p: (out / p).read_bytes() for p in before} == before
    assert main(_adding(out, "--overwrite")) == 0
    assert len([json.loads(line) for line in (out / "metrics.jsonl").open()]) >= 1
    assert main(_adding(out, "--resume", "--overwrite")) == 2


def test_an_unwritable_out_is_named(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(_adding(blocker / "run")) == 2
    err = capsys.readouterr().err
    assert f"cannot write to the run directory {blocker / 'run'}" in err and "--out" in err


# item 10 ------------------------------------------------------------------------------
def test_stale_temp_files_of_killed_saves_are_removed(tmp_path):
    ckpt = tmp_path / "checkpoint.npz"
    for k in range(3):
        (tmp_path / f".checkpoint.npz.abc{k}.tmp").write_bytes(b"x" * 100)
    (tmp_path / "keep.tmp").write_bytes(b"mine")
    train(linreg, INIT, BATCHES, optimizer=Momentum(lr=0.01), epochs=1, progress=False,
          checkpoint_path=ckpt)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "keep.tmp"]


def _steps(log: Path) -> list[int]:
    return [r["step"] for r in map(json.loads, log.open()) if r["event"] == "train"]


def test_step_events_after_resumes_fall_on_the_same_steps(tmp_path):
    kw = dict(optimizer="sgd", epochs=4, progress=False, log_every=5, checkpoint_every=3)
    train(linreg, INIT, BATCHES, log_path=tmp_path / "whole.jsonl", **kw)

    calls = {"n": 0}

    def dies_at(limit):
        def step(params, batch):
            calls["n"] += 1
            if calls["n"] == limit:
                raise KeyboardInterrupt
            return linreg(params, batch)

        return step

    ckpt, log = tmp_path / "c.npz", tmp_path / "cut.jsonl"
    for limit, resume in ((8, False), (9, True)):
        calls["n"] = 0
        with pytest.raises(KeyboardInterrupt):
            train(dies_at(limit), INIT, BATCHES, checkpoint_path=ckpt, log_path=log,
                  resume=resume, **kw)  # fmt: skip
    train(linreg, INIT, BATCHES, checkpoint_path=ckpt, log_path=log, resume=True, **kw)
    assert _steps(log) == _steps(tmp_path / "whole.jsonl") == list(range(5, 33, 5))


# item 12 ------------------------------------------------------------------------------
def test_the_progress_bar_ends_with_the_last_validation(capsys):
    figures = iter([0.111, 0.222, 0.333])
    train(linreg, INIT, BATCHES, optimizer="sgd", epochs=3, progress=True,
          validate=lambda params: {"loss": next(figures)})  # fmt: skip
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "val_loss=0.333" in last


# item 11 ------------------------------------------------------------------------------
def test_a_checkpoint_carries_its_model(tmp_path, capsys):
    model_file = tmp_path / "char.grnn"
    shutil.copy(ROOT / "models/char_lstm.grnn", model_file)
    text = tmp_path / "text.txt"
    text.write_text("abc abd " * 30, encoding="utf-8")
    out = tmp_path / "run"
    args = [
        "train", str(model_file), "--task", "chars", "--text", str(text), "--dim", "H=4",
        "--epochs", "1", "--batch", "2", "--seq-len", "8", "--backend", "reference",
        "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    ckpt = out / "checkpoint.npz"
    _, _, meta = load_checkpoint(ckpt)
    assert meta["model_text"] == model_file.read_text() and meta["model_name"] == "CharLSTM"
    original = gr.load_checkpoint(ckpt)
    model_file.write_text(model_file.read_text().replace("tanh(C(t))", "C(t)"))
    capsys.readouterr()
    with pytest.warns(UserWarning, match="has changed since"):
        edited = gr.load_checkpoint(ckpt)
    model_file.unlink()
    alone = gr.load_checkpoint(ckpt)
    for model in (edited, alone):
        assert model.text == original.text and set(model.params) == set(original.params)
        for name, value in original.params.items():
            np.testing.assert_array_equal(model.params[name], value)
    sample = ["sample", str(ckpt), "--prime", "ab", "--length", "5"]
    assert main(sample) == 0
    assert capsys.readouterr().out.strip().startswith("ab")


# item 6 (options) ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, option",
    [
        (["check", "models/elman.grnn", "--tau", "-3"], "--tau"),
        (["check", "models/elman.grnn", "--batch", "0"], "--batch"),
        (["sample", "c.npz", "--length", "-5"], "--length"),
        (["sample", "c.npz", "--temperature", "nan"], "--temperature"),
        (["train", "m.grnn", "--task", "adding", "--lr", "inf"], "--lr"),
        (["train", "m.grnn", "--task", "adding", "--batch", "0"], "--batch"),
    ],
)
def test_bad_option_values_name_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "Traceback" not in err


# item 7 -------------------------------------------------------------------------------
def test_missing_data_file_is_named(tmp_path, capsys):
    assert main(["train", "models/spatial_rnn_sex.grnn", "--data", str(tmp_path / "no.csv"),
                 "--out", str(tmp_path / "run")]) == 2  # fmt: skip
    assert f"--data {tmp_path / 'no.csv'} does not exist" in capsys.readouterr().err


def test_predict_reports_bad_images_and_keeps_the_good_ones(tmp_path, capsys, monkeypatch):
    from graphrnn.train.session import TrainConfig, run
    from tests.train.test_images import MODEL, TINY, _faces

    folder = _faces(tmp_path / "faces")
    config = TrainConfig(MODEL, "faces", sizes=dict(TINY), epochs=1, batch=4,
                         backend="reference", dtype="float64", out=str(tmp_path / "run"),
                         data=str(folder), progress=False)  # fmt: skip
    with pytest.warns(UserWarning):
        run(config)
    good = str(sorted(folder.glob("2*.jpg"))[0])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    bad = [str(tmp_path / "missing.jpg"), str(folder / "30_1_0_corrupt.jpg"), str(empty)]
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run" / "checkpoint.npz"), bad[0], good, *bad[1:]]) == 2
    out, err = capsys.readouterr()
    assert out.startswith(good + ": male=")
    assert f"{bad[0]}: error: cannot read the image (no such file)" in err
    for path in bad[1:]:
        assert f"{path}: error: cannot read the image" in err


def test_byte_flipped_checkpoints_are_data_errors(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"W": np.ones((3, 2))}, {"t": 1}, {"step": 1, "epoch": 0})
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for position in rng.choice(len(data), 300, replace=False):
        flipped = bytearray(data)
        flipped[position] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(flipped))
        try:
            load_checkpoint(path)
        except DataError:
            pass


def test_an_os_error_anywhere_is_a_clear_message(monkeypatch, capsys):
    import errno

    import graphrnn.train.session as session

    def full(config):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/curves.png")

    monkeypatch.setattr(session, "run", full)
    assert main(["train", "models/elman.grnn", "--task", "adding"]) == 2
    err = capsys.readouterr().err
    assert "cannot use runs/x/curves.png: No space left on device" in err


def test_a_run_that_stopped_before_logging_anything_is_not_in_the_way(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("")
    assert main(_adding(out)) == 0
