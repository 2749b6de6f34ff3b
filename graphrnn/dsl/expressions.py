"""Lowering of expressions: numbers, names, operators, reads of sequences, calls.

`h(t-1)` and `tanh(x)` share one syntax; what the name is bound to decides: a value makes a
read at a step (a delay when the step is shifted), a builtin makes an op, a definition is
expanded in place. Arithmetic on compile-time integers (sizes, loop variables, dim(x)) stays
integer, so it can be used in shapes.
"""

from __future__ import annotations

import math
import operator

from graphrnn.dsl import ast
from graphrnn.dsl.builtins import CONSTANT_FUNCTIONS, KEYWORD_FUNCTIONS, OP_FUNCTIONS, Builtin
from graphrnn.dsl.calls import call_definition
from graphrnn.dsl.keyword_builtins import call_keyword_builtin
from graphrnn.dsl.scope import Axis, Frame, Scope, as_node, describe, integer, positive, where
from graphrnn.errors import DSLError, Loc, ShapeError
from graphrnn.ir.node import Node
from graphrnn.ir.ops.leaf import const
from graphrnn.ir.registry import apply

_NUMBER_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
# Functions of compile-time numbers are computed at once, so `uniform(1.0 / sqrt(H))` stays
# a number; applied to values of the network they are ops.
_NUMBER_FUNCTIONS = {
    "tanh": math.tanh,
    "sigmoid": lambda v: 0.5 * math.tanh(0.5 * v) + 0.5,
    "relu": lambda v: max(v, 0.0),
    "exp": math.exp,
    "log": math.log,
    "sqrt": math.sqrt,
}
_NODE_OPS = {"+": "add", "-": "sub", "*": "mul", "/": "div", "@": "matmul"}


def evaluate(lw, expr, frame: Frame):
    if isinstance(expr, ast.Num):
        return expr.value
    if isinstance(expr, ast.Name):
        return lw.lookup(expr.id, frame, expr.loc)
    if isinstance(expr, ast.Neg):
        value = evaluate(lw, expr.operand, frame)
        return -value if _is_number(value) else _op(frame, "neg", [value], expr.loc)
    if isinstance(expr, ast.BinOp):
        return _binop(lw, expr, frame)
    if isinstance(expr, ast.Reduce):
        return _reduce(lw, expr, frame)
    if isinstance(expr, ast.Subscript):
        return lw.lookup(_subscript_name(lw, expr, frame), frame, expr.loc)
    if isinstance(expr, ast.Call):
        return _call(lw, expr, frame)
    raise DSLError("this form is not supported here", expr.loc, where(frame))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _op(frame: Frame, op: str, args, loc: Loc, **attrs) -> Node:
    nodes = [as_node(a, loc) for a in args]
    try:
        return apply(op, *nodes, loc=loc, **attrs)
    except ShapeError as e:
        raise ShapeError(e.message, e.loc or loc, e.note or where(frame)) from None


def _binop(lw, expr: ast.BinOp, frame: Frame):
    left, right = evaluate(lw, expr.left, frame), evaluate(lw, expr.right, frame)
    if _is_number(left) and _is_number(right) and expr.op in _NUMBER_OPS:
        if expr.op == "/" and isinstance(left, int) and isinstance(right, int):
            if right != 0 and left % right == 0:
                return left // right
        try:
            return _NUMBER_OPS[expr.op](left, right)
        except ZeroDivisionError:
            raise DSLError("division by zero", expr.loc, where(frame)) from None
    for side, value in ((expr.left, left), (expr.right, right)):
        if not (_is_number(value) or isinstance(value, Node)):
            raise DSLError(f"cannot compute with {describe(value)}", side.loc, where(frame))
    return _op(frame, _NODE_OPS[expr.op], [left, right], expr.loc)


def _reduce(lw, expr: ast.Reduce, frame: Frame):
    axis = lw.lookup(expr.axis, frame, expr.loc)
    if not isinstance(axis, Axis):
        raise DSLError(f"'{expr.axis}' is not an axis", expr.loc, where(frame))
    body = as_node(evaluate(lw, expr.body, frame), expr.body.loc)
    if axis.name not in body.axes:
        raise DSLError(
            f"the value does not vary over '{expr.axis}', so there is nothing to reduce",
            expr.body.loc,
            where(frame),
        )
    return _op(frame, "reduce_axis", [body], expr.loc, axis=axis.name, kind=expr.kind)


def _fold(name: str, value, loc: Loc, frame: Frame) -> float:
    try:
        return float(_NUMBER_FUNCTIONS[name](float(value)))
    except (ValueError, OverflowError):
        raise DSLError(f"{name}({value!r}) is not a finite number", loc, where(frame)) from None


def _subscript_name(lw, expr: ast.Subscript, frame: Frame) -> str:
    if not isinstance(expr.base, ast.Name):
        raise DSLError("only names can be subscripted, as in h[l]", expr.loc, where(frame))
    k = integer(evaluate(lw, expr.index, frame), "a subscript", expr.index.loc)
    return f"{expr.base.id}[{k}]"


def _call(lw, expr: ast.Call, frame: Frame):
    func = expr.func
    if isinstance(func, ast.Name):
        name = func.id
    elif isinstance(func, ast.Subscript):
        name = _subscript_name(lw, func, frame)
    else:
        raise DSLError("only names can be called or indexed", func.loc, where(frame))
    scope = frame.scope
    if name in scope.equations and name not in frame.bindings:
        return _read(lw, name, None, expr, frame)
    target = lw.lookup(name, frame, func.loc)
    if isinstance(target, Node):
        return _read(lw, name, target, expr, frame)
    args_frame = Frame(scope, frame.bindings, frame.equation)
    args = [evaluate(lw, a, args_frame) for a in expr.args]
    kwargs = {k: evaluate(lw, v, args_frame) for k, v in expr.kwargs}
    if isinstance(target, Builtin):
        return _builtin(target.name, args, kwargs, expr, frame)
    if isinstance(target, ast.FuncDef):
        return call_definition(lw, target, args, kwargs, expr, frame)
    raise DSLError(
        f"'{name}' is {describe(target)}, which cannot be called", func.loc, where(frame)
    )


