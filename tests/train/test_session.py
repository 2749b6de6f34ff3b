"""`graphrnn train` and `graphrnn sample` end to end on short runs of the built-in tasks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from graphrnn.cli import main
from graphrnn.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _epochs(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == "epoch"]


def test_train_digits_smoke_then_resume(tmp_path, capsys):
    run = tmp_path / "digits"
    args = [
        "train", str(ROOT / "models/lstm_classifier.grnn"), "--task", "digits",
        "--dim", "H=8", "--epochs", "1", "--batch", "64", "--backend", "reference",
        "--out", str(run),
    ]  # fmt: skip
    assert main(args) == 0
    assert "val_acc" in capsys.readouterr().out
    assert (run / "curves.png").stat().st_size > 0
    first = _epochs(run)
    assert len(first) == 1 and 0.0 <= first[0]["val_acc"] <= 1.0
    params, _, meta = load_checkpoint(run / "checkpoint.npz")
    assert meta["task"] == "digits" and params["h.Wf"].shape == (8, 16)
    assert main([*args[:-4], "--epochs", "2", "--backend", "reference", "--out", str(run),
                 "--resume"]) == 0  # fmt: skip
    assert [r["epoch"] for r in _epochs(run)] == [1, 2]


def test_train_adding_smoke(tmp_path):
    run = tmp_path / "adding"
    args = [
        "train", str(ROOT / "models/lstm_regressor.grnn"), "--task", "adding",
        "--dim", "H=4", "--epochs", "1", "--steps", "10", "--n-train", "64",
        "--backend", "reference", "--out", str(run),
    ]  # fmt: skip
    assert main(args) == 0
    (record,) = _epochs(run)
    assert np.isfinite(record["val_loss"])


def test_chars_train_then_sample(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat. " * 40, encoding="utf-8")
    run = tmp_path / "chars"
    args = [
        "train", str(ROOT / "models/char_lstm.grnn"), "--task", "chars", "--text", str(text),
        "--dim", "H=8", "--epochs", "1", "--batch", "4", "--seq-len", "10",
        "--backend", "reference", "--out", str(run),
    ]  # fmt: skip
    assert main(args) == 0
    (record,) = _epochs(run)
    assert record["val_loss"] < np.log(8)  # better than uniform over the 8 characters
    capsys.readouterr()
    sample = ["sample", str(run / "checkpoint.npz"), "--prime", "the ", "--length", "20"]
    assert main(sample) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("the ") and len(out) == 24
    assert set(out) <= set("the cat sat on the mat. ")


def test_unknown_task_is_a_clear_error(tmp_path, capsys):
    args = ["train", str(ROOT / "models/lstm.grnn"), "--task", "addding", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "did you mean 'adding'" in capsys.readouterr().err


def test_sample_from_a_missing_checkpoint(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "nope.npz")]) == 2
    assert "nope.npz" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["H", "H=x", "=4"])
def test_bad_dim_option(bad, capsys):
    assert main(["check", str(ROOT / "models/elman.grnn"), "--dim", bad]) == 2
    assert "--dim expects NAME=INTEGER" in capsys.readouterr().err


def _captured_config(monkeypatch, args):
    """The TrainConfig `graphrnn train ARGS` would run (the run itself is replaced)."""
    import graphrnn.train.session as session

    seen = []
    monkeypatch.setattr(session, "run", lambda config: (seen.append(config), (None, {}))[1])
    assert main(args) == 0
    return seen[0]


def test_data_folder_alone_trains_faces_with_the_seeds_settings(tmp_path, monkeypatch):
    model = str(ROOT / "models/spatial_rnn_sex.grnn")
    config = _captured_config(monkeypatch, ["train", model, "--data", str(tmp_path)])
    assert config.task == "faces" and config.data == str(tmp_path)
    assert (config.optimizer, config.lr, config.momentum) == ("momentum", 0.01, 0.9)
    assert (config.weight_decay, config.batch) == (0.0005, 128)
    given = ["train", model, "--data", str(tmp_path), "--batch", "16", "--optimizer", "adam"]
    config = _captured_config(monkeypatch, given)
    assert (config.batch, config.optimizer, config.weight_decay) == (16, "adam", 0.0005)


def test_other_tasks_keep_adam_at_batch_32(monkeypatch):
    args = ["train", str(ROOT / "models/lstm_classifier.grnn"), "--task", "digits"]
    config = _captured_config(monkeypatch, args)
    assert (config.optimizer, config.batch, config.weight_decay) == ("adam", 32, 0.0)


def test_train_without_task_or_data_is_a_clear_error(capsys):
    assert main(["train", str(ROOT / "models/lstm.grnn")]) == 2
    assert "give --task" in capsys.readouterr().err
