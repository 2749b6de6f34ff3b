"""Unrolling against the folded graph, on random small recurrent cells.

Hypothesis draws a cell (Elman-like, a two-state mini LSTM, output feedback, a backward
recurrence, a lag of two steps, a forward and a backward recurrence together), its
activation, initial state, loss (per step summed or averaged over t, or many-to-one through
h(end) and h(1)), the sizes, the sequence length and the batch. For each it checks that
  (a) the folded graph and unroll(g, tau), both run by the reference backend, give the same
      values at every step and the same loss;
  (b) grad(unroll(g, tau)) == unroll(grad(g), tau) == grad(g), evaluated;
  (c) those gradients match central finite differences of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

import graphrnn as gr
from graphrnn.autodiff import grad
from graphrnn.backends import reference
from graphrnn.ir.graph import Graph
from graphrnn.ir.node import Context, Node
from graphrnn.ir.registry import EvalEnv
from graphrnn.layout import to_aligned
from graphrnn.unroll import unroll

EPS = 1e-6


# ---- the cells, as model text ----------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    params: str  # declarations besides V and c
    body: str  # equations; the state read by the output is h
    uses_init: bool = True  # whether INIT appears (then h0 is declared when INIT is h0)


CELLS = {
    "elman": Cell(
        "param U[H, I]; param W[H, H]; param b[H]",
        """
    h(0) = INIT
    h(t) = ACT(U @ x(t) + W @ h(t-1) + b)""",
    ),
    "lstm": Cell(
        "param Wf[H, H + I]; param Wg[H, H + I]; param bf[H]; param bg[H]",
        """
    h(0) = INIT
    C(0) = zeros(H)
    z(t) = concat(h(t-1), x(t))
    f(t) = sigmoid(Wf @ z(t) + bf)
    g(t) = ACT(Wg @ z(t) + bg)
    C(t) = f(t) * C(t-1) + (1 - f(t)) * g(t)
    h(t) = f(t) * tanh(C(t))""",
    ),
    "feedback": Cell(
        "param U[H, I]; param R[H, O]; param b[H]; param P[O, H]",
        """
    yh(0) = zeros(O)
    h(t) = ACT(U @ x(t) + R @ yh(t-1) + b)
    yh(t) = softmax(P @ h(t))""",
        uses_init=False,
    ),
    "backward": Cell(
        "param U[H, I]; param W[H, H]; param b[H]",
        """
    h(0) = INIT
    h(t) = ACT(W @ h(t+1) + U @ x(t) + b)""",
    ),
    "lag2": Cell(
        "param U[H, I]; param W[H, H]; param b[H]",
        """
    h(0) = INIT
    h(t) = ACT(U @ x(t) + W @ h(t-2) + b)""",
    ),
    "bidirectional": Cell(
        "param U[H, I]; param W[H, H]; param Ub[H, I]; param Wb[H, H]",
        """
    fw(0) = INIT
    bw(0) = zeros(H)
    fw(t) = ACT(U @ x(t) + W @ fw(t-1))
    bw(t) = tanh(Ub @ x(t) + Wb @ bw(t+1))
    h(t) = fw(t) * bw(t) + fw(t)""",
    ),
}

LOSSES = {
    "sum-mse": ("target y[O] over t", "loss = sum over t of mse(V @ h(t) + c, y(t))"),
    "mean-mse": ("target y[O] over t", "loss = mean over t of mse(V @ h(t) + c, y(t))"),
    "sum-xent": (
        "target y[O] over t",
        "loss = sum over t of softmax_cross_entropy(V @ h(t) + c, y(t))",
    ),
    "mean-xent": (
        "target y[O] over t",
        "loss = mean over t of softmax_cross_entropy(V @ h(t) + c, y(t))",
    ),
    "last-mse": ("target y[O]", "loss = mse(V @ h(end) + c, y)"),
    "last-xent": ("target y[O]", "loss = softmax_cross_entropy(V @ h(end) + c, y) + mean(h(1))"),
}


def model_text(cell: str, act: str, init: str, loss: str) -> str:
    spec = CELLS[cell]
    target, loss_line = LOSSES[loss]
    init_decl = "param h0[H]" if init == "h0" and spec.uses_init else ""
    body = spec.body.replace("INIT", "h0" if init == "h0" else "zeros(H)").replace("ACT", act)
    return f"""
