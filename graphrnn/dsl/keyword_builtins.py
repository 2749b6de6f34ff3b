"""Builtins with keyword arguments: convolution, pooling, batch norm and the grid ops.

`conv2d(x, w, stride = 1, padding = 2, dilation = 2)`, `maxpool2d(x, 3, stride = 2,
padding = 1)`, `avgpool2d(x, 2)`, `bias2d(x, b)`, `batchnorm2d(x, gamma, beta, eps = 1e-5)`
(batch statistics when the model is lowered for training, running statistics when lowered
for evaluation), `patches(x, ph, pw)` (only as the right side of an
equation `p(i, j) = ...`, whose left side names the two new axes) and `grid(v)`. The table of
parameters is KEYWORD_FUNCTIONS in builtins.py.
"""

from __future__ import annotations

from graphrnn.dsl.builtins import KEYWORD_FUNCTIONS
from graphrnn.dsl.scope import Frame, as_node, describe, where
from graphrnn.errors import DSLError, ShapeError
from graphrnn.ir.graph import BatchNormState
from graphrnn.ir.node import Node
from graphrnn.ir.ops import conv, grid
from graphrnn.ir.ops.leaf import param_node
from graphrnn.ir.registry import ShapeMismatch


def call_keyword_builtin(name: str, args, kwargs, expr, frame: Frame):
    loc = expr.loc
    positional, defaults = KEYWORD_FUNCTIONS[name]
    signature = ", ".join(list(positional) + [f"{k} = {v}" for k, v in defaults.items()])
    if len(args) > len(positional):
        raise DSLError(
            f"{name}() takes {len(positional)} positional arguments, got {len(args)}; "
            f"it is {name}({signature})",
            loc,
            where(frame),
        )
    bound = dict(zip(positional, args))
    for key, value in kwargs.items():
        if key not in positional and key not in defaults:
            raise DSLError(
                f"{name}() has no argument '{key}'; it is {name}({signature})", loc, where(frame)
            )
        if key in bound:
            raise DSLError(f"{name}() got '{key}' twice", loc, where(frame))
        bound[key] = value
    missing = [p for p in positional if p not in bound]
    if missing:
        raise DSLError(
            f"{name}() needs {', '.join(missing)}; it is {name}({signature})", loc, where(frame)
        )
    for key, default in defaults.items():
        bound.setdefault(key, default)
    try:
        return _BUILD[name](bound, expr, frame)
    except ShapeError as e:
        raise ShapeError(e.message, e.loc or loc, e.note or where(frame)) from None
    except ShapeMismatch as e:
        raise ShapeError(f"{name}: {e}", loc, where(frame)) from None


def _node(bound, key, frame, loc) -> Node:
    value = bound[key]
    if not isinstance(value, Node):
        raise DSLError(f"'{key}' must be a value, got {describe(value)}", loc, where(frame))
    return value


def _int(bound, key, frame, loc, allow_none=False):
    value = bound[key]
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DSLError(f"'{key}' must be an integer, got {value!r}", loc, where(frame))
    return value


def _conv2d(b, expr, frame):
    loc = expr.loc
    geo = {k: _int(b, k, frame, loc) for k in ("stride", "padding", "dilation")}
    return conv.conv2d(_node(b, "x", frame, loc), _node(b, "w", frame, loc), loc=loc, **geo)


def _pool(builder):
    def build(b, expr, frame):
        loc = expr.loc
        return builder(
            _node(b, "x", frame, loc),
            _int(b, "kernel", frame, loc),
            _int(b, "stride", frame, loc, allow_none=True),
            _int(b, "padding", frame, loc),
            loc=loc,
        )

    return build


def _bias2d(b, expr, frame):
    loc = expr.loc
    return conv.add_channel_bias(_node(b, "x", frame, loc), as_node(b["b"], loc), loc=loc)


