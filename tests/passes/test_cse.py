"""cse: equal nodes merged to a fixpoint, values unchanged, leaves and names kept."""

from __future__ import annotations

from collections import Counter

import pytest

from graphrnn.ir.graph import Graph, resolve_aliases
from graphrnn.ir.node import Context
from graphrnn.ir.ops.leaf import bind, const, input_node, param_node, placeholder
from graphrnn.ir.registry import apply
from graphrnn.passes._common import freeze
from graphrnn.passes.cse import cse, node_key
from graphrnn.schedule import schedule
from tests.passes.helpers import (
    KNOWN,
    ROOT,
    adjoint,
    assert_same_outputs,
    assert_same_values,
    assert_well_formed,
    model_paths,
    ops,
)

PATHS = model_paths()


def _keys(graph: Graph) -> Counter:
    return Counter(k for n in graph.nodes() if (k := node_key(n)) is not None)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_zoo(path):
    before = adjoint(path)
    after, lines = cse(before)
    assert_well_formed(before, after)
    assert_same_values(path, before, after)
    assert max(_keys(after).values()) == 1  # no two nodes left with the same key
    if path.stem in KNOWN:  # their adjoints all repeat const(1)
        assert len(after.nodes()) < len(before.nodes())
    assert lines[0].startswith("cse: merged ")


def test_lstm_counts():
    before = adjoint(ROOT / "models" / "lstm.grnn")
    ones = [n for n in before.nodes() if n.op == "const" and n.attrs["value"] == 1.0]
    assert len(ones) > 1  # the seed and one per sigmoid/tanh derivative
    after, lines = cse(before)
    merged = len(before.nodes()) - len(after.nodes())
    assert merged >= len(ones) - 1
    assert lines == [
        f"cse: merged {merged} nodes, {len(before.nodes())} -> {len(after.nodes())} nodes"
    ]
    ones = [n for n in after.nodes() if n.op == "const" and n.attrs["value"] == 1.0]
    assert len(ones) == 1


def _graph(outputs: dict, *leaves) -> Graph:
    g = Graph("g", ("t",))
    for leaf in leaves:
        (g.params if leaf.op == "param" else g.inputs)[leaf.name] = leaf
    g.outputs = outputs
    return g


def test_commutative_transitive_and_named():
    x = input_node("x", (3,), ("t",))
    w = param_node("W", (3, 3), ("zeros", ()))
    a = apply("add", x, apply("matmul", w, x))
    b = apply("add", apply("matmul", w, x), x, name="b")  # operands swapped
    t1, t2 = apply("transpose", w), apply("transpose", w)
    y1 = apply("tanh", apply("mul", a, apply("matmul", t1, x)))
    y2 = apply("tanh", apply("mul", apply("matmul", t2, x), b))
    before = _graph({"y1": y1, "y2": y2}, x, w)
    after, lines = cse(before)
    assert_well_formed(before, after)
    assert_same_outputs(before, after)
    assert after.outputs["y1"] is after.outputs["y2"]
    assert len(ops(after, "matmul")) == 2 and len(ops(after, "transpose")) == 1
    assert [n.name for n in ops(after, "add")] == ["b"]  # the survivor takes the user's name
    assert lines == ["cse: merged 6 nodes, 14 -> 8 nodes"]


def test_cycles_merge_through_delays():
    """Two identical delays of one recurrence merge, and so does what reads them; the
    merged graph is still a valid recurrence."""
    x = input_node("x", (3,), ("t",))
    h = placeholder((3,), Context(frozenset({"t"}), True))
    d1 = apply("delay", h, const(0.0, (3,)), axis="t", offset=-1)
    d2 = apply("delay", h, const(0.0, (3,)), axis="t", offset=-1)
    value = apply("tanh", apply("add", apply("add", x, d1), apply("add", x, d2)))
    bind(h, value)
    other = apply("sigmoid", apply("add", x, d2))
    g = resolve_aliases(_graph({"h": h, "o": other}, x))
    after, _ = cse(g)
    assert_well_formed(g, after)
    assert_same_outputs(g, after)
    assert len(ops(after, "delay")) == 1 and len(ops(after, "const")) == 1
    assert len(ops(after, "add")) == 2
    schedule(after.roots())


def test_keys_keep_values_apart():
    assert freeze(0.0) != freeze(-0.0)
    assert freeze(1) != freeze(1.0) != freeze(True)
    assert freeze(float("nan")) == freeze(float("nan"))
    assert freeze((1, 2)) != freeze([1, 2])
    x = input_node("x", (), ("t",))
    a = apply("mul", x, const(0.0))
    b = apply("mul", x, const(-0.0))
    g = _graph({"a": a, "b": b}, x)
    after, _ = cse(g)
    assert after.outputs["a"] is not after.outputs["b"]


def test_input_graph_untouched():
    before = adjoint(ROOT / "models" / "elman.grnn")
    snapshot = [(n, list(n.inputs)) for n in before.nodes()]
    cse(before)
    assert all(n.inputs == inputs for n, inputs in snapshot)
