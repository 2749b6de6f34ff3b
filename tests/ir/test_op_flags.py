"""The facts flagged on op records (ir/registry.py `Op`) hold for the reference evaluation.

The passes trust the flags instead of lists of op names, so a wrong flag is a wrong rewrite.
For each flagged op Hypothesis draws operands with the cases of test_ops_vjp.py and checks:
  linear        op(a x + b y) = a op(x) + b op(y), every operand scaled together
  linear_in k   the same in operand k alone, the others held fixed
  commutative   op(x, y) = op(y, x)
  materialises  the reference array has the node's own stored context
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from graphrnn.ir.registry import OPS, apply

from .gradcheck import Builder
from .test_ops_vjp import CASES

LINEAR = sorted(name for name, op in OPS.items() if op.linear)
LINEAR_IN = sorted((name, k) for name, op in OPS.items() for k in op.linear_in)
COMMUTATIVE = sorted(name for name, op in OPS.items() if op.commutative)
MATERIALISES = sorted(name for name, op in OPS.items() if op.materialises)
coefficients = st.floats(-2.0, 2.0, allow_nan=False)


def test_every_flagged_op_has_a_case():
    flagged = {*LINEAR, *(name for name, _ in LINEAR_IN), *COMMUTATIVE, *MATERIALISES}
    assert sorted(flagged - set(CASES)) == [], "flagged ops that no test below can check"


def test_linear_in_names_operands_the_op_has():
    for name, k in LINEAR_IN:
        arity = OPS[name].arity
        assert arity is None or 0 <= k < arity, f"{name}: linear_in {k} of arity {arity}"


def _draw(op: str, data) -> tuple[Builder, object]:
    b = Builder(data.draw)
    out = CASES[op](op, data.draw, b)
    assert out.op == op
    return b, out


def _combine(b: Builder, out, positions: list[int], a: float, c: float) -> None:
    """Evaluate op at x, at y and at a x + c y in the leaves at `positions`; assert linearity."""
    x = list(b.values)
    y = list(x)
    for j in positions:
        y[j] = b.rng.normal(0.0, 1.0, x[j].shape)
    mixed = list(x)
    for j in positions:
        mixed[j] = a * x[j] + c * y[j]
    (fx,), (fy,), (fm,) = (b.evaluate([out], v) for v in (x, y, mixed))
    np.testing.assert_allclose(fm, a * fx + c * fy, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("op", LINEAR)
@given(data=st.data(), a=coefficients, c=coefficients)
def test_linear_ops_are_linear_in_all_operands_together(op, data, a, c):
    b, out = _draw(op, data)
    _combine(b, out, list(range(len(b.leaves))), a, c)


@pytest.mark.parametrize(("op", "k"), LINEAR_IN)
@given(data=st.data(), a=coefficients, c=coefficients)
def test_linear_in_ops_are_linear_in_that_operand(op, k, data, a, c):
    b, out = _draw(op, data)
    ids = [leaf.id for leaf in b.leaves]
    _combine(b, out, [ids.index(out.inputs[k].id)], a, c)


@pytest.mark.parametrize("op", COMMUTATIVE)
@given(data=st.data())
def test_commutative_ops_give_the_same_with_swapped_operands(op, data):
    b, out = _draw(op, data)
    swapped = apply(op, *reversed(out.inputs), **out.attrs)
    np.testing.assert_array_equal(*b.evaluate([out, swapped]))


@pytest.mark.parametrize("op", MATERIALISES)
@given(data=st.data())
def test_materialising_ops_build_their_own_context(op, data):
    b, out = _draw(op, data)
    (value,) = b.evaluate([out])
    assert value.shape == b.env.aligned_shape(out.context, out.shape)
