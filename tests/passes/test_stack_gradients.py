"""stack_gradients: the per-gate weight gradients and bias sums become one stacked GEMM and
one sum, read from the concat the backward product already multiplies."""

from __future__ import annotations

import pytest

from graphrnn.passes.pipeline import optimize
from graphrnn.passes.stack_gradients import stack_gradients
from graphrnn.schedule import Bulk, schedule
from tests.passes.helpers import (
    ROOT,
    adjoint,
    assert_same_values,
    assert_well_formed,
    model_paths,
)

PATHS = model_paths()
LSTM = ROOT / "models" / "lstm.grnn"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_zoo_values_unchanged(path):
    before, _ = optimize(adjoint(path), disable={"stack_gradients"})
    after, lines = stack_gradients(before)
    assert_well_formed(before, after)
    assert_same_values(path, before, after)
    assert lines[0].startswith("stack_gradients: ")


def _gradient_gemms(graph) -> list:
    """Bulk sums of outer products: the weight-gradient GEMMs the backends run."""
    return [
        item.node
        for item in schedule(graph.roots())
        if isinstance(item, Bulk)
        and item.node.op == "reduce_to"
        and item.node.inputs[0].op == "outer"
    ]


def test_lstm_gate_gradients_are_one_gemm_from_the_backward_concat():
    before, _ = optimize(adjoint(LSTM), disable={"stack_gradients"})
    gate_shape = (4, 3 + 4)  # [H, H + I] per gate
    assert [n.shape for n in _gradient_gemms(before)].count(gate_shape) == 4
    after, lines = optimize(adjoint(LSTM))
    gemms = _gradient_gemms(after)
    assert gate_shape not in [n.shape for n in gemms]
    (gemm,) = [n for n in gemms if n.shape == (3 + 4, 16)]
    stacked = gemm.inputs[0].inputs[1]
    assert stacked.op == "concat" and stacked.shape == (16,)
    readers = [n for n in after.nodes() if stacked in n.inputs]
    assert any(n.op == "matmul" for n in readers), "the backward product reads the same concat"
    assert any("4 weight gradients -> 1 [7 x 16]" in line for line in lines), lines
    assert_same_values(LSTM, before, after)
