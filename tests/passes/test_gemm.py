"""gemm_merge and gemm_sum: products sharing a vector, and sums of products, become one."""

from __future__ import annotations

import pytest

import graphrnn as gr
from graphrnn.autodiff import grad
from graphrnn.ir.graph import Graph
from graphrnn.passes.cse import cse
from graphrnn.passes.gemm_merge import gemm_merge
from graphrnn.passes.gemm_sum import gemm_sum
from graphrnn.passes.pipeline import optimize
from graphrnn.schedule import Loop, schedule
from tests.passes.helpers import (
    ROOT,
    adjoint,
    assert_same_values,
    assert_well_formed,
    model_paths,
    ops,
)

PATHS = model_paths()
LSTM = ROOT / "models" / "lstm.grnn"


def _z(graph: Graph):
    (z,) = [n for n in graph.nodes() if n.name == "h.z"]
    return z


def _products_of(graph: Graph, vector) -> list:
    return [n for n in ops(graph, "matmul") if n.inputs[1] is vector]


def _loop_nodes(graph: Graph) -> set[int]:
    return {n.id for item in schedule(graph.roots()) if isinstance(item, Loop) for n in item.nodes}


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
@pytest.mark.parametrize("run", [gemm_merge, gemm_sum], ids=["merge", "sum"])
def test_zoo_values_unchanged(path, run):
    before = adjoint(path)
    after, lines = run(before)
    assert_well_formed(before, after)
    assert_same_values(path, before, after)
    assert lines[0].startswith(run.__name__ + ": ")


def test_lstm_gate_products_become_one():
    before = adjoint(LSTM)
    assert len(_products_of(before, _z(before))) == 4
    after, lines = gemm_merge(before)
    (product,) = _products_of(after, _z(after))  # one forward matmul per step reads z
    assert product.shape == (16,)
    assert product.id in _loop_nodes(after)
    slices = [n for n in after.nodes() if n.op == "slice" and n.inputs[0] is product]
    assert sorted((s.attrs["start"], s.attrs["stop"]) for s in slices) == [
        (0, 4),
        (4, 8),
        (8, 12),
        (12, 16),
    ]
    # the stacked matrix is static: computed once, outside the loop
    stacked = product.inputs[0]
    assert stacked.context.axes == frozenset() and not stacked.batched
    assert stacked.id not in _loop_nodes(after)
    assert "4 products of 'h.z' (h.Wf, h.Wi, h.Wc, h.Wo) -> 1 [16 x 7]" in lines[0]


def test_lstm_backward_sum_becomes_one_product():
    before = adjoint(LSTM)
    loop = _loop_nodes(before)
    in_loop = [n for n in ops(before, "matmul") if n.id in loop]
    after, lines = gemm_sum(before)
    loop_after = _loop_nodes(after)
    in_loop_after = [n for n in ops(after, "matmul") if n.id in loop_after]
    assert len(in_loop) == 8 and len(in_loop_after) == 5  # 4 forward + 1 backward
    (merged,) = [n for n in in_loop_after if n.inputs[1].shape == (16,)]
    assert merged.inputs[0].shape == (7, 16) and merged.inputs[1].shape == (16,)
    assert "sum of 4 products (h.Wf^T, h.Wi^T, h.Wc^T, h.Wo^T) -> 1 [7 x 16]" in lines[0]


def test_lstm_optimised_loops_multiply_only_the_recurrent_state():
    """After every pass the LSTM's loops hold one product each, of the stacked recurrent
    blocks W_h (forward) and W_h^T (backward); the x blocks are one product each in bulk."""
    before = adjoint(LSTM)
    after, _ = optimize(before)
    assert_same_values(LSTM, before, after)
    loop = _loop_nodes(after)
    z = [n for n in before.nodes() if n.name == "h.z"][0]
    hidden, inputs = z.inputs[0].shape[0], z.shape[0] - z.inputs[0].shape[0]
    in_loop = sorted(n.inputs[0].shape for n in ops(after, "matmul") if n.id in loop)
    assert in_loop == [(hidden, 4 * hidden), (4 * hidden, hidden)]
    hoisted = [n.inputs[0].shape for n in ops(after, "matmul") if n.id not in loop]
    assert (4 * hidden, inputs) in hoisted and (inputs, 4 * hidden) in hoisted


def test_hoisted_products_are_not_pulled_into_a_loop():
    """In the Elman adjoint U^T g (the x gradient, in bulk) and W^T g (in the backward
    recurrence) share g; merging them would move U^T g into the loop."""
    before = adjoint(ROOT / "models" / "elman.grnn")
    after, lines = gemm_merge(before)
    assert len(ops(after, "matmul")) == len(ops(before, "matmul"))
    assert lines[0].startswith("gemm_merge: 0 merged")


def test_bidirectional_input_projections_merge_in_bulk():
    before = adjoint(ROOT / "models" / "birnn.grnn")
    (x,) = before.inputs.values()
    assert len(_products_of(before, x)) == 2
    after, _ = gemm_merge(before)
    (product,) = _products_of(after, x)
    assert product.id not in _loop_nodes(after)
    assert_same_values(ROOT / "models" / "birnn.grnn", before, after)


def test_named_products_keep_their_names():
    model = gr.loads(
        """
model Two(I, H, O):
    input  x[I] over t
    target y[O] over t
    param  A[H, I] ~ glorot_uniform
    param  B[H, I] ~ glorot_uniform
    param  V[O, H] ~ glorot_uniform
    a(t) = A @ x(t)
    b(t) = B @ x(t)
    o(t) = V @ tanh(a(t) * b(t))
    loss = mean over t of softmax_cross_entropy(o(t), y(t))
""",
        I=3,
        H=4,
        O=2,
    )
    before = grad(model.graph)
    after, _ = gemm_merge(before)
    named = {n.name: n for n in after.nodes() if n.name in ("a", "b")}
    assert named["a"].op == named["b"].op == "slice"
    assert named["a"].inputs[0] is named["b"].inputs[0]


def test_shared_matrix_is_not_merged():
    """Products sharing a matrix but not a vector stay apart (V h and V^T g are different)."""
    before = adjoint(ROOT / "models" / "elman.grnn")
    after, _ = cse(gemm_merge(before)[0])
    v = before.params["V"]
    assert len([n for n in ops(after, "matmul") if n.inputs[0] is v]) == 1
