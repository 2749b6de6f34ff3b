"""The parser: AST shapes and spans, exact error messages, and fuzzing for crashes."""

from __future__ import annotations

import dataclasses
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphrnn.dsl import parse, parse_file
from graphrnn.dsl.ast import (
    Assign,
    Attr,
    BinOp,
    Call,
    Equation,
    For,
    FuncDef,
    FuncParam,
    InputDecl,
    ModelDef,
    Name,
    Neg,
    Num,
    ParamDecl,
    Reduce,
    Return,
    SizeParam,
    Subscript,
    Target,
)
from graphrnn.errors import DSLError, GraphRNNError, Loc

ELMAN = """\
model Elman(I, H, O = 10):          # size parameters, optional integer defaults
    input  x[I] over t
    target y[O] over t
    param  U[H, I] ~ glorot_uniform
    param  W[H, H] ~ orthogonal
    param  b[H]
    param  V[O, H] ~ uniform(0.1)
    param  c[O]    ~ constant(0.5)
    h(0) = zeros(H)
    h(t) = tanh(U @ x(t) + W @ h(t-1) + b)
    o(t) = V @ h(t) + c
    loss = mean over t of softmax_cross_entropy(o(t), y(t))
"""

RNN = """\
def rnn(x over a, H, act = tanh, step = -1):
    param U[H, dim(x)] ~ glorot_uniform
    param W[H, H] ~ orthogonal
    h(0) = zeros(H)
    h(a) = act(U @ x(a) + W @ h(a + step) + b)
    return h
"""

STACKED = """\
model Stacked(I, H, O, L):
    input x[I] over t
    target y[O] over t
    h[0] = x
    for l in 1..L:
        h[l] = rnn(h[l-1], H, axis = t)
    enc = lstm(x, 128); v = enc.h
    out = dense(h[L], O)
    loss = softmax_cross_entropy(V @ out(end) + c, y)
"""


def n(id_: str) -> Name:
    return Name(id_, None)  # type: ignore[arg-type]  # loc is not compared


def num(value: int | float) -> Num:
    return Num(value, None)  # type: ignore[arg-type]


def call(func: str, *args, **kwargs) -> Call:
    return Call(n(func), tuple(args), tuple(kwargs.items()), None)  # type: ignore[arg-type]


def binop(op: str, left, right) -> BinOp:
    return BinOp(op, left, right, None)  # type: ignore[arg-type]


def body_expr(text: str):
    """The value of ``v = text`` inside a one-line model."""
    (stmt,) = parse(f"model M():\n    v = {text}\n").items[0].body
    return stmt.value


def error_of(text: str) -> DSLError:
    with pytest.raises(DSLError) as info:
        parse(text, "m.rnn")
    return info.value


# Structure -----------------------------------------------------------------------------


def test_elman_structure() -> None:
    module = parse(ELMAN, "elman.rnn")
    (model,) = module.items
    assert isinstance(model, ModelDef) and model.name == "Elman"
    assert [p.name for p in model.params] == ["I", "H", "O"]
    assert model.params[2].default == num(10) and model.params[0].default is None
    x, y, u, w, b, v, c, h0, ht, ot, loss = model.body
    assert x == InputDecl("input", "x", (n("I"),), ("t",), None)
    assert y.kind == "target" and y.over == ("t",)
    assert u == ParamDecl("U", (n("H"), n("I")), n("glorot_uniform"), None)
    assert b.init is None
    assert v.init == call("uniform", num(0.1))
    assert c.init == call("constant", num(0.5))
    assert h0 == Equation(Target("h", None, None), (num(0),), call("zeros", n("H")), None)
    assert isinstance(ht, Equation) and ht.index == (n("t"),)
    delay = binop("-", n("t"), num(1))
    inner = binop(
        "+",
        binop("+", binop("@", n("U"), call("x", n("t"))), binop("@", n("W"), call("h", delay))),
        n("b"),
    )
    assert ht.value == call("tanh", inner)
    assert ot.value == binop("+", binop("@", n("V"), call("h", n("t"))), n("c"))
    assert isinstance(loss, Assign) and loss.target.name == "loss"
    assert loss.value == Reduce(
        "mean", "t", call("softmax_cross_entropy", call("o", n("t")), call("y", n("t"))), None
    )


