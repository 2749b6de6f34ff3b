"""Mutated shipped model files never escape as a raw exception or an unlocated error, on
the reference backend and on Numba (issue 12's probe, graphrnn/fuzz.py; the script
scripts/fuzz_models.py runs 10,000 of them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphrnn as gr
from graphrnn.errors import DSLError, GraphRNNError
from graphrnn.fuzz import drive, mutate, run_model, shipped_models

ROOT = Path(__file__).resolve().parents[1]
MODELS = shipped_models(ROOT)
CASES = 400
NUMBA_RUNS = 3  # mutated models that run, compiled with Numba (about 5-15 s each)


def _cases(n: int, seed: int = 12):
    rng = np.random.default_rng(seed)
    names = sorted(MODELS)
    for k in range(n):
        name = names[int(rng.integers(len(names)))]
        mutation, text = mutate(MODELS[name], rng)
        yield f"{name}~{k}", mutation, text


@pytest.fixture(scope="module")
def reference_outcomes():
    return [(path, mutation, text, drive(text, path)) for path, mutation, text in _cases(CASES)]


def test_mutated_models_fail_only_with_located_errors(reference_outcomes):
    defects = [(p, m, o.detail) for p, m, text, o in reference_outcomes if o.defect]
    assert not defects, defects[:5]
    kinds = {o.kind for *_, o in reference_outcomes}
    assert {"ran", "error"} <= kinds <= {"ran", "error", "capped"}  # it reaches the backends


def test_every_mutation_kind_is_drawn(reference_outcomes):
    assert {m for _, m, _, _ in reference_outcomes} == {
        "swap", "delete", "lag", "number", "rename", "line"
    }  # fmt: skip


def test_mutated_models_on_numba_agree_with_the_reference(reference_outcomes):
    ran = [c for c in reference_outcomes if c[3].kind == "ran" and "spatial" not in c[0]]
    errors = [c for c in reference_outcomes if c[3].kind == "error"][:40]
    for path, _, text, outcome in errors:
        numba = drive(text, path, "numba")
        assert (numba.kind, numba.detail) == (outcome.kind, outcome.detail), path
    for path, _, text, _ in ran[:NUMBA_RUNS]:
        want = run_model(text, path, "reference", tau=4)
        got = run_model(text, path, "numba", tau=4)
        for name, value in want["outputs"].items():
            np.testing.assert_allclose(got["outputs"][name], value, rtol=1e-9, atol=1e-12)
        if "loss" in want:
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-9, nan_ok=True)


@pytest.mark.parametrize("step, T", [(9, 8), (100000000, 8)])
def test_a_fixed_step_past_the_end_is_refused_on_numba_too(step, T):
    text = MODELS["lstm_classifier.grnn"].replace("h(end)", f"h({step})")
    assert f"h({step})" in text
    model = gr.loads(text, path="lstm_classifier.grnn", I=8, H=4, O=10)
    x = np.zeros((T, 2, 8))
    y = np.eye(10)[[0, 1]]
    with pytest.raises(DSLError, match=f"step {step} of 't' is read here, but the sequence has 8"):
        model.compile("numba").loss_and_grad(model.params, {"x": x}, {"y": y})


def test_the_reference_evaluation_of_a_fixed_step_past_the_end_is_located():
    """Run directly (not through a compiled call's checks), the reference's `at` still names
    the place instead of raising a bare IndexError."""
    from graphrnn.backends import reference
    from graphrnn.ir.registry import EvalEnv

    text = MODELS["lstm_classifier.grnn"].replace("h(end)", "h(9)")
    model = gr.loads(text, path="lstm_classifier.grnn", I=8, H=4, O=10)
    graph = model.graph
    env = EvalEnv(graph.axes, {"t": 8}, 2, np.dtype(np.float64))
    leaves = {n.id: np.zeros(env.aligned_shape(n.context, n.shape)) for n in graph.leaves.values()}
    with pytest.raises(GraphRNNError, match="step 9 of 't' is read here") as info:
        reference.evaluate(graph.roots(), env, leaves)
    assert "lstm_classifier.grnn:" in str(info.value)
