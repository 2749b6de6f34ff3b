"""Property tests: random small expression graphs, with constants 0, 1, -1 and 2 mixed in and
sometimes a recurrence, evaluate identically before and after simplify + cse (and the whole
pipeline)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from graphrnn.ir.graph import Graph, resolve_aliases
from graphrnn.ir.node import STATIC, Context
from graphrnn.ir.ops.leaf import bind, const, input_node, param_node, placeholder
from graphrnn.ir.registry import apply
from graphrnn.passes import optimize
from graphrnn.passes.cse import cse
from graphrnn.passes.simplify import simplify
from tests.passes.helpers import assert_same_outputs, assert_well_formed

N = 3
STEPS = Context(frozenset({"t"}), True)
VALUES = [0.0, 1.0, -1.0, 2.0, 0.5]


@st.composite
def graphs(draw) -> Graph:
    x = input_node("x", (N,), ("t",))
    y = input_node("y", (N,), ("t",))
    w = param_node("W", (N, N), ("zeros", ()))
    b = param_node("b", (N,), ("zeros", ()))
    vectors = [x, y, b]
    scalars = [apply("sum", x)]
    matrices = [w]
    recurrent = draw(st.booleans())
    h = placeholder((N,), STEPS) if recurrent else None
    if recurrent:
        vectors.append(apply("delay", h, const(0.0, (N,)), axis="t", offset=-1))

    def constant(shape):
        return const(draw(st.sampled_from(VALUES)), shape)

    def vector():
        if draw(st.integers(0, 4)) == 0:
            return constant((N,))
        return draw(st.sampled_from(vectors))

    def scalar():
        if draw(st.booleans()):
            return constant(())
        return draw(st.sampled_from(scalars))

    def matrix():
        if draw(st.integers(0, 4)) == 0:
            return constant((N, N))
        return draw(st.sampled_from(matrices))

    for _ in range(draw(st.integers(1, 14))):
        kind = draw(
            st.sampled_from(
                [
                    "binary",
                    "binary",
                    "scalar_binary",
                    "unary",
                    "negneg",
                    "addneg",
                    "div",
                    "matmul",
                    "shared_vector",
                    "sum_of_products",
                    "transpose",
                    "outer",
                    "sum",
                    "expand",
                    "slices",
                    "pad",
                    "reduce_to",
                    "reduce_axis",
                    "delay",
                ]
            )
        )
        if kind == "binary":
            op = draw(st.sampled_from(["add", "sub", "mul"]))
            vectors.append(apply(op, vector(), vector()))
        elif kind == "scalar_binary":
            op = draw(st.sampled_from(["add", "sub", "mul"]))
            a, s = vector(), scalar()
            vectors.append(apply(op, a, s) if draw(st.booleans()) else apply(op, s, a))
        elif kind == "unary":
            op = draw(st.sampled_from(["neg", "tanh", "sigmoid"]))
            vectors.append(apply(op, vector()))
        elif kind == "negneg":
            vectors.append(apply("neg", apply("neg", vector())))
        elif kind == "addneg":
            op = draw(st.sampled_from(["add", "sub"]))
            vectors.append(apply(op, vector(), apply("neg", vector())))
        elif kind == "div":
            denominator = apply("add", const(2.0), apply("tanh", vector()))
            vectors.append(apply("div", vector(), denominator))
        elif kind == "matmul":
            vectors.append(apply("matmul", matrix(), vector()))
        elif kind == "shared_vector":
            v = vector()
            vectors.append(apply("matmul", matrix(), v))
            vectors.append(apply("matmul", matrix(), v))
        elif kind == "sum_of_products":
            products = [apply("matmul", matrix(), vector()) for _ in range(draw(st.integers(2, 3)))]
            total = products[0]
            for p in products[1:]:
                total = apply("add", total, p)
            vectors.append(total)
        elif kind == "transpose":
            matrices.append(apply("transpose", matrix()))
        elif kind == "outer":
            matrices.append(apply("outer", vector(), vector()))
        elif kind == "sum":
            scalars.append(apply("sum", vector()))
        elif kind == "expand":
            vectors.append(apply("expand", scalar(), shape=(N,)))
        elif kind == "slices":
            a, c = vector(), vector()
            k = draw(st.integers(1, N - 1))
            parts = [apply("slice", a, start=0, stop=k), apply("slice", c, start=k, stop=N)]
            vectors.append(apply("concat", *parts))
        elif kind == "pad":
            k = draw(st.integers(0, N - 1))
            piece = apply("slice", vector(), start=k, stop=N)
            vectors.append(apply("pad", piece, before=k, after=0))
        elif kind == "reduce_to":
            vectors.append(apply("reduce_to", vector(), context=STATIC, shape=(N,)))
        elif kind == "reduce_axis":
            # inside a recurrence only of what does not depend on it (else not causal)
            source = draw(st.sampled_from([x, y, b])) if recurrent else vector()
            how = draw(st.sampled_from(["sum", "mean"]))
            total = apply("reduce_axis", source, axis="t", kind=how)
            vectors.append(apply("expand_axis", total, axis="t"))
        elif kind == "delay":
            init = draw(
                st.sampled_from(
                    # not from the recurrence: a sum over its steps inside it is not causal
                    [constant((N,)), b, apply("reduce_axis", y, axis="t", kind="mean")]
                )
            )
            # a delay against the recurrence's direction inside it would not be causal
            offset = draw(st.sampled_from([-1, -2] if recurrent else [-1, 1, -2]))
            vectors.append(apply("delay", vector(), init, axis="t", offset=offset))
    if recurrent:
        bind(h, apply("tanh", apply("add", vectors[-1], x)))
    picks = draw(st.lists(st.integers(0, len(vectors) - 1), min_size=1, max_size=3))
    outputs = {f"v{k}": vectors[k] for k in picks}
    outputs["last"] = vectors[-1]
    outputs["s"] = scalars[-1]
    outputs["m"] = apply("reduce_to", matrices[-1], context=STATIC, shape=(N, N))
    g = Graph("random", ("t",), inputs={"x": x, "y": y}, params={"W": w, "b": b})
    g.outputs = outputs
    if recurrent:
        g.outputs["h"] = h
    return resolve_aliases(g)


@given(graphs())
def test_simplify_then_cse(graph):
    simplified, _ = simplify(graph)
    assert_well_formed(graph, simplified)
    assert_same_outputs(graph, simplified)
    merged, _ = cse(simplified)
    assert_well_formed(graph, merged)
    assert_same_outputs(graph, merged)
    assert len(merged.nodes()) <= len(graph.nodes())


@given(graphs())
def test_pipeline(graph):
    optimized, _ = optimize(graph)
    assert_well_formed(graph, optimized)
    assert_same_outputs(graph, optimized)
