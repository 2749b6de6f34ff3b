"""Hessian-free training (graphrnn/train/hessian_free.py): conjugate gradient, the optimizer
on a small model, its checkpointed state, and `graphrnn train --optimizer hessian-free`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import graphrnn as gr
from graphrnn.cli import main
from graphrnn.train import adding_problem, train
from graphrnn.train.checkpoint import load_checkpoint
from graphrnn.train.hessian_free import HessianFree, conjugate_gradient, curvature_step

ROOT = Path(__file__).resolve().parents[2]


def test_conjugate_gradient_solves_a_damped_system():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    G, g, lam = a @ a.T, rng.normal(size=6), 0.1
    kept, x, steps = conjugate_gradient(lambda v: G @ v, g, lam, np.zeros(6), 50)
    expected = np.linalg.solve(G + lam * np.eye(6), -g)
    assert np.linalg.norm(x - expected) < 1e-8 * np.linalg.norm(expected)
    assert steps <= 7 and kept[-1][0] == steps
    # phi(x) = g.x + x.(G + lam I) x / 2, as CG tracks it
    assert kept[-1][2] == pytest.approx(g @ x + 0.5 * x @ (G + lam * np.eye(6)) @ x)


def _adding(n: int, steps: int, seed: int):
    x, y = adding_problem(n, steps, seed)
    return {"x": x}, {"y": y}


def test_hessian_free_lowers_the_loss_of_a_small_rnn():
    model = gr.load(ROOT / "models/elman_regressor.grnn", I=2, H=4, O=1, seed=0)
    fn = model.compile("reference", "float64", input_grads=False)
    batch = _adding(64, 6, seed=1)
    optimizer = HessianFree(damping=1.0, cg_iters=20)
    step = curvature_step(fn, optimizer, curvature_batch=32)
    before = fn.loss(model.params, *batch)
    history = train(step, model.params, [batch], optimizer=optimizer, epochs=8, progress=False)
    after = fn.loss(history.params, *batch)
    assert after < 0.5 * before
    assert all(b <= a + 1e-12 for a, b in zip(history.losses, history.losses[1:]))
    assert optimizer.last["cg_steps"] >= 1 and optimizer.lam > 0
    state = optimizer.state_dict()
    again = HessianFree()
    again.load_state_dict(state)
    assert again.lam == optimizer.lam and again.t == optimizer.t
    assert set(again.state["d"]) == set(model.params)


def test_step_without_curvature_is_a_clear_error():
    with pytest.raises(gr.GraphRNNError, match="curvature_step"):
        HessianFree().step({"w": np.zeros(2)}, {"w": np.ones(2)})


def test_train_adding_with_hessian_free(tmp_path, capsys):
    run = tmp_path / "hf"
    args = [
        "train", str(ROOT / "models/elman_regressor.grnn"), "--task", "adding",
        "--dim", "H=4", "--steps", "5", "--n-train", "128", "--batch", "64", "--epochs", "2",
        "--optimizer", "hessian-free", "--cg-iters", "10", "--curvature-batch", "32",
        "--backend", "reference", "--dtype", "float64", "--out", str(run),
    ]  # fmt: skip
    assert main(args) == 0
    assert "val_loss" in capsys.readouterr().out
    lines = (run / "metrics.jsonl").read_text().splitlines()
    epochs = [r for r in map(json.loads, lines) if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    _, optimizer_state, _ = load_checkpoint(run / "checkpoint.npz")
    assert optimizer_state["name"] == "hessian-free" and optimizer_state["lambda"] > 0
