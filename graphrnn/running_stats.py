"""Running statistics of batch norms: non-trainable state kept beside a model's parameters.

A model lowered for training (the default) normalises each `batchnorm2d` with the statistics
of the current batch; `Graph.batchnorms` records, for each one, the nodes of its batch mean
and (biased) variance. `Compiled.loss_and_grad(..., batch_stats=True)` also returns them
(they are extra outputs of the adjoint graph, under the reserved prefix `STAT_PREFIX`), and
`update_state` folds them into the running averages with PyTorch's rule. A model lowered for
evaluation (`model.compile(..., mode="eval")`) normalises with the running statistics,
leaves named `<bn>.running_mean` and `<bn>.running_var` that are passed with the parameters
(`{**params, **state}`) and are neither trained nor differentiated.

Statistics over an index axis (a batch norm of a sequence of images) are per step in
training; the running statistics are one per channel, so the steps are pooled: the mean of
the step means, and the variance over the batch, the pixels and the steps together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from graphrnn.errors import DataError
from graphrnn.ir.graph import BatchNormState, Graph, reachable
from graphrnn.ir.node import Node
from graphrnn.ir.ops.conv import update_running_stats

STAT_PREFIX = "batch_stat:"
MOMENTUM = 0.1


@dataclass(frozen=True)
class BatchStats:
    """One batch norm's statistics on one batch: per channel, over `count` elements each."""

    mean: np.ndarray
    var: np.ndarray  # biased: divided by count
    count: int


def initial_state(graph: Graph) -> dict[str, np.ndarray]:
    """Running mean 0 and running variance 1 for every batch norm, as PyTorch starts."""
    state = {}
    for bn in graph.batchnorms.values():
        state[bn.mean_name] = np.zeros(bn.channels)
        state[bn.var_name] = np.ones(bn.channels)
    return state


def stat_outputs(graph: Graph) -> dict[str, Node]:
    """The batch statistics of a training graph as outputs named `STAT_PREFIX<bn>.mean` and
    `.var`, for the batch norms whose statistics `graph` computes."""
    specs = [bn for bn in graph.batchnorms.values() if bn.batch_mean is not None]
    if not specs:
        return {}
    present = {n.id for n in reachable(graph.roots())}
    outputs = {}
    for bn in specs:
        if bn.batch_mean.id in present and bn.batch_var.id in present:
            outputs[f"{STAT_PREFIX}{bn.name}.mean"] = bn.batch_mean
            outputs[f"{STAT_PREFIX}{bn.name}.var"] = bn.batch_var
    return outputs


def pooled(bn: BatchNormState, mean: np.ndarray, var: np.ndarray, sizes, batch: int):
    """BatchStats from the aligned arrays of a batch norm's per-step statistics: one step per
    combination of the index axes its input varies over (`sizes` gives their lengths)."""
    node = bn.batch_mean
    steps = int(np.prod([sizes[a] for a in node.axes], dtype=np.int64))
    mean = np.asarray(mean).reshape(-1, bn.channels)
    var = np.asarray(var).reshape(-1, bn.channels)
    if mean.shape[0] != steps or var.shape[0] != steps:
        raise AssertionError(f"batch norm {bn.name}: statistics for {mean.shape[0]} steps")
    if steps == 1:
        pooled_mean, pooled_var = mean[0].copy(), var[0].copy()
    else:
        pooled_mean = mean.mean(axis=0)
        pooled_var = var.mean(axis=0) + mean.var(axis=0)
    count = steps * bn.pixels * (batch if bn.batched else 1)
    return BatchStats(pooled_mean, pooled_var, count)


def update_state(
    state: Mapping[str, np.ndarray],
    stats: Mapping[str, BatchStats],
    momentum: float = MOMENTUM,
) -> dict[str, np.ndarray]:
    """New running statistics after one training batch: for each batch norm in `stats`,
    `conv.update_running_stats` (PyTorch's rule, the variance made unbiased); the other
    entries of `state` are kept. The arrays keep the dtype of `state`."""
    new = dict(state)
    for name, s in stats.items():
        keys = (f"{name}.running_mean", f"{name}.running_var")
        missing = [k for k in keys if k not in state]
        if missing:
            raise DataError(
                f"no running statistics {missing} for batch norm '{name}' in the state given; "
                "start from model.state"
            )
        rm, rv = (np.asarray(state[k]) for k in keys)
        m, v = update_running_stats(rm, rv, s.mean, s.var, s.count, momentum)
        new[keys[0]] = np.asarray(m, dtype=rm.dtype)
        new[keys[1]] = np.asarray(v, dtype=rv.dtype)
    return new
