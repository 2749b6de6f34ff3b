"""split_products: a product inside a recurrence gives up the part that does not recur."""

from __future__ import annotations

import pytest

from graphrnn.passes.gemm_sum import gemm_sum
from graphrnn.passes.split_products import split_products
from graphrnn.schedule import Loop, schedule
from tests.passes.helpers import ROOT, adjoint, assert_same_values, model_paths, ops

LSTM = ROOT / "models" / "lstm.grnn"


def _in_loop(graph) -> set[int]:
    return {n.id for item in schedule(graph.roots()) if isinstance(item, Loop) for n in item.nodes}


def test_lstm_input_blocks_leave_the_forward_loop():
    before = adjoint(LSTM)
    after, lines = split_products(before)
    assert_same_values(LSTM, before, after)
    assert lines[0].startswith("split_products: 4 split")
    loop = _in_loop(after)
    forward = [n for n in ops(after, "matmul") if n.inputs[1].op in ("delay", "input")]
    assert {n.inputs[1].op for n in forward if n.id in loop} == {"delay"}  # W_h @ h(t-1)
    assert {n.inputs[1].op for n in forward if n.id not in loop} == {"input"}  # W_x @ x(t)


def test_lstm_input_gradient_leaves_the_backward_loop():
    """After gemm_sum the adjoint's [W_h; W_x]^T g is one product; only its h rows recur."""
    summed, _ = gemm_sum(adjoint(LSTM))
    wide = [n for n in ops(summed, "matmul") if n.id in _in_loop(summed) and n.shape == (7,)]
    assert len(wide) == 1  # [4 + 3] rows: the whole concat gradient, every step
    after, lines = split_products(summed)
    assert_same_values(LSTM, summed, after)
    in_loop = [n.shape for n in ops(after, "matmul") if n.id in _in_loop(after)]
    assert (7,) not in in_loop and (4,) in in_loop
    assert lines[0].startswith("split_products: 5 split")  # 4 gates by columns, 1 by rows


def test_rows_no_slice_reads_are_not_computed():
    """Without an input gradient nothing reads the x rows of [W_h; W_x]^T g: the backward loop
    multiplies by the h rows alone (it multiplied all of them every step)."""
    from graphrnn.autodiff import grad
    from tests.passes.helpers import load

    model = load(LSTM)
    summed, _ = gemm_sum(grad(model.graph, wrt=list(model.graph.params)))
    assert (7,) in [n.shape for n in ops(summed, "matmul") if n.id in _in_loop(summed)]
    after, lines = split_products(summed)
    in_loop = [n.shape for n in ops(after, "matmul") if n.id in _in_loop(after)]
    assert (7,) not in in_loop and (4,) in in_loop
    assert lines[0].startswith("split_products: 5 split")  # 4 gates by columns, 1 by rows


@pytest.mark.parametrize("name", ["elman", "jordan", "birnn"])
def test_models_without_concatenated_state_are_untouched(name):
    before = adjoint(ROOT / "models" / f"{name}.grnn")
    after, lines = split_products(before)
    assert lines[0].startswith("split_products: 0 split")
    assert len(after.nodes()) == len(before.nodes())


@pytest.mark.parametrize("path", model_paths(), ids=lambda p: p.stem)
def test_values_are_preserved_on_every_model(path):
    before = adjoint(path)
    summed, _ = gemm_sum(split_products(before)[0])
    assert_same_values(path, before, split_products(summed)[0])
