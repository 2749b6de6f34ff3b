"""Gradient checking: every parameter's gradient against central finite differences.

The loss is evaluated in float64 on random inputs and random probability-vector targets
(valid for both softmax cross-entropy and squared error). Small parameters are checked
element by element; large ones on a seeded random sample of elements, so that the check stays
quick for big models. The error of a parameter is ||g - n|| / max(||g|| + ||n||, 1e-12) over
the checked elements (g analytic, n numeric).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from graphrnn.errors import GraphRNNError
from graphrnn.model import Model

MAX_FULL = 400
SAMPLED = 200


@dataclass
class ParamCheck:
    name: str
    checked: int
    total: int
    rel_error: float
    grad_norm: float


def random_data(model: Model, tau: int, batch: int, seed: int):
    """Random inputs (standard normal) and targets (random probability vectors)."""
    rng = np.random.default_rng(seed)
    graph = model.graph
    sizes = {a: tau for a in graph.axes}

    def shaped(node):
        lead = [sizes[a] for a in graph.axes if a in node.axes]
        return tuple(lead) + (batch,) + tuple(node.shape)

    inputs = {n: rng.normal(size=shaped(node)) for n, node in graph.inputs.items()}
    targets = {}
    for n, node in graph.targets.items():
        logits = rng.normal(size=shaped(node))
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        targets[n] = e / e.sum(axis=-1, keepdims=True)
    return inputs, targets


def gradient_check(
    model: Model,
    tau: int = 5,
    batch: int = 3,
    seed: int = 0,
    backend: str = "reference",
    eps: float = 1e-5,
    samples: int = SAMPLED,
    progress: Callable[[ParamCheck], None] | None = None,
    plan: Callable[[int, float], None] | None = None,
    full: int = MAX_FULL,
) -> list[ParamCheck]:
    """Every parameter's gradient from `backend` against central differences of the reference
    backend's loss; parameters above `full` elements on `samples` elements each (a model of
    many small parameters at a large size, such as the SpatialRNN, is quick only with a
    small `full` too).
    `progress` is called with each parameter's result as soon as it is done, and `plan` once
    with the number of loss evaluations ahead and the seconds one takes (a large model takes
    minutes, and the user should know before waiting)."""
    for what, value in (("tau", tau), ("batch", batch), ("samples", samples), ("full", full)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GraphRNNError(f"{what} must be a positive integer, got {value!r}")
    inputs, targets = random_data(model, tau, batch, seed)
    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    analytic = model.compile(backend=backend, dtype="float64")
    oracle = model.compile(backend="reference", dtype="float64")
    _, grads = analytic.loss_and_grad(params, inputs, targets)
    if plan is not None:
        start = time.perf_counter()
        oracle.loss(params, inputs, targets)
        sizes = [v.size if v.size <= full else min(samples, v.size) for v in params.values()]
        plan(2 * sum(sizes), time.perf_counter() - start)
    rng = np.random.default_rng(seed + 1)
    results = []
    for name, value in params.items():
        flat = value.reshape(-1)
        picks = np.arange(flat.size)
        if flat.size > full:
            picks = rng.choice(flat.size, min(samples, flat.size), replace=False)
        numeric = np.empty(len(picks))
        for k, i in enumerate(picks):
            saved = flat[i]
            flat[i] = saved + eps
            plus = oracle.loss(params, inputs, targets)
            flat[i] = saved - eps
            minus = oracle.loss(params, inputs, targets)
            flat[i] = saved
            numeric[k] = (plus - minus) / (2 * eps)
        g = grads[name].reshape(-1)[picks]
        denom = max(np.linalg.norm(g) + np.linalg.norm(numeric), 1e-12)
        error = float(np.linalg.norm(g - numeric) / denom)
        results.append(ParamCheck(name, len(picks), flat.size, error, float(np.linalg.norm(g))))
        if progress is not None:
            progress(results[-1])
    return results
