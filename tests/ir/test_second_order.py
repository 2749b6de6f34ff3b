"""Second order: the gradient graph of an elementwise op, differentiated again.

The first gradient is a graph of ordinary nodes, so `backpropagate` applies to it too. The test
forms s = sum(random weights * first gradient) and compares the second gradient (the
Hessian-vector products) with central differences of the evaluated first gradient.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from graphrnn.ir.registry import apply

from .gradcheck import Builder, check_gradients, gradients, reduce_all, scalar_loss
from .test_ops_vjp import UNARY_VALUES, binary_case, unary_case

ELEMENTWISE = {**{op: unary_case for op in UNARY_VALUES}}
ELEMENTWISE.update({op: binary_case for op in ("add", "sub", "mul", "div")})


def weighted_sum_of_gradients(b: Builder, first) -> object:
    total = None
    for g, leaf in zip(first, b.leaves):
        assert g.shape == leaf.shape, f"the gradient of {leaf.name} has shape {g.shape}"
        # batched weights: every term varies over the batch, so none is an unbatched operand
        # of a batched sum (that case has its own test in test_ops_vjp.py)
        term = reduce_all(apply("mul", g, b.weights(leaf, batched=True)))
        total = term if total is None else apply("add", total, term)
    return apply("batch_mean", total)


@pytest.mark.parametrize("op", sorted(ELEMENTWISE))
@given(data=st.data())
def test_gradient_of_gradient_matches_finite_differences(op, data):
    b = Builder(data.draw)
    out = ELEMENTWISE[op](op, data.draw, b)
    loss = scalar_loss(b, out)
    first = gradients(loss, b.leaves)
    assert not any(n.op == "alias" for n in first)
    s = weighted_sum_of_gradients(b, first)
    check_gradients(b, s, gradients(s, b.leaves))


@pytest.mark.parametrize("op", ["tanh", "sigmoid", "exp", "log", "sqrt"])
@given(data=st.data())
def test_third_order_of_smooth_unary_ops(op, data):
    """The gradient graph differentiates again, and so does its gradient."""
    b = Builder(data.draw)
    out = unary_case(op, data.draw, b)
    s = scalar_loss(b, out)
    for _ in range(2):
        s = weighted_sum_of_gradients(b, gradients(s, b.leaves))
    check_gradients(b, s, gradients(s, b.leaves), directions=1)