def test_elman_locations() -> None:
    module = parse(ELMAN, "elman.rnn")
    model = module.items[0]
    ht = model.body[8]
    line = ELMAN.splitlines()[9]
    assert (ht.loc.line, ht.loc.col, ht.loc.end_line, ht.loc.end_col) == (10, 5, 10, len(line) + 1)
    delay = ht.value.args[0].left.right.right.args[0]
    assert isinstance(delay, BinOp) and delay.op == "-"
    start = line.index("t-1") + 1
    assert (delay.loc.line, delay.loc.col, delay.loc.end_col) == (10, start, start + 3)
    assert (delay.left.loc.col, delay.right.loc.col) == (start, start + 2)
    read = ht.value.args[0].left.right.right  # h(t-1), parentheses included
    assert (read.loc.col, read.loc.end_col) == (start - 2, start + 4)
    assert str(model.params[2].loc) == "elman.rnn:1:19"
    assert model.loc.line == 1 and model.loc.end_line == 12
    assert module.source.path == "elman.rnn" and module.source.text == ELMAN


def test_def_with_over_and_defaults() -> None:
    (func,) = parse(RNN).items
    assert isinstance(func, FuncDef) and func.name == "rnn"
    assert func.params == (
        FuncParam("x", "a", None, None),
        FuncParam("H", None, None, None),
        FuncParam("act", None, n("tanh"), None),
        FuncParam("step", None, Neg(num(1), None), None),
    )
    assert func.body[0].dims == (n("H"), call("dim", n("x")))
    assert func.body[3].value.args[0].left.right.right.args == (binop("+", n("a"), n("step")),)
    assert func.body[4] == Return(n("h"), None)


def test_for_loop_subscripts_and_attributes() -> None:
    model = parse(STACKED).items[0]
    h0, loop = model.body[2], model.body[3]
    assert h0 == Assign(Target("h", num(0), None), n("x"), None)
    assert isinstance(loop, For) and (loop.var, loop.start, loop.stop) == ("l", num(1), n("L"))
    (inner,) = loop.body
    assert inner.target == Target("h", n("l"), None)
    h_prev = Subscript(n("h"), binop("-", n("l"), num(1)), None)
    assert inner.value == Call(n("rnn"), (h_prev, n("H")), (("axis", n("t")),), None)
    assert (loop.loc.line, loop.loc.end_line) == (5, 6)
    enc, v = model.body[4:6]
    assert enc.value == call("lstm", n("x"), num(128))
    assert v.value == Attr(n("enc"), "h", None)
    assert model.body[7].value.args[0].left.right == call("out", n("end"))


def test_indexed_equation_target() -> None:
    (stmt,) = parse("model M():\n    h[l](t) = f(h[l](t - 1))\n").items[0].body
    assert isinstance(stmt, Equation)
    assert stmt.target == Target("h", n("l"), None)
    assert stmt.index == (n("t"),)
    assert stmt.value.args[0].func == Subscript(n("h"), n("l"), None)


def test_two_dimensional_equation() -> None:
    text = "model M():\n    d(i, j) = tanh(A @ p(i, j) + B @ d(i-1, j))\n"
    (stmt,) = parse(text).items[0].body
    assert stmt.index == (n("i"), n("j"))
    assert stmt.value.args[0].right.right.args == (binop("-", n("i"), num(1)), n("j"))


