"""Helpers for gradient checks on hand-built IR graphs: leaves in any context, a scalar loss
made of random weights, evaluation by the reference interpreter, and central finite
differences along random directions.

Values are kept in the aligned layout of ir/node.py, so a leaf may live in any context
(static, batched, over some of the axes) and the checks need no user-layout conversion.
"""

from __future__ import annotations

import numpy as np
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import graphrnn.ir.ops  # noqa: F401  (registers the primitives)
from graphrnn.autodiff import backpropagate
from graphrnn.backends import reference
from graphrnn.ir.graph import Graph, resolve_aliases
from graphrnn.ir.node import STATIC, Context, Node
from graphrnn.ir.ops.leaf import const, param_node
from graphrnn.ir.registry import EvalEnv, apply

AXES = ("t", "u")
EPS = 1e-6
RTOL = 1e-6

contexts = st.builds(
    lambda axes, batched: Context(frozenset(axes), batched),
    st.sets(st.sampled_from(AXES)),
    st.booleans(),
)


def _note(text: str) -> None:
    if currently_in_test_context():
        note(text)


def make_leaf(name: str, shape, context: Context) -> Node:
    """A leaf in exactly `context`: a parameter when static, else an input node."""
    if context == STATIC:
        return param_node(name, tuple(shape), ("zeros", ()))
    return Node("input", [], {"role": "input"}, tuple(shape), context, name)


def sample(rng: np.random.Generator, shape, kind: str) -> np.ndarray:
    """Values kept away from the kinks and poles of the ops that read them."""
    if kind == "any":
        return rng.normal(0.0, 0.8, shape)
    if kind == "pos":
        return rng.uniform(0.3, 3.0, shape)
    if kind == "away":
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 2.0, shape)
    if kind == "prob":
        return rng.uniform(0.05, 1.0, shape)
    raise ValueError(kind)


class Builder:
    """Draws an evaluation environment and makes leaves with values for one example.

    `leaves` are differentiated; `fixed` leaves (random weights) are not.
    """

    def __init__(self, draw):
        self.draw = draw
        sizes = {"t": draw(st.integers(1, 4)), "u": draw(st.integers(1, 3))}
        self.env = EvalEnv(AXES, sizes, draw(st.integers(1, 3)), np.dtype("float64"))
        self.rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        self.leaves: list[Node] = []
        self.values: list[np.ndarray] = []
        self.fixed: list[Node] = []
        self.fixed_values: list[np.ndarray] = []
        _note(f"env: sizes={sizes} batch={self.env.batch}")

    def leaf(self, shape, context=None, kind="any", without=None, within=None) -> Node:
        context = self.draw(contexts) if context is None else context
        if without is not None:
            context = Context(context.axes - {without}, context.batched)
        if within is not None:
            context = Context(context.axes | {within}, context.batched)
        node = make_leaf(f"v{len(self.leaves)}", shape, context)
        value = sample(self.rng, self.env.aligned_shape(context, node.shape), kind)
        self.leaves.append(node)
        self.values.append(value)
        _note(f"leaf {node.name}: shape={node.shape} context={context} kind={kind}")
        return node

    def weights(self, like: Node, batched: bool = False) -> Node:
        """A fixed random leaf with the shape and context of `like` (made batched if asked)."""
        context = Context(like.context.axes, like.context.batched or batched)
        node = make_leaf(f"w{len(self.fixed)}", like.shape, context)
        shape = self.env.aligned_shape(context, like.shape)
        self.fixed.append(node)
        self.fixed_values.append(self.rng.normal(0.0, 1.0, shape))
        return node

    def evaluate(self, roots: list[Node], values: list[np.ndarray] | None = None):
        values = self.values if values is None else values
        leaves = {n.id: v for n, v in zip(self.leaves, values)}
        leaves.update({n.id: v for n, v in zip(self.fixed, self.fixed_values)})
        result = reference.evaluate(roots, self.env, leaves)
        return [result[r.id] for r in roots]


def reduce_all(node: Node) -> Node:
    """Sum a node over its elements and its axes (not the batch)."""
    if node.shape:
        node = apply("sum", node)
    for axis in sorted(node.axes):
        node = apply("reduce_axis", node, axis=axis, kind="sum")
    return node


def scalar_loss(b: Builder, out: Node) -> Node:
    """batch_mean(sum of random weights * out), or the plain sum when nothing is batched."""
    total = reduce_all(apply("mul", out, b.weights(out)))
    return apply("batch_mean", total) if total.batched else total


def resolved(nodes: list[Node]) -> list[Node]:
    """The nodes with every placeholder below them replaced by its value."""
    graph = Graph("check", AXES, outputs={str(i): n for i, n in enumerate(nodes)})
    resolve_aliases(graph)
    return [graph.outputs[str(i)] for i in range(len(nodes))]


def gradients(loss: Node, wrt: list[Node]) -> list[Node]:
    return resolved(backpropagate([(loss, const(1.0))], wrt))


def check_gradients(b: Builder, loss: Node, grads: list[Node], directions: int = 2) -> None:
    """Compare each gradient with central differences of `loss` along random directions, one
    leaf at a time and all leaves together."""
    loss_value, *grad_values = b.evaluate([loss, *grads])
    assert np.size(loss_value) == 1, f"the loss has shape {np.shape(loss_value)}"
    aligned = []
    for leaf, g, v in zip(b.leaves, grad_values, b.values):
        assert g.ndim == v.ndim, f"gradient of {leaf.name} has shape {g.shape}, value {v.shape}"
        try:
            aligned.append(np.broadcast_to(g, v.shape))
        except ValueError:
            raise AssertionError(
                f"gradient of {leaf.name} has shape {g.shape}; the leaf {v.shape}"
            ) from None
        assert np.all(np.isfinite(g)), f"gradient of {leaf.name} is not finite"
    scale = 1.0 + abs(float(np.sum(loss_value)))

    def loss_at(values):
        return float(np.sum(b.evaluate([loss], values)[0]))

    subsets = [[i] for i in range(len(b.leaves))] + [list(range(len(b.leaves)))]
    for subset in subsets:
        for _ in range(directions if len(subset) == 1 else 1):
            u = {i: b.rng.normal(0.0, 1.0, b.values[i].shape) for i in subset}
            plus = [v + EPS * u[i] if i in u else v for i, v in enumerate(b.values)]
            minus = [v - EPS * u[i] if i in u else v for i, v in enumerate(b.values)]
            numeric = (loss_at(plus) - loss_at(minus)) / (2 * EPS)
            terms = [aligned[i] * u[i] for i in subset]
            analytic = float(sum(np.sum(t) for t in terms))
            magnitude = float(sum(np.sum(np.abs(t)) for t in terms))
            tolerance = RTOL * max(abs(analytic), abs(numeric)) + 1e-9 * (scale + magnitude)
            names = [b.leaves[i].name for i in subset]
            assert abs(numeric - analytic) <= tolerance, (
                f"d loss / d {names} along a random direction: backpropagate gives "
                f"{analytic!r}, finite differences {numeric!r}"
            )