def _batchnorm2d(b, expr, frame):
    """Training mode: batch statistics, recorded in `graph.batchnorms` so that the training
    loop can keep running averages. Evaluation mode: the running statistics, two leaves
    named after the batch norm, in `graph.params` but listed in `graph.state_names`."""
    loc = expr.loc
    eps = b["eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps <= 0:
        raise DSLError(f"eps must be a positive number, got {eps!r}", loc, where(frame))
    x = _node(b, "x", frame, loc)
    gamma, beta = _node(b, "gamma", frame, loc), _node(b, "beta", frame, loc)
    c, h, w = conv._image(x.shape, "the input")
    lw = frame.scope.lowerer
    state = BatchNormState(_batchnorm_name(gamma, frame), c, h * w, x.batched)
    if lw.mode == "eval":
        rm = param_node(state.mean_name, (c,), ("zeros", ()), loc)
        rv = param_node(state.var_name, (c,), ("ones", ()), loc)
        lw.graph.params[rm.name], lw.graph.params[rv.name] = rm, rv
        bn = conv.batchnorm2d(x, gamma, beta, eps, running_mean=rm, running_var=rv)
    else:
        bn = conv.batchnorm2d(x, gamma, beta, eps)
        state.batch_mean, state.batch_var = bn.mean, bn.var
    lw.graph.batchnorms[state.name] = state
    return bn.y


def _batchnorm_name(gamma: Node, frame: Frame) -> str:
    """A name for a batch norm's running statistics that is the same at every load: its gamma
    parameter's scope (`c1.bn` for `c1.bn.gamma`), or its gamma's name when that is not
    called `gamma`; the value it is assigned to when gamma is not a parameter. A second batch
    norm with the same name (a shared gamma) gets `#2`, and so on, in lowering order."""
    if gamma.op == "param":
        prefix, _, last = gamma.name.rpartition(".")
        base = prefix if last == "gamma" and prefix else gamma.name
    else:
        base = frame.scope.qualified(frame.call_name or frame.equation or "batchnorm2d")
    graph = frame.scope.lowerer.graph
    name, k = base, 2
    while name in graph.batchnorms or f"{name}.running_mean" in graph.params:
        name, k = f"{base}#{k}", k + 1
    return name


def _patches(b, expr, frame):
    loc = expr.loc
    scope, lw = frame.scope, frame.scope.lowerer
    axes = scope.index_axes.get(frame.equation) if frame.equation else None
    if axes is None or len(axes) != 2 or not all(a in lw.new_axes for a in axes):
        raise DSLError(
            "patches(x, ph, pw) makes two new axes: write it as the whole right side of an "
            "equation that names them, e.g. p(i, j) = patches(x, 2, 2)",
            loc,
            where(frame),
        )
    x = _node(b, "x", frame, loc)
    if x.axes:
        raise DSLError(
            f"patches() takes a per-example image, not one over {', '.join(sorted(x.axes))}",
            loc,
            where(frame),
        )
    ph, pw = _int(b, "ph", frame, loc), _int(b, "pw", frame, loc)
    node = grid.patches(x, ph, pw, axes, loc=loc)
    for axis, size in zip(axes, (node.attrs["rows"], node.attrs["cols"])):
        known = lw.graph.axis_sizes.setdefault(axis, size)
        if known != size:
            raise DSLError(
                f"axis '{axis}' already has {known} steps; these patches give {size}",
                loc,
                where(frame),
            )
    return node


def _grid(b, expr, frame):
    loc = expr.loc
    lw = frame.scope.lowerer
    v = _node(b, "v", frame, loc)
    axes = tuple(a for a in lw.graph.axes if a in v.axes and a in lw.graph.axis_sizes)
    if len(axes) != 2:
        raise DSLError(
            f"grid(v) needs a value over the two axes made by patches(); it varies over "
            f"{', '.join(sorted(v.axes)) or 'no axis'}",
            loc,
            where(frame),
        )
    sizes = lw.graph.axis_sizes
    return grid.grid(v, axes, sizes[axes[0]], sizes[axes[1]], loc=loc)


_BUILD = {
    "conv2d": _conv2d,
    "maxpool2d": _pool(conv.maxpool2d),
    "avgpool2d": _pool(conv.avgpool2d),
    "bias2d": _bias2d,
    "batchnorm2d": _batchnorm2d,
    "patches": _patches,
    "grid": _grid,
}
