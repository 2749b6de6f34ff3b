"""Issue 12's model-file cases: each mistake is a located DSLError naming the fix, and what
used to be dropped silently (initialiser keywords) now takes effect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphrnn as gr
from graphrnn.errors import DSLError

ROOT = Path(__file__).resolve().parents[2]
ELMAN = (ROOT / "models/elman.grnn").read_text()
SIZES = dict(I=3, H=4, O=2)


def _elman(old: str, new: str) -> str:
    assert old in ELMAN, old
    return ELMAN.replace(old, new)


def _error(text: str, **sizes) -> DSLError:
    with pytest.raises(DSLError) as info:
        gr.loads(text, path="m.grnn", **(sizes or SIZES))
    assert info.value.loc is not None, str(info.value)
    return info.value


def _line(error: DSLError) -> str:
    return error.loc.source.line(error.loc.line)


def _data(T=5, B=2):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(T, B, 3))
    return {"x": x}, {"y": np.eye(2)[rng.integers(0, 2, (T, B))]}


# item 4: initialiser arguments ---------------------------------------------------------
def test_initialiser_keywords_take_effect():
    m = gr.loads(_elman("b[H]    ~ zeros", "b[H] ~ constant(value=3)"), **SIZES)
    assert np.all(m.params["b"] == 3.0)
    m = gr.loads(_elman("b[H]    ~ zeros", "b[H] ~ uniform(scale=100)"), **SIZES)
    assert np.abs(m.params["b"]).max() > 1.0
    assert np.abs(m.params["b"]).max() <= 100.0


def test_initialiser_arguments_may_be_expressions_of_sizes():
    m = gr.loads(_elman("b[H]    ~ zeros", "b[H] ~ uniform(1.0 / sqrt(H))"), **SIZES)
    assert 0 < np.abs(m.params["b"]).max() <= 0.5


@pytest.mark.parametrize(
    "init, message",
    [
        ("uniform(foo=1)", "unexpected keyword argument 'foo'; it is uniform(scale = 0.05)"),
        ("uniform(-1)", "scale must be positive, got -1"),
        ("uniform(-0.1, 0.1)", "too many positional arguments; it is uniform(scale = 0.05), U("),
        ("normal(-1)", "std must be positive"),
        ("constant(1, value=2)", "multiple values"),
        ("uniform(sqrt(-1))", "sqrt(-1) is not a finite number"),
        ("uniform(W)", "must be numbers, got a value of the network"),
    ],
)
def test_bad_initialiser_arguments_are_located(init, message):
    error = _error(_elman("b[H]    ~ zeros", f"b[H] ~ {init}"))
    assert init.split("(")[0] in _line(error)
    assert error.loc.line == 16
    assert message in error.message


def test_an_overflowing_initialiser_is_located():
    error = _error(_elman("U[H, I] ~ glorot_uniform", "U[H, I] ~ glorot_uniform(1e308)"))
    assert "glorot_uniform(1e+308) cannot initialise U" in error.message
    assert "param  U" in _line(error)


def test_orthogonal_on_a_vector_is_located():
    error = _error(_elman("b[H]    ~ zeros", "b[H] ~ orthogonal"))
    assert "orthogonal initialisation needs a matrix" in error.message
    assert "b[H]" in _line(error)


# item 5: shifted reads of inputs -------------------------------------------------------
@pytest.mark.parametrize("read", ["x(t-1)", "x(t+1)"])
def test_a_shifted_input_without_initial_value_is_located(read):
    error = _error(_elman("U @ x(t)", f"U @ {read}"))
    assert "'x' is read at a shifted step but has no initial value" in error.message
    assert "x(0) = ..." in error.note


@pytest.mark.parametrize("lag, shift", [("x(t-1)", 1), ("x(t+1)", -1)])
def test_a_shifted_input_reads_its_neighbour(lag, shift):
    text = _elman("U @ x(t)", f"U @ {lag}").replace(
        "h(0) = zeros(H)", "h(0) = zeros(H)\n    x(0) = zeros(I)"
    )
    inputs, targets = _data()
    shifted = np.roll(inputs["x"], shift, axis=0)
    shifted[0 if shift == 1 else -1] = 0.0
    m, plain = gr.loads(text, **SIZES), gr.loads(ELMAN, **SIZES)
    got = m.compile("reference").loss_and_grad(m.params, inputs, targets)[0]
    want = plain.compile("reference").loss_and_grad(plain.params, {"x": shifted}, targets)[0]
    assert got == pytest.approx(want, rel=1e-12)


# item 6: recursion ---------------------------------------------------------------------
def test_an_equation_named_like_its_axis_is_located():
    error = _error(_elman("a(t) = U @ x(t)", "a(a) = U @ x(t)"))
    assert "'a' names an equation, not an axis" in error.message


def test_a_recursive_definition_is_located():
    text = "def f(v):\n    return f(v)\n" + _elman("tanh(a(t))", "tanh(f(a(t)))")
    error = _error(text)
    assert "definition 'f' calls itself (f -> f)" in error.message
    assert "for loop" in error.note


def test_mutually_recursive_definitions_are_located():
    text = "def f(v):\n    return g(v)\ndef g(v):\n    return f(v)\n"
    error = _error(text + _elman("tanh(a(t))", "tanh(f(a(t)))"))
    assert "(f -> g -> f)" in error.message


# item 6: a fixed step past the end -----------------------------------------------------
LAST = "loss = mean over t of softmax_cross_entropy(o(t), y(t))"


@pytest.mark.parametrize("step", [6, 100000000])
def test_a_fixed_step_past_the_end_is_located_before_running(step):
    text = _elman(LAST, f"loss = softmax_cross_entropy(o({step}), y(1))")
    m = gr.loads(text, path="m.grnn", **SIZES)
    inputs, targets = _data(T=5)
    fn = m.compile("reference")
    for call in (
        lambda: fn.loss_and_grad(m.params, inputs, targets),
        lambda: fn.forward(m.params, inputs),
    ):
        with pytest.raises(
            DSLError, match=f"step {step} of 't' is read here, but the sequence has 5 steps"
        ) as info:
            call()
        assert f"o({step})" in _line(info.value)
        assert "h(end)" in info.value.note
    with pytest.raises(DSLError, match="the sequence has 5 steps"):
        m.unroll(5)
    assert m.unroll(step).loss is not None if step < 10 else True


def test_a_fixed_step_inside_the_sequence_runs():
    m = gr.loads(_elman(LAST, "loss = softmax_cross_entropy(o(5), y(1))"), **SIZES)
    inputs, targets = _data(T=5)
    assert np.isfinite(m.compile("reference").loss_and_grad(m.params, inputs, targets)[0])


# item 8: missing locations and silently accepted statements ---------------------------
def test_no_loss_is_located_at_the_model():
    m = gr.loads(ELMAN.replace(f"    {LAST}\n", ""), path="m.grnn", **SIZES)
    inputs, targets = _data()
    with pytest.raises(DSLError, match="declares no loss") as info:
        m.compile("reference").loss_and_grad(m.params, inputs, targets)
    assert _line(info.value).startswith("model Elman")
    assert "loss = " in info.value.note
    assert set(m.compile("reference").forward(m.params, inputs)) >= {"h", "o"}


@pytest.mark.parametrize("encoding, byte", [("latin-1", "0xe9"), (None, "0xff")])
def test_a_file_that_is_not_utf8_is_located(tmp_path, encoding, byte):
    path = tmp_path / "m.grnn"
    if encoding:
        path.write_bytes(("# caf\u00e9\n" + ELMAN).encode(encoding))
    else:
        path.write_bytes(ELMAN.encode() + b"\n\x00\xff\xfe")
    with pytest.raises(DSLError, match=f"not UTF-8 text: byte {byte}") as info:
        gr.load(path, **SIZES)
    assert str(info.value.loc).startswith(str(path) + ":")
    assert "UTF-8" in info.value.note


def test_return_in_a_model_is_located():
    error = _error(ELMAN + "    return h\n")
    assert "`return` ends a `def`" in error.message
    assert _line(error).strip() == "return h"


def test_two_models_of_one_name_are_located():
    error = _error(ELMAN + "\n" + ELMAN)
    assert "the model 'Elman' is defined twice" in error.message
    assert error.loc.line > ELMAN.count("\n")


def test_an_axis_listed_twice_is_located():
    error = _error(_elman("input  x[I] over t", "input  x[I] over t, t"))
    assert "lists the axis t twice" in error.message


# found by the fuzz probe ---------------------------------------------------------------
def test_a_loop_too_long_to_unroll_is_located():
    stacked = (ROOT / "models/stacked_rnn.grnn").read_text()
    text = stacked.replace("L = 2", "L = 100000000")
    assert text != stacked
    error = _error(text)
    assert "this loop expands its body 100000000 times; at most 10000" in error.message
    assert _line(error).lstrip().startswith("for ")


def test_a_file_without_a_model_is_located():
    error = _error("def f(v):\n    return v\n")
    assert error.message == "no `model` in this file" and error.loc.line == 1


def test_forward_leaves_out_outputs_that_read_targets():
    text = _elman(
        "\n    " + LAST,
        "\n    ce(t) = softmax_cross_entropy(o(t), y(t))\n    loss = mean over t of ce(t)",
    )
    m = gr.loads(text, **SIZES)
    inputs, targets = _data()
    fn = m.compile("reference")
    outs = fn.forward(m.params, inputs)
    assert "ce" not in outs and {"a", "h", "o"} <= set(outs)
    assert np.isfinite(fn.loss_and_grad(m.params, inputs, targets)[0])


def test_sizes_computed_from_values_say_what_they_got():
    error = _error(_elman("param  V[O, H]", "param  V[O, W]"))
    assert "a size must be a positive integer, got a value of the network" in error.message
