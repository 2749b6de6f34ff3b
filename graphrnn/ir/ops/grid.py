"""Grid ops: an image cut into non-overlapping blocks that become steps of two new axes.

patches(x[C, H, W]; ph, pw, axes=(i, j), rows, cols) -> [C*ph*pw], varying over i and j
    The block p(i, j) holds the pixels of rows i*ph .. i*ph+ph-1 and columns j*pw .. j*pw+pw-1
    (0-based array positions; steps i, j are 1-based in the language). Flattening order is
    channel-major, then the row inside the block, then the column (PyTorch's nn.Unfold order):
        p(i, j)[c*ph*pw + di*pw + dj] = x[c, i*ph + di, j*pw + dj]
    rows = H / ph and cols = W / pw must be whole: the axes i and j get these STATIC lengths
    (Graph.axis_sizes), known when the graph is built, not from the data.

grid(v[D]; axes=(i, j), rows, cols, ph=1, pw=1) -> [D/(ph*pw), rows*ph, cols*pw], not over i, j
    The inverse: it puts the vector of step (i, j) back as block (i, j) of a static map. With
    ph = pw = 1 (what the DSL's grid(v) writes) cell (i, j) of the map is v(i, j).

Both are permutations of the same numbers and are each other's inverse and adjoint, so the
VJP of patches is grid with the same attributes and the VJP of grid is patches.
"""

from __future__ import annotations

import numpy as np

from graphrnn.ir.node import Context, Node
from graphrnn.ir.registry import ShapeMismatch, apply, register

OP_NAMES = ("patches", "grid")


def _check_axes(axes) -> tuple[str, str]:
    if not (isinstance(axes, tuple) and len(axes) == 2 and all(isinstance(a, str) for a in axes)):
        raise ShapeMismatch(f"axes must be a pair of axis names (rows, columns), got {axes!r}")
    if axes[0] == axes[1]:
        raise ShapeMismatch(f"the row and column axes must differ, got {axes!r}")
    return axes