model Cell(I, H, O):
    input x[I] over t
    {target}
    param V[O, H]; param c[O]
    {spec.params}
    {init_decl}{body}
    {loss_line}
"""


@dataclass
class Example:
    model: gr.Model
    params: dict[str, np.ndarray]
    data: dict[str, np.ndarray]
    tau: int
    batch: int


@st.composite
def examples(draw):
    cell = draw(st.sampled_from(sorted(CELLS)))
    act = draw(st.sampled_from(["tanh", "sigmoid", "relu"]))
    init = draw(st.sampled_from(["zeros", "h0"]))
    loss = draw(st.sampled_from(sorted(LOSSES)))
    sizes = {k: draw(st.integers(1, 4)) for k in ("I", "H", "O")}
    tau, batch = draw(st.integers(1, 8)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    note(model_text(cell, act, init, loss))
    note(f"sizes={sizes} tau={tau} batch={batch}")
    return make_example(cell, act, init, loss, sizes, tau, batch, seed)


def make_example(cell, act, init, loss, sizes, tau, batch, seed) -> Example:
    rng = np.random.default_rng(seed)
    model = gr.loads(model_text(cell, act, init, loss), **sizes)
    params = {k: rng.normal(0.0, 0.6, v.shape) for k, v in model.params.items()}
    data = {"x": rng.normal(0.0, 1.0, (tau, batch, sizes["I"]))}
    y_shape = (tau, batch, sizes["O"]) if "over t" in LOSSES[loss][0] else (batch, sizes["O"])
    if "xent" in loss:
        data["y"] = rng.dirichlet(np.ones(sizes["O"]), y_shape[:-1])
    else:
        data["y"] = rng.normal(0.0, 1.0, y_shape)
    return Example(model, params, data, tau, batch)


# ---- evaluation in the aligned layout ----------------------------------------------------------
def environment(ex: Example) -> EvalEnv:
    return EvalEnv(("t",), {"t": ex.tau}, ex.batch, np.dtype("float64"))


def evaluate(graph: Graph, ex: Example, params=None, data=None) -> dict[int, np.ndarray]:
    params = ex.params if params is None else params
    data = ex.data if data is None else data
    leaves = {}
    for name, node in graph.leaves.items():
        value = params[name] if name in graph.params else data[name]
        leaves[node.id] = to_aligned(np.asarray(value, np.float64), node, graph.axes)
    return reference.evaluate(graph.roots(), environment(ex), leaves)


def aligned(values, node: Node, ex: Example, context: Context | None = None) -> np.ndarray:
    shape = environment(ex).aligned_shape(context or node.context, node.shape)
    return np.broadcast_to(values[node.id], shape)


def stacked(graph: Graph, values, name: str, like: Node, ex: Example) -> np.ndarray:
    """An output of an unrolled graph: `name@1..tau` stacked along t, or `name` if static."""
    if f"{name}@1" not in graph.outputs:
        return aligned(values, graph.outputs[name], ex, like.context)
    step = Context(like.context.axes - {"t"}, like.context.batched)
    parts = [aligned(values, graph.outputs[f"{name}@{k}"], ex, step) for k in range(1, ex.tau + 1)]
    return np.concatenate(parts, axis=0)


def assert_same(actual, expected, what: str, rtol: float = 1e-10) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-12)
    error = float(np.abs(actual - expected).max(initial=0.0)) / scale
    assert error <= rtol, f"{what}: relative error {error:.2e}"


# ---- the checks ---------------------------------------------------------------------------------
def check_forward(ex: Example) -> None:
    folded = ex.model.graph
    unrolled = ex.model.unroll(ex.tau)
    assert all(n.op != "delay" for n in unrolled.nodes())
    fv, uv = evaluate(folded, ex), evaluate(unrolled, ex)
    for name, node in folded.outputs.items():
        want = aligned(fv, node, ex)
        assert_same(stacked(unrolled, uv, name, node, ex), want, f"output '{name}'")
    assert_same(aligned(uv, unrolled.loss, ex), aligned(fv, folded.loss, ex), "loss")


def gradient_arrays(graph: Graph, values, leaves: dict[str, Node], ex: Example):
    return {name: stacked(graph, values, f"grad:{name}", node, ex) for name, node in leaves.items()}


def check_gradients(ex: Example) -> None:
    folded = ex.model.graph
    leaves = {**folded.params, **folded.inputs}
    adjoint = grad(folded)
    grad_of_unrolled = grad(ex.model.unroll(ex.tau))
    unrolled_adjoint = unroll(adjoint, {"t": ex.tau})
    assert "delay" not in {n.op for n in grad_of_unrolled.nodes()}
    assert "delay" not in {n.op for n in unrolled_adjoint.nodes()}

    av = evaluate(adjoint, ex)
    gu = evaluate(grad_of_unrolled, ex)
    ug = evaluate(unrolled_adjoint, ex)
    expected = gradient_arrays(adjoint, av, leaves, ex)
    loss = float(aligned(av, adjoint.outputs["loss"], ex).reshape(()))
    for what, graph, values in (
        ("grad(unroll(g))", grad_of_unrolled, gu),
        ("unroll(grad(g))", unrolled_adjoint, ug),
    ):
        got_loss = float(aligned(values, graph.outputs["loss"], ex).reshape(()))
        assert got_loss == pytest.approx(loss, rel=1e-12, abs=1e-12), f"{what}: loss"
        for name, array in gradient_arrays(graph, values, leaves, ex).items():
            assert_same(array, expected[name], f"{what}: gradient of {name} vs grad(g)")

    # (c) central differences of the folded loss along random directions
    rng = np.random.default_rng(0)

    def loss_at(params, data):
        values = evaluate(adjoint, ex, params, data)
        return float(aligned(values, adjoint.outputs["loss"], ex).reshape(()))

    def user(name, array):
        node = leaves[name]
        full = environment(ex).aligned_shape(node.context, node.shape)
        return np.broadcast_to(array, full).reshape(
            ex.params[name].shape if name in ex.params else ex.data[name].shape
        )

    grads = {name: user(name, expected[name]) for name in leaves}
    for subset in [[name] for name in leaves] + [list(leaves)]:
        u = {name: rng.normal(0.0, 1.0, grads[name].shape) for name in subset}
        shifted = []
        for sign in (1.0, -1.0):
            params = {k: v + sign * EPS * u[k] if k in u else v for k, v in ex.params.items()}
            data = {k: v + sign * EPS * u[k] if k in u else v for k, v in ex.data.items()}
            shifted.append(loss_at(params, data))
        numeric = (shifted[0] - shifted[1]) / (2 * EPS)
        analytic = float(sum(np.sum(grads[k] * u[k]) for k in subset))
        magnitude = float(sum(np.sum(np.abs(grads[k] * u[k])) for k in subset))
        tolerance = 1e-6 * max(abs(numeric), abs(analytic)) + 1e-9 * (1 + abs(loss) + magnitude)
        assert abs(numeric - analytic) <= tolerance, (
            f"d loss / d {subset}: grad gives {analytic!r}, finite differences {numeric!r}"
        )


# ---- the properties ------------------------------------------------------------------------------
@given(ex=examples())
def test_unrolled_graph_computes_what_the_folded_graph_computes(ex):
    check_forward(ex)


@given(ex=examples())
def test_grad_commutes_with_unroll_and_matches_finite_differences(ex):
    check_gradients(ex)


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_every_cell_and_loss(cell, loss):
    """Each template with each loss, whatever Hypothesis happens to draw."""
    sizes = {"I": 2, "H": 3, "O": 2}
    ex = make_example(cell, "tanh", "h0", loss, sizes, tau=4, batch=2, seed=len(cell + loss))
    check_forward(ex)
    check_gradients(ex)
