"""dce: outputs not asked for are dropped with everything only they needed."""

from __future__ import annotations

import numpy as np
import pytest

from graphrnn.errors import GraphRNNError
from graphrnn.passes.dce import dce
from tests.passes.helpers import ROOT, adjoint, env_for, loss_and_grad

LSTM = ROOT / "models" / "lstm.grnn"


def test_keep_all_is_a_no_op():
    before = adjoint(LSTM)
    after, lines = dce(before)
    assert list(after.outputs) == list(before.outputs)
    assert len(after.nodes()) == len(before.nodes())
    assert lines == [
        f"dce: all {len(before.outputs)} outputs used, {len(before.nodes())} nodes live"
    ]


def test_drop_input_gradient():
    before = adjoint(LSTM)
    keep = [k for k in before.outputs if k != "grad:x"]
    after, lines = dce(before, keep=keep)
    assert list(after.outputs) == keep
    assert len(after.nodes()) < len(before.nodes())
    assert lines[0].startswith("dce: dropped outputs grad:x, ")
    # the kept outputs have the values they had
    full_loss, full = loss_and_grad(LSTM, before)
    after.outputs["grad:x"] = before.outputs["grad:x"]  # Compiled reads every grad: output
    loss, grads = loss_and_grad(LSTM, after)
    assert loss == full_loss
    for k in keep[1:]:
        name = k[5:]
        np.testing.assert_array_equal(grads[name], full[name])


def test_only_the_loss():
    before = adjoint(LSTM)
    after, _ = dce(before, keep=["loss"])
    # the loss needs the forward pass only: no adjoint recurrence, no outer products
    assert not [n for n in after.nodes() if n.op == "outer"]
    assert len([n for n in after.nodes() if n.op == "delay"]) == 2
    assert env_for(after)  # still a graph with the model's axes
    assert after.params.keys() == before.params.keys()  # leaves stay declared


def test_unknown_output():
    with pytest.raises(GraphRNNError, match="no output named 'grad:nope'.*'grad:V'"):
        dce(adjoint(LSTM), keep=["loss", "grad:nope"])


def test_drop_loss_root():
    from graphrnn.passes.dce import dce as run

    graph = adjoint(LSTM)
    graph.loss = graph.outputs["loss"]
    after, lines = run(graph, keep=["grad:V"], keep_loss=False)
    assert after.loss is None and list(after.outputs) == ["grad:V"]
    assert "<loss>" in lines[0]