def test_input_over_several_axes_and_static() -> None:
    text = "model M(C):\n    input p[C, 4] over i, j\n    input image[3, 8, 8]\n    target k\n"
    p, image, k = parse(text).items[0].body
    assert p.over == ("i", "j") and p.dims == (n("C"), num(4))
    assert image.over == () and len(image.dims) == 3
    assert k == InputDecl("target", "k", (), (), None)


def test_reduce_forms_and_sum_as_call() -> None:
    assert body_expr("sum over t of f(x(t)) + 1") == Reduce(
        "sum", "t", binop("+", call("f", call("x", n("t"))), num(1)), None
    )
    assert body_expr("sum(x)") == call("sum", n("x"))
    assert body_expr("mean(x) * 2") == binop("*", call("mean", n("x")), num(2))
    assert body_expr("f(mean over t of x(t), k = sum over i of y(i))") == call(
        "f",
        Reduce("mean", "t", call("x", n("t")), None),
        k=Reduce("sum", "i", call("y", n("i")), None),
    )


def test_precedence_and_numbers() -> None:
    assert body_expr("a + b * c") == binop("+", n("a"), binop("*", n("b"), n("c")))
    assert body_expr("a - b - c") == binop("-", binop("-", n("a"), n("b")), n("c"))
    assert body_expr("-a @ b") == binop("@", Neg(n("a"), None), n("b"))
    assert body_expr("(a + b) / c") == binop("/", binop("+", n("a"), n("b")), n("c"))
    assert body_expr("-f(x).y[2]") == Neg(
        Subscript(Attr(call("f", n("x")), "y", None), num(2), None), None
    )
    assert body_expr("+1") == num(1)
    values = [body_expr(t).value for t in ("1", "0.5", "1e-3", "2E3", "007")]
    assert values == [1, 0.5, 0.001, 2000.0, 7]
    assert isinstance(body_expr("1").value, int) and isinstance(body_expr("1e3").value, float)


def test_layout_variants() -> None:
    expected = parse("model M(I):\n    x = f(1, 2)\n    y = 3\n")
    variants = [
        "model M(I):\n    x = f(1, 2)\n    y = 3",  # no trailing newline
        "model M(I):\r\n    x = f(1, 2)\r\n    y = 3\r\n",  # CRLF
        "model M(I):\n\tx = f(1, 2)\n\ty = 3\n",  # tabs
        "# é ü — ∑\n\nmodel M(I):  # ünïcödé\n    x = f(1,\n  2)\n\n    # c\n    y = 3\n",
        "model M(I):\n    x = f(1, 2); y = 3;\n",
        "model M(I,):\n    x = f(1, 2,)\n    y = 3\n",
    ]
    for text in variants:
        assert parse(text) == expected, text


def test_one_line_bodies() -> None:
    model = parse("model M(L):\n    for l in 1..L: h[l] = l\n").items[0]
    assert model.body[0].body == (Assign(Target("h", n("l"), None), n("l"), None),)
    assert parse("model M(): x = 1\n").items[0].body == (
        Assign(Target("x", None, None), num(1), None),
    )


def test_several_items() -> None:
    items = parse(RNN + "\n" + STACKED + ELMAN).items
    assert [type(i).__name__ for i in items] == ["FuncDef", "ModelDef", "ModelDef"]
    assert items[2].params[2] == SizeParam("O", num(10), None)


def test_parse_file(tmp_path) -> None:
    path = tmp_path / "elman.rnn"
    path.write_text(ELMAN, encoding="utf-8")
    module = parse_file(path)
    assert module == parse(ELMAN) and module.source.path == str(path)
    with pytest.raises(GraphRNNError, match="model file not found: .*nope.rnn") as info:
        parse_file(tmp_path / "nope.rnn")
    assert not isinstance(info.value, DSLError)


# Errors --------------------------------------------------------------------------------


def test_error_unexpected_token() -> None:
    assert error_of("model M(I):\n    x = = 3\n").format() == (
        "m.rnn:2:9: error: unexpected '='; expected an expression\n        x = = 3\n            ^"
    )


