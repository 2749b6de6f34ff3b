"""simplify: algebraic identities, zero propagation and constant folding keep every value."""

from __future__ import annotations

import numpy as np
import pytest

import graphrnn as gr
from graphrnn.autodiff import grad
from graphrnn.ir.graph import Graph
from graphrnn.ir.node import Context
from graphrnn.ir.ops.leaf import const, input_node, param_node
from graphrnn.ir.registry import apply
from graphrnn.passes._common import consistent, is_one, is_zero
from graphrnn.passes.simplify import simplify
from tests.passes.helpers import (
    adjoint,
    assert_same_outputs,
    assert_same_values,
    assert_well_formed,
    env_for,
    model_paths,
    ops,
    output_values,
    random_leaves,
)

PATHS = model_paths()

# A model whose equations and adjoint are full of waste: x*1, 0*b, -(-b), + 0.
WASTE = """
model Waste(I, H, O):
    input  x[I] over t
    target y[O] over t
    param  U[H, I] ~ glorot_uniform
    param  W[H, H] ~ orthogonal
    param  b[H]    ~ zeros
    param  V[O, H] ~ glorot_uniform
    h(0) = zeros(H)
    a(t) = (U @ x(t)) * 1 + W @ h(t-1) + 0 * b - -b + 0
    h(t) = tanh(a(t)) * 1
    o(t) = V @ h(t)
    loss = mean over t of softmax_cross_entropy(o(t), y(t))
"""

# The recurrence is multiplied by zero: both it and its adjoint must disappear.
CUT = """
model Cut(I, H, O):
    input  x[I] over t
    target y[O] over t
    param  U[H, I] ~ glorot_uniform
    param  W[H, H] ~ orthogonal
    param  b[H]    ~ zeros
    param  V[O, H] ~ glorot_uniform
    h(0) = zeros(H)
    h(t) = tanh(U @ x(t) + (W @ h(t-1)) * 0 + b)
    o(t) = V @ h(t)
    loss = mean over t of softmax_cross_entropy(o(t), y(t))
"""


def _loss_and_grad(model: gr.Model, graph: Graph, seed: int = 0):
    from graphrnn.backends import reference
    from graphrnn.check import random_data
    from graphrnn.compiled import Compiled

    inputs, targets = random_data(model, tau=4, batch=3, seed=seed)
    compiled = Compiled(model.graph, "float64", reference.run, "reference")
    compiled._adjoint = graph
    return compiled.loss_and_grad(model.params, inputs, targets)


def _assert_model_values(model: gr.Model, before: Graph, after: Graph) -> None:
    loss0, g0 = _loss_and_grad(model, before)
    loss1, g1 = _loss_and_grad(model, after)
    assert np.isclose(loss0, loss1, rtol=1e-12)
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-12, atol=1e-14, err_msg=k)


def _no_waste(graph: Graph) -> None:
    for n in graph.nodes():
        if n.op in ("add", "sub"):
            assert not is_zero(n.inputs[1]), n
        if n.op == "add":
            assert not is_zero(n.inputs[0]), n
            assert n.inputs[0].op != "neg" and n.inputs[1].op != "neg", n
        if n.op == "mul":
            assert not any(is_zero(i) or is_one(i) for i in n.inputs), n
        if n.op in ("neg", "transpose"):
            assert n.inputs[0].op != n.op, n
        if n.op == "const":
            continue
        if n.inputs and all(i.op == "const" for i in n.inputs):
            assert n.op in ("delay",), f"unfolded constant expression {n}"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_zoo_values_unchanged(path):
    before = adjoint(path)
    after, lines = simplify(before)
    assert_well_formed(before, after)
    assert_same_values(path, before, after)
    assert len(after.nodes()) <= len(before.nodes())
    assert lines[0].startswith("simplify: ")
    _no_waste(after)


def test_waste_removed():
    model = gr.loads(WASTE, I=3, H=4, O=2)
    before = grad(model.graph)
    after, lines = simplify(before)
    assert_well_formed(before, after)
    _assert_model_values(model, before, after)
    _no_waste(after)
    assert len(after.nodes()) < len(before.nodes()) - 10
    assert "x*1 -> x" in lines[0] and "x*0 -> 0" in lines[0]
    # neg(reduce_to(neg(g))) of b's gradient became reduce_to(g)
    assert not ops(after, "neg")
    # the user's name 'a' survives on the node that now computes a(t)
    named = [n for n in after.nodes() if n.name == "a"]
    assert len(named) == 1 and named[0].op == "add"


def test_zero_recurrence_removed():
    model = gr.loads(CUT, I=3, H=4, O=2)
    before = grad(model.graph)
    assert len(ops(before, "delay")) == 2
    after, _ = simplify(before)
    assert_well_formed(before, after)
    _assert_model_values(model, before, after)
    assert not ops(after, "delay")  # the forward and the backward recurrence are gone
    w = after.outputs["grad:W"]
    assert is_zero(w) and w.shape == (4, 4)