def _positive(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ShapeMismatch(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _patches_shape(shapes, *, ph, pw, axes, rows, cols):
    _check_axes(axes)
    ph, pw = _positive(ph, "the block height"), _positive(pw, "the block width")
    (x,) = shapes
    if len(x) != 3:
        raise ShapeMismatch(f"patches takes an image [C, H, W], got rank {len(x)}")
    c, h, w = x
    if h % ph or w % pw:
        raise ShapeMismatch(
            f"a {h}x{w} image does not split into whole {ph}x{pw} blocks "
            f"({h} % {ph} = {h % ph}, {w} % {pw} = {w % pw})"
        )
    if (rows, cols) != (h // ph, w // pw):
        raise ShapeMismatch(f"a {h}x{w} image gives {h // ph}x{w // pw} blocks, not {rows}x{cols}")
    return (c * ph * pw,)


def _patches_context(contexts, *, axes, **attrs):
    (x,) = contexts
    clash = x.axes & set(axes)
    if clash:
        raise ValueError(f"patches: the image already varies over {sorted(clash)}")
    return Context(x.axes | set(axes), x.batched)


def _patches_eval(env, node, x):
    (src,) = node.inputs
    a = node.attrs
    ph, pw, rows, cols = a["ph"], a["pw"], a["rows"], a["cols"]
    c = src.shape[0]
    n = len(env.axes)
    di, dj = (env.axis_dim(axis) for axis in a["axes"])
    lead = x.shape[:n]  # size 1 at di and dj: x does not vary over the new axes
    y = x.reshape(x.shape[: n + 1] + (c, rows, ph, cols, pw))
    k = n + 1  # the first per-example dim
    y = y.transpose(tuple(range(k)) + (k + 1, k + 3, k, k + 2, k + 4))
    y = y.reshape(x.shape[: n + 1] + (rows, cols, c * ph * pw))
    keep = [d for d in range(n) if d not in (di, dj)]
    y = y.reshape(tuple(lead[d] for d in keep) + y.shape[n:])
    # now [other axes..., B, rows, cols, D]: move rows and cols to their axis positions
    return np.moveaxis(y, (n - 1, n), (di, dj))


def _grid_shape(shapes, *, axes, rows, cols, ph=1, pw=1):
    _check_axes(axes)
    rows, cols = _positive(rows, "rows"), _positive(cols, "cols")
    ph, pw = _positive(ph, "the block height"), _positive(pw, "the block width")
    (v,) = shapes
    if len(v) != 1:
        raise ShapeMismatch(f"grid takes one vector per cell, got rank {len(v)}")
    if v[0] % (ph * pw):
        raise ShapeMismatch(f"a vector of {v[0]} does not hold whole {ph}x{pw} blocks")
    return (v[0] // (ph * pw), rows * ph, cols * pw)


def _grid_context(contexts, *, axes, **attrs):
    (v,) = contexts
    return Context(v.axes - set(axes), v.batched)


def _grid_eval(env, node, v):
    (src,) = node.inputs
    a = node.attrs
    ph, pw, rows, cols = a.get("ph", 1), a.get("pw", 1), a["rows"], a["cols"]
    n = len(env.axes)
    di, dj = (env.axis_dim(axis) for axis in a["axes"])
    full = list(v.shape[: n + 1])
    full[di], full[dj] = rows, cols
    v = np.broadcast_to(v, tuple(full) + v.shape[n + 1 :])
    y = np.moveaxis(v, (di, dj), (n - 1, n))  # [others..., B, rows, cols, D]
    y = y.reshape(y.shape[:-1] + (node.shape[0], ph, pw))
    k = n - 1  # position of rows
    y = y.transpose(tuple(range(k)) + (k + 2, k, k + 3, k + 1, k + 4))
    y = y.reshape(y.shape[:k] + tuple(node.shape))
    for d in sorted((di, dj)):
        y = np.expand_dims(y, d)
    return y


def _attrs(node: Node) -> dict:
    a = node.attrs
    return {
        "axes": a["axes"],
        "rows": a["rows"],
        "cols": a["cols"],
        "ph": a.get("ph", 1),
        "pw": a.get("pw", 1),
    }


# Both ops are linear too, but are not flagged `linear`: simplify would then start folding
# their zero operands, a rewrite it does not do today.
register(
    "patches",
    shape=_patches_shape,
    evaluate=_patches_eval,
    vjp=lambda n, g: [apply("grid", g, **_attrs(n))],
    arity=1,
    context=_patches_context,
    reads_in_place=True,
)
register(
    "grid",
    shape=_grid_shape,
    evaluate=_grid_eval,
    vjp=lambda n, g: [apply("patches", g, **_attrs(n))],
    arity=1,
    context=_grid_context,
    reads_in_place=True,
)


# ---- builders ------------------------------------------------------------------------------
def patches(x: Node, ph: int, pw: int, axes: tuple[str, str], **kwargs) -> Node:
    """Blocks of ph x pw pixels of x[C, H, W] as a vector per step (i, j) of `axes`."""
    if x.shape is None or len(x.shape) != 3:
        raise ShapeMismatch(f"patches takes an image [C, H, W], got shape {x.shape}")
    rows = x.shape[1] // ph if ph else 0
    cols = x.shape[2] // pw if pw else 0
    return apply("patches", x, ph=ph, pw=pw, axes=tuple(axes), rows=rows, cols=cols, **kwargs)


def grid(v: Node, axes: tuple[str, str], rows: int, cols: int, **kwargs) -> Node:
    """The vectors v(i, j) as the cells of a map [D, rows, cols]."""
    return apply("grid", v, axes=tuple(axes), rows=rows, cols=cols, ph=1, pw=1, **kwargs)


def static_axis_sizes(nodes) -> dict[str, int]:
    """The axis lengths that grid ops fix, from the nodes that create or consume them."""
    sizes: dict[str, int] = {}
    for n in nodes:
        if n.op in OP_NAMES:
            for axis, size in zip(n.attrs["axes"], (n.attrs["rows"], n.attrs["cols"])):
                if sizes.setdefault(axis, size) != size:
                    raise ValueError(f"axis '{axis}' has length {sizes[axis]} and {size}")
    return sizes