def test_error_missing_block_at_end_of_file() -> None:
    assert error_of("model M(I):\n    for l in 1..3:").format() == (
        "m.rnn:2:19: error: unexpected end of file; expected an indented block\n"
        "        for l in 1..3:\n"
        "                      ^"
    )


def test_error_inconsistent_indentation() -> None:
    assert error_of("model M(I):\n    x = 1\n  y = 2\n").format() == (
        "m.rnn:3:1: error: inconsistent indentation: this line matches no enclosing block\n"
        "      y = 2\n"
        "    ^^"
    )


def test_error_unclosed_bracket() -> None:
    assert error_of("model M(I):\n    x = f(1,\n    y = 2\n").format() == (
        "m.rnn:3:10: error: unexpected end of file; expected an operator, ')' or ','\n"
        "        y = 2\n"
        "             ^\n"
        "  note: the '(' at line 2 is never closed"
    )


def test_error_messages_short() -> None:
    cases = {
        "": "no model in file",
        "# nothing\n": "no model in file",
        "model M(I):\n    x = 1 $ 2\n": "unexpected character '$'",
        "model M(I)\n    x = 1\n": "unexpected end of line; expected ':'",
        "x = 1\n": "unexpected 'x'; expected 'def', 'model' or end of file",
        "  model M(I):\n    x = 1\n": "unexpected indent",
        "model M(I):\n    x = 1\n\ty = 2\n": "inconsistent indentation: tabs and spaces mixed",
        "model M(I):\n    x = avg over t of y\n": "unknown reduction 'avg'",
        "model M(I):\n    x = f(k = 1, 2)\n": "positional argument after a keyword argument",
        "model M(I):\n    x = f(k = 1, k = 2)\n": "keyword argument 'k' given twice",
        "def f(a = 1, b):\n    return a\n": "parameter 'b' needs a default",
        "model M(I, I):\n    x = 1\n": "size parameter 'I' is declared twice",
        "model M(I):\n    h() = 1\n": "unexpected ')'; expected an expression",
        "model M(I):\n    model = 1\n": "unexpected 'model'; expected a statement",
        "model M(I):\n    x = 1e999\n": "number too large",
        "model M(I):\n    x = α\n": "unexpected character 'α'",
        "model M(I):\n    x = 1\rb\n": "unexpected character '\\r'",
    }
    for text, message in cases.items():
        assert error_of(text).message.startswith(message), text


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    assert "nested too deeply" in error_of("model M():\n    x = " + "-" * 5000 + "1\n").message
    deep = "model M():\n    x = " + "f(" * 3000 + "1" + ")" * 3000 + "\n"
    assert "nested too deeply" in error_of(deep).message
    assert body_expr("(" * 300 + "1" + ")" * 300) == num(1)  # parentheses add no depth


# Fuzzing -------------------------------------------------------------------------------

VALID = RNN + "\n" + STACKED + "\n" + ELMAN
TOKENS = [
    "model", "def", "input", "target", "param", "over", "of", "for", "in", "return",
    "mean", "sum", "(", ")", "[", "]", ",", ":", ";", "=", "~", "@", "+", "-", "*", "/",
    ".", "..", "\n", "\t", "    ", "#", "\r\n", "\r", "0", "1.5", "1e-3", "x", "h", "t",
]  # fmt: skip
ALPHABET = string.ascii_letters[:12] + "0123456789 ()[],:;=~@+-*/.#\t\n\r_" + "éα∑\x00\u2028"


def check_outcome(text: str) -> None:
    """Any text either parses, with sane spans, or raises a DSLError that formats."""
    try:
        module = parse(text, "fuzz.rnn")
    except DSLError as error:
        assert error.message
        error.format()
        if error.loc is not None:
            assert 1 <= error.loc.line <= text.count("\n") + 2
            assert error.loc.col >= 1
        return
    for node in walk(module):
        assert 1 <= node.loc.line <= node.loc.end_line <= text.count("\n") + 1
        assert node.loc.col >= 1


