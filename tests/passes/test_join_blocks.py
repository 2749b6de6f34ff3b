"""join_blocks: a sum of padded blocks (the adjoint of slices) becomes one concat."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from graphrnn.ir.graph import Graph
from graphrnn.ir.node import Context
from graphrnn.ir.registry import apply
from graphrnn.passes.join_blocks import join_blocks
from graphrnn.passes.pipeline import optimize
from graphrnn.schedule import Loop, schedule
from tests.ir.gradcheck import make_leaf
from tests.passes.helpers import (
    ROOT,
    adjoint,
    assert_same_outputs,
    assert_same_values,
    assert_well_formed,
    model_paths,
    ops,
)

PATHS = model_paths()
STACKED = ROOT / "models" / "lstm_torch.grnn"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_zoo_values_unchanged(path):
    before = adjoint(path)
    after, lines = join_blocks(before)
    assert_well_formed(before, after)
    assert_same_values(path, before, after)
    assert lines[0].startswith("join_blocks: ")


def _loop_ops(graph: Graph) -> list[str]:
    return [n.op for item in schedule(graph.roots()) if isinstance(item, Loop) for n in item.nodes]


def test_stacked_lstm_gate_adjoints_are_one_concat():
    before = adjoint(STACKED)
    assert _loop_ops(before).count("pad") == 4
    after, lines = optimize(before)
    loop = _loop_ops(after)
    assert "pad" not in loop and loop.count("concat") == 1, loop
    assert any(line.startswith("join_blocks: 1 joined") for line in lines), lines
    assert_same_values(STACKED, before, after)


def _pads_sum(blocks, width: int, context: Context):
    """sum of pad(x_k, before=start_k) over the blocks, each x_k a fresh input."""
    xs = [make_leaf(f"x{k}", (size,), context) for k, (start, size) in enumerate(blocks)]
    terms = [
        apply("pad", x, before=start, after=width - start - size)
        for x, (start, size) in zip(xs, blocks)
    ]
    total = terms[0]
    for t in terms[1:]:
        total = apply("add", total, t)
    return xs, total


@given(st.lists(st.integers(1, 3), min_size=2, max_size=4), st.lists(st.integers(0, 2)))
def test_disjoint_blocks_join_to_the_same_values(sizes, gaps):
    blocks, start = [], 0
    for k, size in enumerate(sizes):
        start += gaps[k] if k < len(gaps) else 0
        blocks.append((start, size))
        start += size
    width = start + 1
    context = Context(frozenset({"t"}), True)
    xs, total = _pads_sum(blocks[::-1], width, context)
    graph = Graph("g", ("t",), inputs={x.name: x for x in xs}, outputs={"y": total})
    after, _ = join_blocks(graph)
    assert ops(after, "pad") == [] and len(ops(after, "concat")) == 1
    assert_same_outputs(graph, after)


def test_overlapping_blocks_stay_pads():
    context = Context(frozenset({"t"}), True)
    xs, total = _pads_sum([(0, 3), (2, 2)], 5, context)
    graph = Graph("g", ("t",), inputs={x.name: x for x in xs}, outputs={"y": total})
    after, lines = join_blocks(graph)
    assert len(ops(after, "pad")) == 2 and ops(after, "concat") == []
    assert lines[0].startswith("join_blocks: 0 joined")
