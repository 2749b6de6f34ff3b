import json

import numpy as np
import pytest

from graphrnn.errors import DataError, GraphRNNError
from graphrnn.train.checkpoint import load_checkpoint, save_checkpoint
from graphrnn.train.datasets import minibatches
from graphrnn.train.loop import train
from graphrnn.train.metrics import MetricsLogger, plot_curves, read_jsonl
from graphrnn.train.optim import SGD, Adam, Momentum

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 3))
W_TRUE = np.array([[1.5], [-2.0], [0.5]])
Y = X @ W_TRUE + 0.3 + 0.01 * RNG.normal(size=(64, 1))
INIT = {"W": np.zeros((3, 1)), "b": np.zeros(1)}


def linreg(params, batch):
    """Half mean squared error of a linear model, with its exact gradient."""
    x, y = batch
    err = x @ params["W"] + params["b"] - y
    n = len(x)
    return 0.5 * float(np.mean(err**2)), {"W": x.T @ err / n, "b": err.sum(0) / n}


def shuffled(epoch):
    return minibatches(X, Y, 16, seed=42, epoch=epoch)


def fixed_batches():
    return list(minibatches(X, Y, 16))


def val_linreg(params):
    return {"loss": linreg(params, (X, Y))[0]}


def run(**kw):
    kw.setdefault("optimizer", Momentum(lr=0.05))
    kw.setdefault("progress", False)
    return train(linreg, INIT, kw.pop("batches", shuffled), **kw)


def test_fits_linear_regression():
    hist = run(epochs=40, validate=val_linreg)
    np.testing.assert_allclose(hist.params["W"], W_TRUE, atol=0.02)
    assert hist.step == 40 * 4 and hist.epoch == 40 and len(hist.losses) == 160
    assert [r["epoch"] for r in hist.epochs] == list(range(1, 41))
    assert hist.epochs[-1]["val_loss"] < 1e-3 < hist.epochs[0]["val_loss"]
    np.testing.assert_array_equal(INIT["W"], 0)


@pytest.mark.parametrize("make_opt", [lambda: Momentum(lr=0.05), lambda: Adam(lr=0.05)])
def test_resume_between_epochs_is_exact(tmp_path, make_opt):
    full = run(epochs=5, optimizer=make_opt(), validate=val_linreg)
    path = tmp_path / "c.npz"
    run(epochs=2, optimizer=make_opt(), validate=val_linreg, checkpoint_path=path)
    resumed = run(
        epochs=5, optimizer=make_opt(), validate=val_linreg, checkpoint_path=path, resume=True
    )
    assert resumed.resumed_from_step == 8 and len(resumed.losses) == 12
    for k in full.params:
        np.testing.assert_array_equal(resumed.params[k], full.params[k])
    assert resumed.epochs == full.epochs
    assert resumed.losses == full.losses[8:]


def test_resume_after_crash_mid_epoch_is_exact(tmp_path):
    full = run(epochs=3, batches=fixed_batches(), validate=val_linreg)
    calls = {"n": 0}

    def crashing(params, batch):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return linreg(params, batch)

    path = tmp_path / "c.npz"
    with pytest.raises(KeyboardInterrupt):
        train(
            crashing,
            INIT,
            fixed_batches(),
            optimizer=Momentum(lr=0.05),
            epochs=3,
            validate=val_linreg,
            checkpoint_path=path,
            checkpoint_every=3,
            log_path=tmp_path / "m.jsonl",
            log_every=1,
            progress=False,
        )
    meta = load_checkpoint(path)[2]
    assert (meta["step"], meta["epoch"], meta["batch_in_epoch"]) == (6, 1, 2)
    resumed = run(
        epochs=3,
        batches=fixed_batches(),
        validate=val_linreg,
        checkpoint_path=path,
        checkpoint_every=3,
        resume=True,
        log_path=tmp_path / "m.jsonl",
        log_every=1,
    )
    for k in full.params:
        np.testing.assert_array_equal(resumed.params[k], full.params[k])
    assert resumed.epochs == full.epochs
    steps = [e["step"] for e in read_jsonl(tmp_path / "m.jsonl") if e["event"] == "train"]
    assert steps == list(range(1, 13))