def walk(node):
    """Every AST node under ``node`` (iterative, so deep trees are fine)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple):
            stack += item
        elif dataclasses.is_dataclass(item) and not isinstance(item, Loc):
            if hasattr(item, "loc") and item is not node:
                yield item
            stack += [getattr(item, f.name) for f in dataclasses.fields(item) if f.name != "loc"]


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(
    st.one_of(
        st.text(), st.text(alphabet=ALPHABET), st.lists(st.sampled_from(TOKENS)).map(" ".join)
    )
)
def test_fuzz_random_text(text: str) -> None:
    check_outcome(text)


@st.composite
def mutated(draw) -> str:
    text = VALID
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 12)))
        kind = draw(st.sampled_from(["delete", "insert", "token", "duplicate"]))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + draw(st.text(alphabet=ALPHABET, min_size=1, max_size=3)) + text[i:]
        elif kind == "token":
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]
        else:
            text = text[:j] + text[i:j] + text[j:]
    return text


@FUZZ
@given(mutated())
def test_fuzz_mutated_model(text: str) -> None:
    check_outcome(text)


# Round trip: printed expressions parse back to the same tree ---------------------------

NAMES = st.sampled_from(["x", "h", "t", "W", "tanh", "sum", "mean", "end", "a_1"])
NUMBERS = st.one_of(
    st.integers(0, 10**6).map(num),
    st.floats(0, 1e6, allow_nan=False, allow_infinity=False).map(num),
)


KINDS = st.sampled_from(["mean", "sum"])


def expressions():
    def extend(inner):
        return st.one_of(
            st.builds(lambda o, a, b: binop(o, a, b), st.sampled_from("+-*/@"), inner, inner),
            st.builds(lambda a: Neg(a, None), inner),
            st.builds(lambda f, a, k: Call(f, tuple(a), tuple(k), None), inner,
                      st.lists(inner, max_size=2),
                      st.lists(st.tuples(st.sampled_from(["k", "axis"]), inner), max_size=1)),
            st.builds(lambda b, i: Subscript(b, i, None), inner, inner),
            st.builds(lambda b, a: Attr(b, a, None), inner, NAMES),
            st.builds(lambda k, a, b: Reduce(k, a, b, None), KINDS, NAMES, inner),
        )  # fmt: skip

    return st.recursive(st.one_of(NAMES.map(n), NUMBERS), extend, max_leaves=12)


PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "@": 2}


def show(e, need: int = 0) -> str:
    """The shortest text for ``e`` where the context binds with strength ``need``."""
    text, strength = _show(e)
    return f"({text})" if strength < need else text


def _show(e) -> tuple[str, int]:
    if isinstance(e, Num):
        return repr(e.value), 5
    if isinstance(e, Name):
        return e.id, 5
    if isinstance(e, BinOp):
        p = PRECEDENCE[e.op]
        return f"{show(e.left, p)} {e.op} {show(e.right, p + 1)}", p
    if isinstance(e, Neg):
        return f"-{show(e.operand, 3)}", 3
    if isinstance(e, Call):
        parts = [show(a) for a in e.args] + [f"{k} = {show(v)}" for k, v in e.kwargs]
        return f"{show(e.func, 4)}({', '.join(parts)})", 4
    if isinstance(e, Subscript):
        return f"{show(e.base, 4)}[{show(e.index)}]", 4
    if isinstance(e, Attr):
        return f"{show(e.base, 4)}.{e.name}", 4
    assert isinstance(e, Reduce)
    return f"{e.kind} over {e.axis} of {show(e.body)}", 0


@settings(max_examples=300, deadline=None)
@given(expressions())
def test_round_trip_expressions(e) -> None:
    assert body_expr(show(e)) == e
