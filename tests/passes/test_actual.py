"""The passes' model of the reference interpreter's array shapes (`Actual`) is exact: the
substitution rules rely on it to keep every sum over steps and batch the same."""

from __future__ import annotations

import pytest

from graphrnn.backends import reference
from graphrnn.passes import optimize
from graphrnn.passes._common import Actual
from tests.passes.helpers import adjoint, env_for, model_paths, random_leaves

PATHS = model_paths()


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
@pytest.mark.parametrize("optimized", [False, True], ids=["adjoint", "optimized"])
def test_actual_contexts_match_reference_arrays(path, optimized):
    graph = adjoint(path)
    if optimized:
        graph, _ = optimize(graph)
    env = env_for(graph, steps=4, batch=3)
    values = reference.evaluate(graph.roots(), env, random_leaves(graph, env))
    actual = Actual(graph)
    for node in graph.nodes():
        context = actual(node)
        assert context is not None, node
        assert values[node.id].shape == env.aligned_shape(context, node.shape), node