def _builtin(name: str, args, kwargs, expr: ast.Call, frame: Frame):
    loc = expr.loc
    if name in CONSTANT_FUNCTIONS:
        shape = tuple(positive(a, "a size", loc) for a in args)
        return const(CONSTANT_FUNCTIONS[name], shape, loc)
    if name == "dim":
        if len(args) != 1 or not isinstance(args[0], Node) or not args[0].shape:
            raise DSLError("dim(x) takes one vector-valued argument", loc, where(frame))
        return args[0].shape[-1]
    if name == "slice":
        if len(args) != 3:
            raise DSLError("slice(x, start, stop) takes 3 arguments", loc, where(frame))
        start = integer(args[1], "slice start", loc)
        stop = integer(args[2], "slice stop", loc)
        return _op(frame, "slice", [args[0]], loc, start=start, stop=stop)
    if name in KEYWORD_FUNCTIONS:
        return call_keyword_builtin(name, args, kwargs, expr, frame)
    if name in _NUMBER_FUNCTIONS and len(args) == 1 and _is_number(args[0]) and not kwargs:
        return _fold(name, args[0], loc, frame)
    op, arity = OP_FUNCTIONS[name]
    if kwargs:
        raise DSLError(f"{name}() takes no keyword arguments", loc, where(frame))
    if arity is not None and len(args) != arity:
        plural = "argument" if arity == 1 else "arguments"
        raise DSLError(f"{name}() takes {arity} {plural}, got {len(args)}", loc, where(frame))
    return _op(frame, op, args, loc)


# ---- reads of values at steps ---------------------------------------------------------
def _index_axes(lw, name: str, node: Node | None, scope: Scope) -> tuple[str, ...]:
    if name in scope.index_axes:
        return scope.index_axes[name]
    return tuple(a for a in lw.graph.axes if a in node.axes and a not in scope.hidden_axes)


def _read(lw, name: str, node: Node | None, expr: ast.Call, frame: Frame):
    """`name(index...)`: the value at the current step, a shifted step, a fixed step, or h(0)."""
    scope = frame.scope
    if node is None:
        lw.placeholder(scope, name)
    axes = _index_axes(lw, name, node, scope)
    if expr.kwargs:
        raise DSLError(
            f"'{name}' is a value; it takes indices, not keywords", expr.loc, where(frame)
        )
    if len(expr.args) == 1 and isinstance(expr.args[0], ast.Num) and expr.args[0].value == 0:
        return lw.init_value(scope, name, expr.loc)
    if len(expr.args) != len(axes):
        shown = f"({', '.join(axes)})" if axes else "no axis"
        raise DSLError(
            f"'{name}' is indexed by {shown}, got {len(expr.args)} indices", expr.loc, where(frame)
        )
    shifts, fixed = [], []
    for arg, axis in zip(expr.args, axes):
        kind, value = _index(lw, arg, axis, name, frame)
        (shifts if kind == "shift" else fixed).append((axis, value))
    get = (lambda: lw.equation(scope, name)) if node is None else (lambda: node)
    result = None
    for axis, offset in shifts:
        if offset != 0:
            result = _delay(lw, scope, name, result, axis, offset, expr.loc, frame)
    if result is None:
        result = get()
    for axis, index in fixed:
        result = _op(frame, "at", [result], expr.loc, axis=axis, index=index)
    return result


def _index(lw, arg, axis: str, name: str, frame: Frame):
    """('shift', offset) for `a`, `a+k`, `a-k`; ('fixed', step) for `3` or `end`."""
    if isinstance(arg, ast.Num) and isinstance(arg.value, int) and arg.value >= 1:
        return "fixed", arg.value
    if isinstance(arg, ast.Name) and arg.id == "end" and "end" not in frame.bindings:
        return "fixed", -1
    base, offset = arg, 0
    if isinstance(arg, ast.BinOp) and arg.op in "+-":
        base = arg.left
        value = evaluate(lw, arg.right, frame)
        offset = integer(value, "a step offset", arg.right.loc)
        offset = offset if arg.op == "+" else -offset
    used = evaluate(lw, base, frame) if isinstance(base, ast.Name) else None
    if not isinstance(used, Axis):
        raise DSLError(
            "an index is an axis with an optional shift (t, t-1, t+1), a step number or end",
            arg.loc,
            where(frame),
        )
    if used.name != axis:
        raise DSLError(
            f"'{name}' is indexed by '{axis}' here, not '{used.name}'", arg.loc, where(frame)
        )
    return "shift", offset


def _delay(lw, scope: Scope, name: str, inner, axis: str, offset: int, loc, frame) -> Node:
    key = (name, axis, offset, None if inner is None else inner.id)
    if key not in scope.delays:
        if inner is not None:
            value = inner
        elif name in scope.equations:
            value = lw.placeholder(scope, name)
        else:
            value = scope.values[name] if name in scope.values else lw.lookup(name, frame, loc)
        init = lw.init_value(scope, name, loc)
        scope.delays[key] = _op(frame, "delay", [value, init], loc, axis=axis, offset=offset)
    return scope.delays[key]