def test_resume_when_already_done(tmp_path):
    path = tmp_path / "c.npz"
    done = run(epochs=2, checkpoint_path=path)
    again = run(epochs=2, checkpoint_path=path, resume=True)
    assert again.losses == [] and again.step == done.step
    np.testing.assert_array_equal(again.params["W"], done.params["W"])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    path = tmp_path / "c.npz"

    def nan_at_step_7(params, batch, calls=[0]):  # noqa: B006
        calls[0] += 1
        loss, grads = linreg(params, batch)
        return (float("nan") if calls[0] == 7 else loss), grads

    with pytest.raises(DataError) as info:
        train(
            nan_at_step_7,
            INIT,
            fixed_batches(),
            optimizer=SGD(lr=0.05),
            epochs=3,
            checkpoint_path=path,
            checkpoint_every=5,
            progress=False,
        )
    message = str(info.value)
    assert "loss became nan at step 7 (epoch 2, batch 3)" in message
    assert "c.npz (step 5) is kept" in message
    assert "lower learning rate (now 0.05)" in message and "clip" in message
    params, _, meta = load_checkpoint(path)
    assert meta["step"] == 5 and np.all(np.isfinite(params["W"]))


def test_divergence_with_large_learning_rate(tmp_path):
    with np.errstate(all="ignore"), pytest.raises(DataError, match="lower learning rate"):
        run(epochs=200, optimizer=SGD(lr=50.0), checkpoint_path=tmp_path / "c.npz")
    assert np.all(np.isfinite(load_checkpoint(tmp_path / "c.npz")[0]["W"]))


def test_nonfinite_gradient_is_named():
    def bad_grad(params, batch):
        loss, grads = linreg(params, batch)
        grads["b"] = np.array([np.inf])
        return loss, grads

    with pytest.raises(DataError, match="gradient of 'b' became non-finite at step 1"):
        train(bad_grad, INIT, fixed_batches(), optimizer="sgd", epochs=1, progress=False)


def test_clipping_bounds_each_update():
    hist = run(epochs=1, optimizer=SGD(lr=1.0), clip=0.1, batches=fixed_batches()[:1])
    assert hist.grad_norms[0] > 0.1
    moved = np.sqrt(np.sum(hist.params["W"] ** 2) + np.sum(hist.params["b"] ** 2))
    assert moved == pytest.approx(0.1)


def test_bad_arguments(tmp_path):
    with pytest.raises(GraphRNNError, match="one-shot iterator"):
        run(epochs=2, batches=iter(fixed_batches()))
    with pytest.raises(GraphRNNError, match="needs a checkpoint_path"):
        run(epochs=1, resume=True)
    with pytest.raises(DataError, match="does not exist"):
        run(epochs=1, resume=True, checkpoint_path=tmp_path / "none.npz")
    with pytest.raises(DataError, match="epoch 1 had no batches"):
        run(epochs=1, batches=[])
    with pytest.raises(GraphRNNError, match="clip must be"):
        run(epochs=1, clip=0)
    with pytest.raises(GraphRNNError, match="unknown optimizer"):
        run(epochs=1, optimizer="lbfgs")


def test_resume_with_other_model_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    run(epochs=1, checkpoint_path=path)
    other = {"W": np.zeros((4, 1)), "b": np.zeros(1)}
    with pytest.raises(DataError, match="different model"):
        train(linreg, other, fixed_batches(), optimizer="sgd", epochs=2, resume=True,
              checkpoint_path=path, progress=False)  # fmt: skip


def test_checkpoint_meta(tmp_path):
    path = tmp_path / "c.npz"
    run(epochs=2, checkpoint_path=path, meta={"model": "models/linear.rnn", "sizes": {"d": 3}})
    _, opt_state, meta = load_checkpoint(path)
    assert meta["model"] == "models/linear.rnn" and meta["sizes"] == {"d": 3}
    assert (meta["step"], meta["epoch"]) == (8, 2)
    assert meta["param_shapes"] == {"W": [3, 1], "b": [1]}
    assert opt_state["name"] == "momentum" and "v/W" in opt_state


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def logreg(params, batch):
    x, y = batch
    p = sigmoid(x @ params["w"] + params["c"])
    loss = -np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))
    return float(loss), {"w": x.T @ (p - y) / len(x), "c": np.array([np.mean(p - y)])}


def test_logistic_regression_logs_and_plots(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] - x[:, 1] > 0).astype(float)
    x_val, y_val = x[150:], y[150:]

    def validate(params):
        p = sigmoid(x_val @ params["w"] + params["c"])
        return {"loss": logreg(params, (x_val, y_val))[0], "acc": np.mean((p > 0.5) == y_val)}

    log = tmp_path / "m.jsonl"
    batches = list(minibatches(x[:150], y[:150], 30))
    hist = train(logreg, {"w": np.zeros(2), "c": np.zeros(1)}, batches, optimizer=Adam(lr=0.1),
                 epochs=6, validate=validate, log_path=log, log_every=2, progress=True)  # fmt: skip
    assert hist.epochs[-1]["val_acc"] >= 0.9
    assert "step/s" in capsys.readouterr().err
    events = read_jsonl(log)
    kinds = [e["event"] for e in events]
    assert kinds.count("epoch") == 6 and kinds.count("train") == 15
    epoch_event = [e for e in events if e["event"] == "epoch"][-1]
    assert {"step", "epoch", "loss", "val_loss", "val_acc", "steps_per_s", "time"} <= set(
        epoch_event
    )
    plot_curves(log, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_metrics_logger_is_strict_json_and_flushed(tmp_path):
    path = tmp_path / "m.jsonl"
    logger = MetricsLogger(path)
    logger.log(step=1, loss=np.float32(0.5), val_loss=float("nan"))
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["loss"] == 0.5 and record["val_loss"] is None and "time" in record
    logger.close()
    with MetricsLogger(path, append=True) as again:
        again.log(step=2, loss=0.25)
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]


