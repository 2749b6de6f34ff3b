"""Scheduling: which equation systems are causal, and how recurrences become loops.

A cycle must pass through a delay, and all delays of one cycle must run along one axis in one
direction; otherwise the model is rejected with a CausalityError naming its equations. A
forward and a separate backward recurrence are fine: two loops, run in opposite directions.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphrnn as gr
from graphrnn.autodiff import grad
from graphrnn.errors import CausalityError, DSLError
from graphrnn.ir.graph import Graph, resolve_aliases
from graphrnn.ir.node import Context
from graphrnn.ir.ops.leaf import bind, const, input_node, param_node, placeholder
from graphrnn.ir.registry import apply
from graphrnn.schedule import Bulk, Loop, schedule

SEQ = Context(frozenset({"t"}), True)


def loops(graph: Graph) -> list[Loop]:
    return [item for item in schedule(graph.roots()) if isinstance(item, Loop)]


def names(loop: Loop) -> set[str]:
    return {n.name for n in loop.nodes if n.name}


# ---- rejected: a cycle without a delay ---------------------------------------------------------
def test_dsl_cycle_without_delay_names_every_equation_in_it():
    text = """
model M(I):
    input x[I] over t
    param W[I, I]
    a(t) = tanh(b(t) + x(t))
    b(t) = W @ a(t)
    loss = mean over t of sum(b(t))
"""
    with pytest.raises(CausalityError) as info:
        gr.loads(text, I=2)
    message = str(info.value)
    assert "'a'" in message and "'b'" in message, message


def test_dsl_self_reference_at_the_same_step():
    text = """
model M(I):
    input x[I] over t
    param W[I, I]
    h(0) = zeros(I)
    h(t) = tanh(W @ h(t) + x(t))
    loss = mean over t of sum(h(t))
"""
    with pytest.raises(CausalityError) as info:
        gr.loads(text, I=2)
    assert "'h'" in str(info.value)
    assert "h(t-1)" in str(info.value)


def test_ir_cycle_without_delay_names_the_equations():
    x = input_node("x", (2,), ("t",))
    a = placeholder((2,), SEQ, name="a")
    b = apply("tanh", apply("add", a, x), name="b")
    a_value = apply("mul", b, const(2.0), name="a")
    bind(a, a_value)
    graph = resolve_aliases(Graph("m", ("t",), inputs={"x": x}, outputs={"a": a_value}))
    with pytest.raises(CausalityError) as info:
        schedule(graph.roots())
    message = str(info.value)
    assert "'a'" in message and "'b'" in message, message
    assert "same step" in message


# ---- rejected: one cycle that runs both ways --------------------------------------------------
def test_dsl_cycle_reading_both_directions_is_rejected():
    text = """
model M(I):
    input x[I] over t
    param W[I, I]
    a(0) = zeros(I)
    b(0) = zeros(I)
    a(t) = tanh(W @ b(t-1) + x(t))
    b(t) = tanh(W @ a(t+1))
    loss = mean over t of sum(b(t))
"""
    with pytest.raises(CausalityError) as info:
        gr.loads(text, I=2)
    message = str(info.value)
    assert "'a'" in message and "'b'" in message, message
    assert "t-1" in message and "t+1" in message, message


def test_ir_cycle_reading_both_directions_is_rejected():
    x = input_node("x", (2,), ("t",))
    zero = const(0.0, (2,))
    a = placeholder((2,), SEQ, name="a")
    b = placeholder((2,), SEQ, name="b")
    a_value = apply("tanh", apply("add", apply("delay", b, zero, axis="t", offset=-1), x), name="a")
    b_value = apply("tanh", apply("delay", a, zero, axis="t", offset=1), name="b")
    bind(a, a_value)
    bind(b, b_value)
    graph = resolve_aliases(
        Graph("m", ("t",), inputs={"x": x}, outputs={"a": a_value, "b": b_value})
    )
    with pytest.raises(CausalityError) as info:
        schedule(graph.roots())
    assert "'a'" in str(info.value) and "'b'" in str(info.value)


def test_ir_cycle_along_two_axes_is_rejected():
    x = input_node("x", (2,), ("s", "t"))
    zero = const(0.0, (2,))
    d = placeholder((2,), Context(frozenset({"s", "t"}), True), name="d")
    left = apply("delay", d, zero, axis="s", offset=-1)
    up = apply("delay", d, zero, axis="t", offset=-1)
    d_value = apply("tanh", apply("add", apply("add", left, up), x), name="d")
    bind(d, d_value)
    graph = resolve_aliases(Graph("m", ("s", "t"), inputs={"x": x}, outputs={"d": d_value}))
    with pytest.raises(CausalityError, match="'d'"):
        schedule(graph.roots())


# ---- accepted ----------------------------------------------------------------------------------
BIDIRECTIONAL = """
model Bi(I, H):
    input x[I] over t
    target y[H] over t
    param U[H, I]; param W[H, H]; param Ub[H, I]; param Wb[H, H]
    fw(0) = zeros(H)
    bw(0) = zeros(H)
    fw(t) = tanh(U @ x(t) + W @ fw(t-1))
    bw(t) = tanh(Ub @ x(t) + Wb @ bw(t+1))
    o(t) = fw(t) + bw(t)
    loss = mean over t of mse(o(t), y(t))