def test_model_graph_untouched():
    model = gr.loads(WASTE, I=3, H=4, O=2)
    snapshot = [(n, list(n.inputs)) for n in model.graph.nodes()]
    simplify(grad(model.graph))
    assert all(n.inputs == inputs for n, inputs in snapshot)


def _graph(outputs: dict, *leaves) -> Graph:
    g = Graph("g", ("t",))
    for leaf in leaves:
        (g.params if leaf.op == "param" else g.inputs)[leaf.name] = leaf
    g.outputs = outputs
    return g


def test_zero_that_carries_the_steps_is_kept():
    """b + (x * 0) varies over steps and batch; summing it to b's context gives T*B*b. The
    zero must not be replaced where the sum would then see a static b."""
    x = input_node("x", (3,), ("t",))
    b = param_node("b", (3,), ("zeros", ()))
    z = apply("mul", x, const(0.0))
    s = apply("add", b, z)
    r = apply("reduce_to", s, context=Context(frozenset(), False), shape=(3,))
    before = _graph({"r": r}, x, b)
    after, _ = simplify(before)
    assert_well_formed(before, after)
    env = env_for(before, steps=3, batch=2)
    leaves = random_leaves(before, env)
    got = output_values(after, env, leaves)["r"]
    np.testing.assert_allclose(got.reshape(3), 6 * leaves[b.id].reshape(3))


def _zero_delays():
    """Delays of per-step, per-example zeros (x * 0) that must stay batched: a graph output
    (both operands zero; the case Hypothesis drew), a delay whose consumer keeps it (b + d
    varies over the batch only through d) and one with a STATIC initial value b."""
    x = input_node("x", (3,), ("t",))
    b = param_node("b", (3,), ("zeros", ()))
    both = apply("delay", apply("mul", x, const(0.0, (3,))), const(0.0, (3,)), axis="t", offset=-1)
    inner = apply("delay", apply("mul", const(0.0), x), const(0.0, (3,)), axis="t", offset=-1)
    with_b = apply("delay", apply("mul", x, const(0.0, (3,))), b, axis="t", offset=1)
    outputs = {"both": both, "kept": apply("add", b, inner), "with_b": with_b}
    return _graph(outputs, x, b)


@pytest.mark.parametrize("key", ["both", "kept", "with_b"])
def test_zero_delay_keeps_its_context(key):
    """A delay's context is its operands' plus its axis: moving STATIC zeros into a batched
    delay would leave it claiming a batch its operands no longer give."""
    before = _zero_delays()
    before.outputs = {key: before.outputs[key]}
    after, _ = simplify(before)
    assert_well_formed(before, after)
    assert_same_outputs(before, after)
    delays = ops(after, "delay")
    assert len(delays) == 1 and delays[0].context == Context(frozenset({"t"}), True)
    assert consistent(delays[0])


def test_constant_folding_and_batch_size():
    x = input_node("x", (3,), ("t",))
    six = apply("mul", const(2.0), const(3.0, (3,)))
    y = apply("mul", x, six)
    per_batch = apply("div", const(1.0), apply("batch_size"))
    out = apply("mul", y, per_batch)
    before = _graph({"out": out}, x)
    after, _ = simplify(before)
    assert_same_outputs(before, after)
    consts = [n for n in after.nodes() if n.op == "const"]
    assert [c.attrs["value"] for c in consts if c.shape == (3,)] == [6.0]
    assert ops(after, "batch_size")  # 1 / batch_size is not a constant


def test_sign_and_structure_rules():
    x = input_node("x", (4,), ("t",))
    y = input_node("y", (4,), ("t",))
    a = apply("add", x, apply("neg", y), name="a")
    b = apply("sub", a, apply("neg", x))
    c = apply("neg", apply("neg", b))
    parts = apply("concat", apply("slice", c, start=0, stop=1), apply("slice", c, start=1, stop=4))
    d = apply("slice", apply("slice", parts, start=1, stop=4), start=1, stop=2)
    padding = apply("slice", apply("pad", x, before=2, after=1), start=0, stop=2)
    e = apply("add", apply("slice", y, start=0, stop=2), padding)
    before = _graph({"parts": parts, "d": d, "e": e}, x, y)
    after, lines = simplify(before)
    assert_well_formed(before, after)
    assert_same_outputs(before, after)
    assert [n.op for n in ops(after, "sub")] == ["sub"]
    assert ops(after, "sub")[0].name == "a"  # x + (-y) became x - y and kept the name
    assert not ops(after, "neg") and not ops(after, "concat")
    assert after.outputs["d"].op == "slice" and after.outputs["d"].attrs["start"] == 2
    # the padding is zero; an output keeps its context, so e is y's slice, not a constant
    assert after.outputs["e"].op == "slice" and after.outputs["e"].inputs[0] is y


def test_idempotent():
    model = gr.loads(WASTE, I=3, H=4, O=2)
    once, _ = simplify(grad(model.graph))
    twice, lines = simplify(once)
    assert len(twice.nodes()) == len(once.nodes())
    assert lines[0].startswith("simplify: 0 rewrites")
