"""Issue 12's API cases: wrong arguments to forward / loss_and_grad and sizes that cannot
fit are DataError / GraphRNNError naming the argument and the fix, never NumPy's errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphrnn as gr
from graphrnn.errors import DataError, GraphRNNError
from graphrnn.memory import format_bytes

ROOT = Path(__file__).resolve().parents[1]
SIZES = dict(I=3, H=4, O=2)


@pytest.fixture(scope="module")
def elman():
    model = gr.load(ROOT / "models/elman.grnn", **SIZES)
    return model, model.compile("reference")


def _data(T=5, B=2):
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(T, B, 3))}, {"y": np.eye(2)[rng.integers(0, 2, (T, B))]}


@pytest.mark.parametrize(
    "change, message",
    [
        (
            dict(targets=None),
            "targets must be a dict of arrays by name, like {'y': y}; got NoneType",
        ),
        (dict(params=None), "params must be a dict of arrays by name, like model.params"),
        (dict(inputs="list"), "inputs must be a dict of arrays by name, like {'x': x}; got list"),
        (dict(params="string"), "parameter 'b' is not a numeric array (got str)"),
        (dict(inputs="batch0"), "'x' has batch size 0; give at least one example"),
    ],
)
def test_bad_arguments_name_the_argument(elman, change, message):
    model, fn = elman
    inputs, targets = _data()
    args = {"params": model.params, "inputs": inputs, "targets": targets, **change}
    if args["inputs"] == "list":
        args["inputs"] = [inputs["x"]]
    if args["inputs"] == "batch0":
        args["inputs"] = {"x": np.zeros((5, 0, 3))}
    if args["params"] == "string":
        args["params"] = {**model.params, "b": "abc"}
    with pytest.raises(DataError) as info:
        fn.loss_and_grad(args["params"], args["inputs"], args["targets"])
    assert message in str(info.value)


def test_forward_needs_no_targets(elman):
    model, fn = elman
    assert fn.forward(model.params, _data()[0])["h"].shape == (5, 2, 4)


def test_sizes_whose_parameters_cannot_fit_are_refused_with_the_figure():
    with pytest.raises(GraphRNNError) as info:
        gr.load(ROOT / "models/elman.grnn", I=3, H=10**9, O=2)
    text = str(info.value)
    assert "about 6.94 EiB of memory is needed" in text
    assert "'W' [1000000000, 1000000000] at " in text and "elman.grnn:" in text
    assert "use smaller sizes (now I=3, H=1000000000, O=2)" in text


def test_a_call_that_cannot_fit_is_refused_before_running(elman, monkeypatch):
    model, fn = elman
    calls = []
    run = fn.executor
    monkeypatch.setattr(fn, "executor", lambda *a: calls.append(a) or run(*a))
    monkeypatch.setattr("graphrnn.memory.available_bytes", lambda: 100_000)
    x = np.zeros((1000, 2, 3))  # 1000 steps x 2 x (3 + 4 + 4 + 4 + 2 ...) floats > 100 kB
    with pytest.raises(GraphRNNError, match="this call .* of memory is needed") as info:
        fn.forward(model.params, {"x": x})
    assert "but 97.7 KiB is available" in str(info.value)
    assert "shorter sequences" in str(info.value)
    assert not calls
    fn.forward(model.params, {"x": x[:10]})
    assert len(calls) == 1


def test_compiled_backends_do_not_count_outer_products_they_never_form(monkeypatch):
    """A weight gradient sum_t outer(a, b) is one GEMM in the compiled backends; counting the
    [T, B, m, k] outer products refused an LSTM at B=64, H=512 that needs well under 1 GiB."""
    model = gr.load(ROOT / "models/lstm.grnn", I=8, H=16, O=2, seed=0)
    x = np.zeros((50, 4, 8))
    y = np.full((50, 4, 2), 0.5)
    seen = {}
    monkeypatch.setattr("graphrnn.compiled.check_fits", lambda what, b, fix: seen.update(b))
    for backend in ("reference", "numba"):
        seen.clear()
        model.compile(backend).loss_and_grad(model.params, {"x": x}, {"y": y})
        outers = [name for name in seen if name.startswith("'outer'")]
        assert bool(outers) == (backend == "reference"), (backend, outers)


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(7 * 1024**6) == "7 EiB"
