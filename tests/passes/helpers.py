"""Shared by the pass tests: the model zoo with small sizes, evaluating an adjoint graph with
the reference backend, and structural checks every pass must keep."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

import graphrnn as gr
from graphrnn.autodiff import grad
from graphrnn.backends import reference
from graphrnn.check import random_data
from graphrnn.compiled import Compiled
from graphrnn.dsl import parse_file
from graphrnn.dsl.ast import ModelDef
from graphrnn.ir.graph import Graph
from graphrnn.ir.registry import EvalEnv
from graphrnn.passes._common import consistent, infer, is_leaf

ROOT = Path(__file__).resolve().parents[2]

# The model files present when the passes were written; any other *.grnn in models/ that
# loads with the small sizes below is tested as well.
KNOWN = [
    "birnn",
    "deep_birnn",
    "do_rnn",
    "dt_rnn",
    "elman",
    "elman_relu",
    "gru_cho",
    "gru_classifier",
    "gru_regressor",
    "gru_torch",
    "jordan",
    "lstm",
    "lstm_classifier",
    "lstm_peephole",
    "lstm_regressor",
    "many_to_one",
    "stacked_rnn",
]
SMALL = {"I": 3, "H": 4, "O": 2, "L": 2}
# spatial_rnn_sex: a 32x64 image (non-square), two channels and two units everywhere
SMALL.update({"HI": 32, "WI": 64, "C1": 2, "C2": 2, "C3": 2, "C4": 2, "H1": 2, "H2": 2})


def small_sizes(path: Path) -> dict[str, int]:
    """The small sizes the model declares (others keep their defaults, or get 2)."""
    module = parse_file(str(path))
    model = next(item for item in module.items if isinstance(item, ModelDef))
    return {
        p.name: SMALL.get(p.name, 2) for p in model.params if p.name in SMALL or p.default is None
    }


def model_paths() -> list[Path]:
    paths = {ROOT / "models" / f"{name}.grnn" for name in KNOWN}
    for path in (ROOT / "models").glob("*.grnn"):
        if path not in paths:
            try:
                gr.load(path, **small_sizes(path))
            except Exception:
                continue  # being written, or needs sizes we cannot guess
            paths.add(path)
    return sorted(p for p in paths if p.exists())


@cache
def load(path: Path) -> gr.Model:
    return gr.load(path, **small_sizes(path))


def adjoint(path: Path) -> Graph:
    """A fresh adjoint graph of the model (passes may be run in place on it)."""
    return grad(load(path).graph)


@cache
def data(path: Path):
    model = load(path)
    inputs, targets = random_data(model, tau=4, batch=3, seed=1)
    rng = np.random.default_rng(2)
    params = {k: v + 0.1 * rng.normal(size=v.shape) for k, v in model.params.items()}
    return params, inputs, targets


def loss_and_grad(path: Path, graph: Graph):
    """Loss and gradients of the model computed from `graph`, an adjoint graph of it."""
    model = load(path)
    compiled = Compiled(model.graph, "float64", reference.run, "reference")
    compiled._adjoint = graph  # evaluate this adjoint instead of computing grad() afresh
    return compiled.loss_and_grad(*data(path))


def assert_same_values(path: Path, before: Graph, after: Graph, rel: float = 1e-12) -> None:
    loss0, grads0 = loss_and_grad(path, before)
    loss1, grads1 = loss_and_grad(path, after)
    assert np.isclose(loss1, loss0, rtol=rel, atol=0), (loss0, loss1)
    assert grads0.keys() == grads1.keys()
    for name, g0 in grads0.items():
        g1 = grads1[name]
        assert g1.shape == g0.shape, name
        scale = max(np.abs(g0).max(), 1e-300)
        err = np.abs(g1 - g0).max() / scale
        assert err <= rel, f"{path.stem}: grad {name} differs by {err:.2e} (relative)"


def assert_well_formed(before: Graph, after: Graph) -> None:
    """Same output keys, leaves untouched and shared, every node consistent, outputs of the
    same shape and context."""
    assert list(after.outputs) == list(before.outputs)
    for role in ("inputs", "targets", "params"):
        b, a = getattr(before, role), getattr(after, role)
        assert a.keys() == b.keys()
        assert all(a[k] is b[k] for k in b)
    for key, node in after.outputs.items():
        old = before.outputs[key]
        assert node.shape == old.shape, key
        assert node.context == old.context or node.op == "const", key
    leaves = {id(n) for n in before.leaves.values()}
    inconsistent = sum(not consistent(n) for n in before.nodes())
    assert sum(not consistent(n) for n in after.nodes()) <= inconsistent
    for node in after.nodes():
        if is_leaf(node):
            assert id(node) in leaves, node
        elif node.inputs:
            shape, context = infer(node.op, node.inputs, node.attrs)
            assert shape == node.shape and context <= node.context, node


def ops(graph: Graph, op: str) -> list:
    return [n for n in graph.nodes() if n.op == op]


# ---- graphs built by hand ------------------------------------------------------------------
def env_for(graph: Graph, steps: int = 3, batch: int = 2) -> EvalEnv:
    sizes = {a: graph.axis_sizes.get(a, steps) for a in graph.axes}  # static axes keep theirs
    return EvalEnv(graph.axes, sizes, batch, np.dtype(np.float64))


def random_leaves(graph: Graph, env: EvalEnv, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        n.id: rng.normal(size=env.aligned_shape(n.context, n.shape)) for n in graph.leaves.values()
    }


def output_values(graph: Graph, env: EvalEnv, leaves) -> dict[str, np.ndarray]:
    """Every output evaluated by the reference backend, broadcast to its declared layout."""
    values = reference.evaluate(graph.roots(), env, dict(leaves))
    return {
        k: np.broadcast_to(values[n.id], env.aligned_shape(n.context, n.shape))
        for k, n in graph.outputs.items()
    }


def assert_same_outputs(before: Graph, after: Graph, rel: float = 1e-12, seed: int = 0) -> None:
    env = env_for(before)
    leaves = random_leaves(before, env, seed)
    v0, v1 = output_values(before, env, leaves), output_values(after, env, leaves)
    assert v0.keys() == v1.keys()
    for k in v0:
        expected = np.broadcast_to(v0[k], v1[k].shape) if v1[k].shape != v0[k].shape else v0[k]
        np.testing.assert_allclose(v1[k], expected, rtol=rel, atol=rel, err_msg=k)
