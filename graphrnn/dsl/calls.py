"""Expanding a call of a `def`: bind its arguments and its `over` axis, lower its body.

The parameters the body declares are named after the binding (`enc = lstm(x, 8)` owns
`enc.Wf`); a call that is not bound to a name is named after the definition (`lstm2.Wf`).
"""

from __future__ import annotations

from graphrnn.dsl import ast
from graphrnn.dsl.scope import Axis, Frame, Scope, describe, where
from graphrnn.errors import DSLError
from graphrnn.ir.node import Node


def call_definition(lw, fd: ast.FuncDef, args, kwargs, expr: ast.Call, frame: Frame):
    loc = expr.loc
    names = [p.name for p in fd.params]
    if len(args) > len(names):
        raise DSLError(
            f"{fd.name}() takes {len(names)} arguments, got {len(args)}", loc, where(frame)
        )
    axis_arg = kwargs.pop("axis", None) if "axis" not in names else None
    unknown = sorted(set(kwargs) - set(names))
    if unknown:
        raise DSLError(
            f"{fd.name}() has no parameter {', '.join(unknown)}; it takes {', '.join(names)}",
            loc,
            where(frame),
        )
    bound = dict(zip(names, args))
    for k, v in kwargs.items():
        if k in bound:
            raise DSLError(f"{fd.name}() got '{k}' twice", loc, where(frame))
        bound[k] = v
    scope = Scope(lw, lw.new_prefix(frame.scope, frame.call_name, fd.name))
    for p in fd.params:
        if p.name not in bound:
            if p.default is None:
                raise DSLError(f"{fd.name}() needs the argument '{p.name}'", loc, where(frame))
            bound[p.name] = lw.eval(p.default, Frame(scope, dict(bound)))
    axes = _bind_axes(fd, bound, axis_arg, loc, frame)
    scope.values.update(bound)
    scope.values.update({local: Axis(actual) for local, actual in axes.items()})
    # the arguments' other axes act like the batch (not every axis of the graph: a value
    # over the axes of one patches() grid must not vary over those of another)
    arg_axes = frozenset().union(*(v.axes for v in bound.values() if isinstance(v, Node)))
    scope.hidden_axes = arg_axes - set(axes.values())
    if fd in lw.calls:
        chain = " -> ".join(d.name for d in lw.calls[lw.calls.index(fd) :] + [fd])
        raise DSLError(
            f"definition '{fd.name}' calls itself ({chain}); a call is expanded in place, so "
            "the expansion would never end",
            loc,
            "write the repetition as a for loop over layers (for l in 1..L)",
        )
    lw.calls.append(fd)
    try:
        lw._lower_body(scope, fd.body, {})
    finally:
        lw.calls.pop()
    for name, node in scope.lowered.items():
        lw.graph.outputs.setdefault(scope.qualified(name), node)
    if scope.result is None:
        raise DSLError(f"definition '{fd.name}' has no `return`", fd.loc)
    return scope.result


def _bind_axes(fd: ast.FuncDef, bound: dict, axis_arg, loc, frame: Frame) -> dict[str, str]:
    axes: dict[str, str] = {}
    for p in fd.params:
        if p.over is None:
            continue
        value = bound[p.name]
        if not isinstance(value, Node) or not value.axes:
            raise DSLError(
                f"{fd.name}() recurs over '{p.over}' of '{p.name}', which needs a sequence; "
                f"got {describe(value) if not isinstance(value, Node) else 'a static value'}",
                loc,
                where(frame),
            )
        if isinstance(axis_arg, Axis):
            actual = axis_arg.name
        elif axis_arg is not None:
            raise DSLError("axis= takes an axis name, e.g. axis = t", loc, where(frame))
        elif len(value.axes) == 1:
            (actual,) = value.axes
        else:
            raise DSLError(
                f"'{p.name}' varies over {', '.join(sorted(value.axes))}: say which one "
                f"{fd.name}() recurs along, e.g. axis = {sorted(value.axes)[0]}",
                loc,
                where(frame),
            )
        if actual not in value.axes:
            raise DSLError(f"'{p.name}' does not vary over '{actual}'", loc, where(frame))
        if axes.setdefault(p.over, actual) != actual:
            raise DSLError(f"'{p.over}' is bound to two different axes", loc, where(frame))
    return axes