def test_plot_curves_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        plot_curves(tmp_path / "none.jsonl", tmp_path / "x.png")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="no events"):
        plot_curves(tmp_path / "empty.jsonl", tmp_path / "x.png")


def test_resume_refuses_foreign_checkpoints(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, INIT, {}, {"model": "x"})
    with pytest.raises(DataError, match="no training position"):
        run(epochs=1, checkpoint_path=path, resume=True)
    run(epochs=1, optimizer=Adam(), checkpoint_path=path)
    with pytest.raises(GraphRNNError, match="saved by 'adam' but this run uses 'sgd'"):
        run(epochs=2, optimizer="sgd", checkpoint_path=path, resume=True)


def test_validate_must_return_numbers():
    with pytest.raises(GraphRNNError, match="validate returned 'good' for 'acc'"):
        run(epochs=1, validate=lambda p: {"acc": "good"})


STATE = {"avg": np.zeros(3), "count": np.zeros(())}


def linreg_with_state(params, batch):
    """linreg, and an update of non-trainable state: a running average of the inputs."""
    loss, grads = linreg(params, batch)
    mean = batch[0].mean(axis=0)
    return loss, grads, lambda s: {"avg": 0.9 * s["avg"] + 0.1 * mean, "count": s["count"] + 1}


def test_state_is_updated_saved_and_resumed_exactly(tmp_path):
    seen = []

    def validate(params):
        seen.append(sorted(params))
        return val_linreg(params)

    kw = dict(optimizer="adam", validate=validate, progress=False)
    full = train(linreg_with_state, INIT, shuffled, epochs=4, state=STATE, **kw)
    assert full.state["count"] == 16 and seen[0] == ["W", "avg", "b", "count"]
    np.testing.assert_array_equal(STATE["avg"], 0)  # the given state is not modified
    path = tmp_path / "c.npz"
    train(linreg_with_state, INIT, shuffled, epochs=2, state=STATE, checkpoint_path=path, **kw)
    assert load_checkpoint(path, with_state=True)[3]["count"] == 8
    resumed = train(
        linreg_with_state, INIT, shuffled, epochs=4, state=STATE, checkpoint_path=path,
        resume=True, **kw,
    )  # fmt: skip
    for k in full.params:
        np.testing.assert_array_equal(resumed.params[k], full.params[k])
    for k in full.state:
        np.testing.assert_array_equal(resumed.state[k], full.state[k])
    assert resumed.epochs == full.epochs


def test_resume_from_a_checkpoint_without_state_restarts_it(tmp_path):
    path = tmp_path / "c.npz"
    run(epochs=1, checkpoint_path=path)  # written without state, as before running stats
    with pytest.warns(UserWarning, match="holds no running statistics.*start again from there"):
        hist = train(linreg_with_state, INIT, shuffled, optimizer=Momentum(lr=0.05), epochs=2,
                     state=STATE, checkpoint_path=path, resume=True, progress=False)  # fmt: skip
    assert hist.state["count"] == 4 and hist.resumed_from_step == 4
    with pytest.raises(DataError, match=r"statistics \{'avg'.*has \{'count'.*different model"):
        train(linreg_with_state, INIT, shuffled, optimizer="sgd", epochs=3,
              state={"count": np.zeros(())}, checkpoint_path=path, resume=True,
              progress=False)  # fmt: skip


def test_bad_state_updates():
    def unknown(params, batch):
        return *linreg(params, batch), lambda s: {"other": np.zeros(1)}

    with pytest.raises(GraphRNNError, match="returned 'other', which is not in the state"):
        train(unknown, INIT, fixed_batches(), optimizer="sgd", epochs=1, state=STATE,
              progress=False)  # fmt: skip

    def four(params, batch):
        return *linreg(params, batch), None, None

    with pytest.raises(GraphRNNError, match=r"\(loss, grads\) or \(loss, grads, state_update\)"):
        train(four, INIT, fixed_batches(), optimizer="sgd", epochs=1, progress=False)
