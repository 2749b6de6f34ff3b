"""Image tasks: UTKFace-style folders and CSVs (bad files skipped with a warning), the
upscaled-digits task, one epoch of training end to end, and `graphrnn predict`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graphrnn.cli import main
from graphrnn.train import images
from graphrnn.train.checkpoint import load_checkpoint, save_checkpoint
from graphrnn.train.session import TrainConfig, run

MODEL = str(Path(__file__).resolve().parents[2] / "models" / "spatial_rnn_sex.grnn")
TINY = {"HI": 32, "WI": 32, "C1": 2, "C2": 2, "C3": 2, "C4": 2, "H1": 2, "H2": 2}


def _faces(folder: Path, n: int = 12) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(n):
        pixels = rng.integers(0, 256, size=(20 + k, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{20 + k}_{k % 2}_0_2017010{k % 10}.jpg")
    (folder / "30_1_0_corrupt.jpg").write_bytes(b"not a jpeg at all")
    Image.fromarray(pixels).save(folder / "31_7_0_20170101.jpg")  # gender 7: mislabelled
    Image.fromarray(pixels).save(folder / "noname.jpg")
    (folder / "notes.txt").write_text("ignored")
    return folder


def test_utkface_folder_skips_bad_files_with_one_warning(tmp_path):
    folder = _faces(tmp_path / "faces")
    with pytest.warns(UserWarning, match="skipped 3 file") as record:
        found = images.utkface_folder(folder, (16, 8))
    text = str(record[0].message)
    assert "corrupt" in text and "31_7_0" in text and "noname" in text
    assert found.x.shape == (12, 3, 16, 8) and found.classes == ("male", "female")
    assert list(found.labels) == [k % 2 for k in range(12)]
    assert 0 <= found.x.min() and found.x.max() <= 255
    a, b = images.split(found, 0.25, seed=3), images.split(found, 0.25, seed=3)
    assert a.x_train.shape[0] == 9 and a.x_test.shape[0] == 3
    np.testing.assert_array_equal(a.x_test, b.x_test)


def test_csv_of_paths_and_labels(tmp_path):
    folder = _faces(tmp_path / "faces", n=4)
    names = sorted(p.name for p in folder.glob("2*_0_*.jpg"))
    lines = ["path,label"] + [f"faces/{n},1" for n in names] + ["faces/missing.jpg,0", "x,y"]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="skipped 2 file"):
        found = images.load_faces(tmp_path / "labels.csv", (8, 8))
    assert list(found.labels) == [1] * len(names)


def test_faces_task_trains_one_epoch_and_predicts(tmp_path, capsys):
    folder = _faces(tmp_path / "faces")
    config = TrainConfig(
        MODEL,
        "faces",
        sizes=dict(TINY),
        epochs=1,
        batch=4,
        backend="reference",
        dtype="float64",
        out=str(tmp_path / "run"),
        data=str(folder),
        progress=False,
    )
    with pytest.warns(UserWarning, match="skipped 3"):
        history, last = run(config)
    assert np.isfinite(last["val_loss"]) and 0.0 <= last["val_acc"] <= 1.0
    photos = [str(p) for p in sorted(folder.glob("2*.jpg"))[:2]]
    assert main(["predict", str(tmp_path / "run" / "checkpoint.npz"), *photos]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[-2:]
    for line, photo in zip(lines, photos):
        assert line.startswith(photo + ": male=")
        probs = [float(part.split("=")[1]) for part in line.split(": ")[1].split(", ")]
        assert abs(sum(probs) - 1.0) < 1e-3


def test_digit_images_task_smoke(tmp_path):
    split = images.digit_images(16, seed=0)
    assert split.x_train.shape[1:] == (3, 16, 16) and split.y_train.shape[1] == 2
    config = TrainConfig(
        MODEL,
        "digit_images",
        sizes=dict(TINY),
        epochs=1,
        batch=32,
        backend="reference",
        dtype="float64",
        out=str(tmp_path / "run"),
        progress=False,
    )
    _, last = run(config)
    assert np.isfinite(last["val_loss"]) and last["val_acc"] > 0.5


TINY_BN = """
model TinyBN(HI = 8, WI = 8, K = 2, C = 3):
    input  img[3, HI, WI]
    target y[K]
    param Kc[C, 3, 3, 3] ~ kaiming
    param gamma[C]       ~ ones
    param beta[C]        ~ zeros
    param Ko[K, C, 1, 1] ~ kaiming
    h = relu(batchnorm2d(conv2d(img * 0.0078125, Kc, padding = 1), gamma, beta))
    o = global_avgpool(conv2d(h, Ko))
    loss = softmax_cross_entropy(o, y)
"""


def _digits_config(tmp_path, model: Path, out: str, epochs: int, resume=False) -> TrainConfig:
    return TrainConfig(
        str(model), "digit_images", sizes={"HI": 8, "WI": 8}, epochs=epochs, batch=64,
        backend="reference", dtype="float64", out=str(tmp_path / out), resume=resume,
        progress=False,
    )  # fmt: skip


def test_batch_norm_running_stats_resume_exactly_and_predict_per_image(tmp_path):
    """digit_images with a batch-norm model: the running statistics are updated every step,
    saved and resumed bit for bit; predict uses them, so an image alone is classified as in
    a batch; a checkpoint without them falls back to batch statistics with a warning."""
    model = tmp_path / "tiny_bn.grnn"
    model.write_text(TINY_BN)
    _, last = run(_digits_config(tmp_path, model, "full", 2))
    assert np.isfinite(last["val_loss"]) and 0.0 <= last["val_acc"] <= 1.0
    run(_digits_config(tmp_path, model, "part", 1))
    run(_digits_config(tmp_path, model, "part", 2, resume=True))
    full = load_checkpoint(tmp_path / "full" / "checkpoint.npz", with_state=True)
    part = load_checkpoint(tmp_path / "part" / "checkpoint.npz", with_state=True)
    assert sorted(full[3]) == ["gamma.running_mean", "gamma.running_var"]
    assert np.abs(full[3]["gamma.running_mean"]).min() > 0  # moved away from 0
    for saved, resumed in ((full[0], part[0]), (full[3], part[3])):
        assert saved.keys() == resumed.keys()
        for k in saved:
            np.testing.assert_array_equal(resumed[k], saved[k], err_msg=k)

    rng = np.random.default_rng(0)
    photos = []
    for k in range(3):
        photos.append(str(tmp_path / f"p{k}.png"))
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(photos[-1])
    checkpoint = tmp_path / "full" / "checkpoint.npz"
    together = images.predict(checkpoint, photos)
    for k, photo in enumerate(photos):
        ((path, alone),) = images.predict(checkpoint, [photo])
        assert path == photo
        for c, p in alone.items():
            assert p == pytest.approx(together[k][1][c], rel=1e-12, abs=1e-15)

    params, opt_state, meta = load_checkpoint(checkpoint)
    save_checkpoint(tmp_path / "old.npz", params, opt_state, meta)  # as before running stats
    with pytest.warns(UserWarning, match="no batch-norm running statistics.*one batch"):
        old = images.predict(tmp_path / "old.npz", photos)
    assert [p for p, _ in old] == photos
