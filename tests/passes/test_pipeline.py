"""optimize: the passes in their default order, switchable by name, on every model."""

from __future__ import annotations

import pytest

from graphrnn.errors import GraphRNNError
from graphrnn.passes import ORDER, PASSES, optimize
from tests.passes.helpers import (
    KNOWN,
    ROOT,
    adjoint,
    assert_same_outputs,
    assert_same_values,
    assert_well_formed,
    load,
    model_paths,
    ops,
)

PATHS = model_paths()
LSTM = ROOT / "models" / "lstm.grnn"


def test_zoo_is_covered():
    assert {p.stem for p in PATHS} >= {"elman", "jordan", "lstm", "gru_cho", "birnn"}


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_zoo(path):
    before = adjoint(path)
    after, lines = optimize(before)
    assert_well_formed(before, after)
    assert_same_values(path, before, after)
    slim, _ = optimize(before, disable={"split_products", "stack_gradients"})  # these add nodes
    if path.stem in KNOWN:  # a model added later may have nothing to remove
        assert len(slim.nodes()) < len(before.nodes())
    assert len(slim.nodes()) <= len(before.nodes())
    assert lines[-1].startswith(f"optimize: {len(before.nodes())} -> {len(after.nodes())} nodes")
    assert [line.split(":")[0] for line in lines[:-1]] == list(ORDER)
    again, _ = optimize(after)
    assert len(again.nodes()) == len(after.nodes())  # a fixpoint


def test_names_and_order():
    assert list(PASSES) == [
        "simplify",
        "cse",
        "join_blocks",
        "split_products",
        "gemm_merge",
        "gemm_sum",
        "stack_gradients",
        "dce",
    ]
    assert set(ORDER) == set(PASSES)


def test_unknown_pass_lists_the_known_ones():
    with pytest.raises(GraphRNNError) as info:
        optimize(adjoint(LSTM), disable={"cse", "fusion"})
    message = str(info.value)
    assert "'fusion'" in message
    assert all(name in message for name in PASSES)


def test_disable_one():
    before = adjoint(LSTM)
    after, lines = optimize(before, disable={"gemm_merge", "gemm_sum", "split_products"})
    assert_same_values(LSTM, before, after)
    (z,) = [n for n in after.nodes() if n.name == "h.z"]
    assert len([n for n in ops(after, "matmul") if n.inputs[1] is z]) == 4
    assert not any(line.startswith(("gemm", "split")) for line in lines)
    assert lines[-1].endswith("disabled: gemm_merge, gemm_sum, split_products")
    # a single name may be given as a string
    _, lines = optimize(before, disable="cse")
    assert not any(line.startswith("cse") for line in lines)


def test_disable_all():
    before = adjoint(LSTM)
    after, lines = optimize(before, disable=set(PASSES))
    assert len(after.nodes()) == len(before.nodes())
    assert len(lines) == 1
    assert_same_values(LSTM, before, after)


def test_model_and_input_graph_untouched():
    model = load(LSTM)
    before = adjoint(LSTM)
    snapshot = [(n, list(n.inputs), n.name) for n in before.nodes()]
    outputs = dict(before.outputs)
    optimize(before)
    assert before.outputs == outputs
    assert all(n.inputs == inputs and n.name == name for n, inputs, name in snapshot)
    # the model's forward graph still schedules and its nodes are the adjoint's
    forward_ids = {n.id for n in model.graph.nodes()}
    assert forward_ids <= {n.id for n, _, _ in snapshot}


def test_forward_graph():
    """The passes work on forward graphs too (outputs and loss root)."""
    model = load(LSTM)
    graph, lines = optimize(model.graph)
    assert graph.loss is not None and list(graph.outputs) == list(model.graph.outputs)
    first = {}
    for line in lines:
        first.setdefault(line.split(":")[0], line)
    assert "split_products: 4 split" in first["split_products"]  # the x blocks leave
    assert "gemm_merge: 2 merged" in first["gemm_merge"]  # the h blocks stack, and the x blocks
    (z,) = [n for n in graph.nodes() if n.name == "h.z"]  # still an output, no longer multiplied
    assert not [n for n in ops(graph, "matmul") if n.inputs[1] is z]
    assert_same_outputs(model.graph, graph)


def test_unrolled_graph():
    """On an unrolled DAG the zero initial state propagates: at step 1 the forget gate only
    multiplies C(0) = 0, so it and its product disappear."""
    from graphrnn.autodiff import grad

    before = grad(load(LSTM).unroll(3))  # env_for evaluates with 3 steps
    after, lines = optimize(before)
    assert_well_formed(before, after)
    assert_same_outputs(before, after)
    assert not lines[0].startswith("simplify: 0 rewrites")
    assert lines[3].startswith("split_products: 0 split")  # no recurrence left to leave
    assert "3 products of 'h.z@1' (h.Wi, h.Wc, h.Wo)" in lines[4]
    assert len(after.nodes()) < len(before.nodes())