"""


def test_bidirectional_is_two_loops_in_opposite_directions():
    model = gr.loads(BIDIRECTIONAL, I=3, H=2)
    found = loops(model.graph)
    assert len(found) == 2
    by_direction = {loop.forward: loop for loop in found}
    assert set(by_direction) == {True, False}
    assert all(loop.axis == "t" for loop in found)
    assert "fw" in names(by_direction[True]) and "bw" not in names(by_direction[True])
    assert "bw" in names(by_direction[False]) and "fw" not in names(by_direction[False])
    assert [d.attrs["offset"] for d in by_direction[True].delays] == [-1]
    assert [d.attrs["offset"] for d in by_direction[False].delays] == [1]


def test_bidirectional_values_match_numpy():
    model = gr.loads(BIDIRECTIONAL, I=3, H=2)
    rng = np.random.default_rng(0)
    p = {k: rng.normal(0.0, 0.7, v.shape) for k, v in model.params.items()}
    x = rng.normal(size=(5, 2, 3))
    out = model.compile().forward(p, {"x": x})
    fw, bw = np.zeros((5, 2, 2)), np.zeros((5, 2, 2))
    h = np.zeros((2, 2))
    for t in range(5):
        h = fw[t] = np.tanh(x[t] @ p["U"].T + h @ p["W"].T)
    h = np.zeros((2, 2))
    for t in reversed(range(5)):
        h = bw[t] = np.tanh(x[t] @ p["Ub"].T + h @ p["Wb"].T)
    np.testing.assert_allclose(out["fw"], fw, rtol=1e-12)
    np.testing.assert_allclose(out["bw"], bw, rtol=1e-12)
    np.testing.assert_allclose(out["o"], fw + bw, rtol=1e-12)


def test_adjoint_of_bidirectional_runs_each_recurrence_the_other_way():
    model = gr.loads(BIDIRECTIONAL, I=3, H=2)
    adjoint_loops = loops(grad(model.graph))
    delays = {(loop.forward, d.attrs["offset"]) for loop in adjoint_loops for d in loop.delays}
    assert delays == {(True, -1), (False, 1)}
    for loop in adjoint_loops:
        offsets = {d.attrs["offset"] for d in loop.delays}
        assert offsets == ({-1} if loop.forward else {1}), (loop.forward, offsets)
    # fw and bw are recomputed; the adjoint of fw runs backwards, the adjoint of bw forwards
    assert len(adjoint_loops) == 4
    assert sorted(loop.forward for loop in adjoint_loops) == [False, False, True, True]


def test_lag_two_is_one_forward_loop():
    text = """
model M(I):
    input x[I] over t
    param W[I, I]
    h(0) = zeros(I)
    h(t) = tanh(W @ h(t-2) + x(t))
    loss = mean over t of sum(h(t))
"""
    (loop,) = loops(gr.loads(text, I=2).graph)
    assert loop.forward and [d.attrs["offset"] for d in loop.delays] == [-2]


def test_elman_hoists_the_input_projection_out_of_the_loop():
    model = gr.load("models/elman.grnn", I=3, H=4, O=2)
    items = schedule(model.graph.roots())
    (loop,) = [i for i in items if isinstance(i, Loop)]
    assert loop.forward and loop.axis == "t"
    inside = {n.id for n in loop.nodes}
    x = model.graph.inputs["x"]
    projection = [n for n in model.graph.nodes() if n.op == "matmul" and x in n.inputs]
    assert projection and all(n.id not in inside for n in projection)
    assert any(isinstance(i, Bulk) and i.node is projection[0] for i in items)
    assert {"a", "h"} <= names(loop) and "o" not in names(loop)


@pytest.mark.parametrize("model_file", ["elman", "jordan"])
def test_schedule_puts_every_input_first(model_file):
    model = gr.load(f"models/{model_file}.grnn", I=3, H=4, O=2)
    for graph in (model.graph, grad(model.graph)):
        done: set[int] = set()
        for item in schedule(graph.roots()):
            members = [item.node] if isinstance(item, Bulk) else item.nodes
            ids = {n.id for n in members}
            for node in members:
                for k, i in enumerate(node.inputs):
                    delayed = node.op == "delay" and k == 0
                    assert i.id in done or (i.id in ids and (delayed or i.id != node.id)), node
                if isinstance(item, Loop):
                    done.add(node.id)
            done |= ids


# ---- a missing initial state -------------------------------------------------------------------
def test_missing_initial_state_names_h0():
    text = """
model M(I):
    input x[I] over t
    param W[I, I]
    h(t) = tanh(W @ h(t-1) + x(t))
    loss = mean over t of sum(h(t))
"""
    with pytest.raises(DSLError) as info:
        gr.loads(text, I=2)
    assert not isinstance(info.value, CausalityError)
    assert "h(0)" in str(info.value)


def test_missing_initial_state_of_a_backward_recurrence_names_it():
    text = """
model M(I):
    input x[I] over t
    param W[I, I]
    g(t) = tanh(W @ g(t+1) + x(t))
    loss = mean over t of sum(g(t))
"""
    with pytest.raises(DSLError, match=r"g\(0\)"):
        gr.loads(text, I=2)


def test_static_value_in_a_graph_is_a_bulk_item():
    W = param_node("W", (2, 2), ("zeros", ()))
    graph = Graph("m", (), params={"W": W}, outputs={"y": apply("transpose", W)})
    items = schedule(graph.roots())
    assert all(isinstance(i, Bulk) for i in items)
    assert items[-1].node is graph.outputs["y"]


def test_whole_sequence_reduction_inside_its_own_recurrence_is_rejected():
    import pytest

    import graphrnn as gr
    from graphrnn.errors import CausalityError

    text = """
model M(I):
    input x[I] over t
    h(0) = zeros(I)
    h(t) = tanh(x(t) + (mean over t of h(t-1)))
"""
    with pytest.raises(CausalityError, match="whole-sequence"):
        gr.loads(text, I=2)
