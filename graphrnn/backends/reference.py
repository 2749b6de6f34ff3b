"""The reference backend: a NumPy interpreter of the IR, float64 capable and plainly correct.

Bulk nodes are evaluated over all their steps at once; recurrences loop over their axis with
one slice per step. Arrays are aligned as described in ir/node.py.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from graphrnn.ir.node import Node
from graphrnn.ir.registry import OPS, EvalEnv
from graphrnn.schedule import Bulk, Loop, schedule


def evaluate(
    roots: list[Node], env: EvalEnv, leaves: dict[int, np.ndarray]
) -> dict[int, np.ndarray]:
    """Values of every scheduled node, keyed by node id; `leaves` holds aligned leaf arrays."""
    values = dict(leaves)
    for item in schedule(roots):
        if isinstance(item, Bulk):
            node = item.node
            if node.id not in values:
                values[node.id] = _apply(env, node, [values[i.id] for i in node.inputs])
        else:
            _run_loop(item, env, values)
    return values


def _apply(env: EvalEnv, node: Node, args: list[np.ndarray]) -> np.ndarray:
    if node.op in ("input", "param"):
        raise KeyError(f"no value given for '{node.name}'")
    return np.asarray(OPS[node.op].evaluate(env, node, *args), dtype=env.dtype)


def _at_step(env: EvalEnv, array: np.ndarray, axis: str, step: int) -> np.ndarray:
    d = env.axis_dim(axis)
    if array.shape[d] == 1:
        return array
    index = [slice(None)] * array.ndim
    index[d] = slice(step, step + 1)
    return array[tuple(index)]


def _run_loop(loop: Loop, env: EvalEnv, values: dict[int, np.ndarray]) -> None:
    axis, size = loop.axis, env.sizes[loop.axis]
    step_env = replace(env, sizes={**env.sizes, axis: 1})
    members = {n.id for n in loop.nodes}
    out = {n.id: np.zeros(env.aligned_shape(n.context, n.shape), env.dtype) for n in loop.nodes}
    d = env.axis_dim(axis)
    steps = range(size) if loop.forward else range(size - 1, -1, -1)
    for t in steps:
        current = {}
        for node in loop.nodes:
            if node.op == "delay" and node.inputs[0].id in members:
                source = t + node.attrs["offset"]
                if 0 <= source < size:
                    value = _at_step(env, out[node.inputs[0].id], axis, source)
                else:
                    value = values[node.inputs[1].id]
            else:
                args = [
                    current[i.id] if i.id in members else _at_step(env, values[i.id], axis, t)
                    for i in node.inputs
                ]
                value = _apply(step_env, node, args)
            current[node.id] = value
            index = [slice(None)] * out[node.id].ndim
            index[d] = slice(t, t + 1)
            out[node.id][tuple(index)] = value
    values.update(out)


def run(graph, env: EvalEnv, leaves: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """The executor used by `Compiled`: evaluate every output and the loss of `graph`."""
    return evaluate(graph.roots(), env, leaves)
