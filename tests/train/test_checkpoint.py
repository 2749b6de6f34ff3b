import json
import os

import numpy as np
import pytest

from graphrnn.errors import DataError, GraphRNNError
from graphrnn.train import checkpoint as ckpt
from graphrnn.train.checkpoint import load_checkpoint, save_checkpoint
from graphrnn.train.optim import Adam


@pytest.fixture
def state():
    rng = np.random.default_rng(0)
    params = {
        "W": rng.normal(size=(4, 3)),
        "cell/b": rng.normal(size=3).astype(np.float32),
        "scale": np.array(2.5),
    }
    opt = Adam(lr=0.01)
    opt.step(params, {k: np.ones_like(v) for k, v in params.items()})
    meta = {"model": "models/lstm.rnn", "sizes": {"hidden": 3}, "step": 7, "epoch": 1}
    return params, opt.state_dict(), meta


def _files(directory):
    return sorted(p.name for p in directory.iterdir())


def test_roundtrip(tmp_path, state):
    params, opt_state, meta = state
    path = tmp_path / "run.npz"
    save_checkpoint(path, params, opt_state, meta)
    got_params, got_opt, got_meta = load_checkpoint(path)
    assert got_params.keys() == params.keys()
    for k in params:
        np.testing.assert_array_equal(got_params[k], params[k])
        assert got_params[k].dtype == params[k].dtype
    assert got_opt["name"] == "adam" and got_opt["t"] == 1 and got_opt["lr"] == 0.01
    assert isinstance(got_opt["t"], int)
    np.testing.assert_array_equal(got_opt["m/cell/b"], opt_state["m/cell/b"])
    assert isinstance(got_opt["v/scale"], np.ndarray)
    for key, value in meta.items():
        assert got_meta[key] == value
    assert got_meta["format"] == "graphrnn-checkpoint" and got_meta["format_version"] == 1
    assert "graphrnn_version" in got_meta
    assert _files(tmp_path) == ["run.npz"]


def test_resumed_optimizer_matches(tmp_path, state):
    params, opt_state, meta = state
    save_checkpoint(tmp_path / "c.npz", params, opt_state, meta)
    _, got_opt, _ = load_checkpoint(tmp_path / "c.npz")
    opt = Adam(lr=0.01)
    opt.load_state_dict(got_opt)
    assert opt.state_dict().keys() == opt_state.keys()


def test_meta_numpy_values_and_bad_meta(tmp_path, state):
    params, opt_state, _ = state
    save_checkpoint(tmp_path / "c.npz", params, opt_state, {"step": np.int64(3)})
    assert load_checkpoint(tmp_path / "c.npz")[2]["step"] == 3
    with pytest.raises(GraphRNNError, match="JSON"):
        save_checkpoint(tmp_path / "d.npz", params, opt_state, {"f": object()})


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.npz does not exist.*without resume"):
        load_checkpoint(tmp_path / "nope.npz")


def test_truncated_file(tmp_path, state):
    path = tmp_path / "c.npz"
    save_checkpoint(path, *state)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"c\.npz is truncated or corrupt.*earlier checkpoint"):
        load_checkpoint(path)


