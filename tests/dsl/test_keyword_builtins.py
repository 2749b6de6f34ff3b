"""batchnorm2d in model files (graphrnn/dsl/keyword_builtins.py): training and evaluation
lowering, and the names of the running statistics (stable across loads)."""

from __future__ import annotations

from pathlib import Path

import pytest

import graphrnn as gr
from graphrnn.dsl import parse_file
from graphrnn.dsl.lower import lower_model
from graphrnn.errors import GraphRNNError, ShapeError

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(HI=32, WI=32, C1=2, C2=2, C3=2, C4=2, H1=2, H2=2)


def test_spatial_rnn_batch_norms_are_named_after_their_scopes():
    module = parse_file(str(ROOT / "models/spatial_rnn_sex.grnn"))
    train = lower_model(module, SMALL)
    assert list(train.batchnorms) == ["x0", "c1.bn", "c2.bn", "c3.bn", "c4.bn", "r1", "r2"]
    assert [bn.channels for bn in train.batchnorms.values()] == [3, 2, 2, 2, 2, 4, 4]
    assert train.batchnorms["c2.bn"].pixels == 16 * 16
    assert all(bn.batch_mean is not None for bn in train.batchnorms.values())
    assert not train.state_names & set(train.params)
    again = lower_model(parse_file(str(ROOT / "models/spatial_rnn_sex.grnn")), SMALL, mode="eval")
    assert list(again.batchnorms) == list(train.batchnorms)
    assert set(again.params) == set(train.params) | again.state_names
    assert "c1.bn.running_var" in again.state_names
    assert all(bn.batch_mean is None for bn in again.batchnorms.values())
    assert not [n for n in again.nodes() if n.op == "batch_mean_per_channel"]
    with pytest.raises(GraphRNNError, match="mode must be one of train, eval"):
        lower_model(module, SMALL, mode="inference")


SHARED = """
model Shared(C = 2):
    input  x[C, 3, 3]
    param g[C] ~ ones
    param b[C] ~ zeros
    u = batchnorm2d(x, g, b)
    v = batchnorm2d(u, g, b)
    w = batchnorm2d(v, g * 2.0, b, eps = 0.001)
"""


def test_shared_and_computed_gammas_get_distinct_names():
    model = gr.loads(SHARED)
    assert list(model.graph.batchnorms) == ["g", "g#2", "w"]
    assert "g#2.running_mean" in model.eval_graph().params


def test_batchnorm_of_a_vector_is_a_shape_error():
    text = "model M(C = 2):\n    input x[C]\n    param g[C]\n    y = batchnorm2d(x, g, g)\n"
    with pytest.raises(ShapeError, match=r"batchnorm2d: the input must be an image \[C, H, W\]"):
        gr.loads(text)