def test_corrupted_bytes(tmp_path, state):
    path = tmp_path / "c.npz"
    save_checkpoint(path, *state)
    data = bytearray(path.read_bytes())
    with np.load(path) as archive:
        assert "param/W" in archive.files
    start = data.index(b"param/W.npy") + 200
    data[start : start + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_empty_file(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        load_checkpoint(tmp_path / "c.npz")


def test_wrong_format(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(DataError, match="not a graphrnn checkpoint"):
        load_checkpoint(tmp_path / "a.npy")
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    with pytest.raises(DataError, match=r"plain\.npz is an \.npz archive but not a graphrnn"):
        load_checkpoint(tmp_path / "plain.npz")
    np.savez(tmp_path / "other.npz", __meta__=np.array(json.dumps({"format": "x"})))
    with pytest.raises(DataError, match="not a graphrnn checkpoint"):
        load_checkpoint(tmp_path / "other.npz")
    with pytest.raises(DataError, match="is not a file"):
        load_checkpoint(tmp_path)


def test_newer_format_version(tmp_path):
    meta = {"format": "graphrnn-checkpoint", "format_version": 99}
    np.savez(tmp_path / "c.npz", __meta__=np.array(json.dumps(meta)))
    with pytest.raises(DataError, match="upgrade graphrnn"):
        load_checkpoint(tmp_path / "c.npz")


def test_nonfinite_params_on_load(tmp_path, state):
    params, opt_state, meta = state
    save_checkpoint(tmp_path / "c.npz", params, opt_state, meta)
    with np.load(tmp_path / "c.npz") as archive:
        entries = {k: archive[k] for k in archive.files}
    entries["param/W"] = entries["param/W"].copy()
    entries["param/W"][2, 1] = np.nan
    np.savez(tmp_path / "c.npz", **entries)
    with pytest.raises(DataError, match=r"parameter 'W' has nan at index \(2, 1\)"):
        load_checkpoint(tmp_path / "c.npz")


def test_nonfinite_params_are_not_saved(tmp_path, state):
    params, opt_state, meta = state
    path = tmp_path / "c.npz"
    save_checkpoint(path, params, opt_state, meta)
    before = path.read_bytes()
    bad = {**params, "W": np.full((4, 3), np.inf)}
    with pytest.raises(DataError, match="refusing to save.*'W' has inf"):
        save_checkpoint(path, bad, opt_state, meta)
    assert path.read_bytes() == before


def test_crash_during_savez_keeps_previous(tmp_path, state, monkeypatch):
    params, opt_state, meta = state
    path = tmp_path / "c.npz"
    save_checkpoint(path, params, opt_state, meta)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(DataError, match="disk full; the previous checkpoint is kept"):
        save_checkpoint(path, {"W": np.zeros(1)}, {}, {"step": 99})
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["c.npz"]


def test_crash_mid_write_keeps_previous(tmp_path, state, monkeypatch):
    """A partial archive is written, then the process dies before the rename."""
    params, opt_state, meta = state
    path = tmp_path / "c.npz"
    save_checkpoint(path, params, opt_state, meta)
    real_savez = np.savez

    def half_then_crash(file, **entries):
        real_savez(file, **entries)
        file.truncate(file.tell() // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"W": np.zeros(1)}, {}, {"step": 99})
    got, _, got_meta = load_checkpoint(path)
    assert got_meta["step"] == 7
    np.testing.assert_array_equal(got["W"], params["W"])
    assert _files(tmp_path) == ["c.npz"]


def test_crash_in_replace_keeps_previous(tmp_path, state, monkeypatch):
    params, opt_state, meta = state
    path = tmp_path / "c.npz"
    save_checkpoint(path, params, opt_state, meta)
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(DataError, match="power cut; the previous checkpoint is kept"):
        save_checkpoint(path, params, opt_state, {"step": 8})
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["c.npz"]


def test_creates_directory(tmp_path, state):
    path = tmp_path / "runs" / "a" / "c.npz"
    save_checkpoint(path, *state)
    assert load_checkpoint(os.fspath(path))[2]["step"] == 7


def test_state_roundtrip_and_old_checkpoints(tmp_path, state):
    """Running statistics go in `state/<name>`; a checkpoint without them reads as an empty
    state, and the three-value load_checkpoint is unchanged."""
    params, opt_state, meta = state
    running = {"c1.bn.running_mean": np.arange(3.0), "c1.bn.running_var": np.ones(3, np.float32)}
    save_checkpoint(tmp_path / "c.npz", params, opt_state, meta, running)
    got_params, _, _, got_state = load_checkpoint(tmp_path / "c.npz", with_state=True)
    assert got_params.keys() == params.keys() and got_state.keys() == running.keys()
    for k, v in running.items():
        np.testing.assert_array_equal(got_state[k], v)
        assert got_state[k].dtype == v.dtype
    assert len(load_checkpoint(tmp_path / "c.npz")) == 3
    save_checkpoint(tmp_path / "old.npz", params, opt_state, meta)
    assert load_checkpoint(tmp_path / "old.npz", with_state=True)[3] == {}


def test_nonfinite_state_is_refused(tmp_path, state):
    params, opt_state, meta = state
    bad = {"bn.running_var": np.array([1.0, np.nan])}
    with pytest.raises(DataError, match="running statistic 'bn.running_var' has nan"):
        save_checkpoint(tmp_path / "c.npz", params, opt_state, meta, bad)
    assert not (tmp_path / "c.npz").exists()
