"""Loop-nest templates of the convolution, pooling and channel ops (graphrnn/ir/ops/conv.py).

Found by name (`lower_<op>`) like those of loopgen_ops.py. Every template is a direct loop
nest that computes each output element from its inputs, bounds-checking the padded border;
the one scatter (maxpool2d_grad) first zeroes the slice it writes, inside the loops over the
current step and example, so all of them also work inside a recurrence where the step axis is
fixed to the loop variable. Kernel sizes, strides, paddings and image sizes are compile-time
constants of the generated source.
"""

from __future__ import annotations

import functools
import re

from graphrnn.backends.loopgen import LoopGen
from graphrnn.ir.node import Node
from graphrnn.ir.ops.conv import ConvGeometry, geometry_of

_SCALARS = re.compile(
    r"\b(cf|cc|oh|ow|ki|kj|ih|iw|qoh|qow|xv|bh|bw|cv|wv|ohl|ohh|owl|owh|offoh|offow|cz|hz|wz)\b"
)


def _own_names(lower):
    """Suffix the template's scalars and loop variables with the node's number, so no name
    spans two nests (Numba types and compiles such functions faster; see LoopGen)."""

    @functools.wraps(lower)
    def wrapped(g: LoopGen, n: Node) -> None:
        start = len(g.lines)
        lower(g, n)
        k = g.number[n.id]
        for i in range(start, len(g.lines)):
            g.lines[i] = _SCALARS.sub(lambda m: f"{m.group(1)}_{k}", g.lines[i])

    return wrapped


def _write(g: LoopGen, node: Node, elems, expr: str) -> None:
    g.emit(f"{g.ref(node, elems)} = {expr}")


def _offset(out: str, stride: int, k: str, dilation: int, pad: int) -> str:
    """Input coordinate of output `out` and kernel tap `k`: out*stride + k*dilation - pad."""
    expr = out if stride == 1 else f"{out} * {stride}"
    expr += f" + {k}" if dilation == 1 else f" + {k} * {dilation}"
    return f"{expr} - {pad}" if pad else expr


def _open_tap(g: LoopGen, var: str, out: str, k: str, size: int, geo: ConvGeometry, d: int):
    """`var = input coordinate`, then open one `if` that it lies inside the image."""
    g.emit(f"{var} = {_offset(out, geo.stride[d], k, geo.dilation[d], geo.padding[d])}")
    g.open(f"if 0 <= {var} < {size}:")


def _open_source(
    g: LoopGen, var: str, pos: str, k: str, limit: int, geo: ConvGeometry, d: int
) -> int:
    """For the transposed ops: the output `var` whose tap `k` reads input position `pos`, i.e.
    var * stride = pos + pad - k * dilation; opens the ifs that require it to exist and
    returns how many levels it opened."""
    stride, dilation, pad = geo.stride[d], geo.dilation[d], geo.padding[d]
    tap = k if dilation == 1 else f"{k} * {dilation}"
    source = f"{pos} + {pad} - {tap}" if pad else f"{pos} - {tap}"
    if stride == 1:
        g.emit(f"{var} = {source}")
        g.open(f"if 0 <= {var} < {limit}:")
        return 1
    g.emit(f"q{var} = {source}")
    g.open(f"if q{var} >= 0 and q{var} % {stride} == 0:")
    g.emit(f"{var} = q{var} // {stride}")
    g.open(f"if {var} < {limit}:")
    return 2


# ---- convolution -------------------------------------------------------------------------
# The three convolution templates loop over filters, channels and kernel taps outside and over
# output rows and columns inside, each tap's valid output range computed once (no bounds test
# in the inner loop), so the innermost loop runs along a row of the map and vectorises; the
# form that computed each output element as a sum over its window did not.
def _tap_range(g: LoopGen, o: str, k: str, geo: ConvGeometry, d: int, size: int, out: int):
    """`off{o} = k * dilation - pad`, and `{o}l`, `{o}h`: the outputs whose tap k lies inside
    the input (0 <= o * stride + off < size), as a half-open range."""
    stride, dilation, pad = geo.stride[d], geo.dilation[d], geo.padding[d]
    g.emit(f"off{o} = {k} * {dilation} - {pad}")
    g.emit(f"{o}l = max(0, -(off{o} // {stride}))")
    g.emit(f"{o}h = min({out}, ({size - 1} - off{o}) // {stride} + 1)")


def _at(o: str, stride: int) -> str:
    """Input coordinate of output `o` under the current tap."""
    return f"{o} + off{o}" if stride == 1 else f"{o} * {stride} + off{o}"


def _tap_loops(g: LoopGen, geo: ConvGeometry, image, out_map, per_tap: str) -> str:
    """Open the loops every convolution template shares: filters cf and channels cc of
    `out_map` [F, ...] and `image` [C, ...], the kernel taps (`per_tap` is emitted once per
    tap), the tap's valid output rows (with the image row `ih`) and columns. Returns the image
    column of the current output column; six levels are left open."""
    (kh, kw), (c, h, wd), (f, ho, wo) = geo.kernel, image, out_map
    g.open(f"for cf in range({f}):")
    g.open(f"for cc in range({c}):")
    g.open(f"for ki in range({kh}):")
    _tap_range(g, "oh", "ki", geo, 0, h, ho)
    g.open(f"for kj in range({kw}):")
    _tap_range(g, "ow", "kj", geo, 1, wd, wo)
    g.emit(per_tap)
    g.open("for oh in range(ohl, ohh):")
    g.emit(f"ih = {_at('oh', geo.stride[0])}")
    g.open("for ow in range(owl, owh):")
    return _at("ow", geo.stride[1])


def _zero(g: LoopGen, n: Node) -> None:
    c, h, wd = n.shape
    g.open(f"for cz in range({c}):")
    g.open(f"for hz in range({h}):")
    g.open(f"for wz in range({wd}):")
    _write(g, n, ["cz", "hz", "wz"], "ZERO")
    g.close(3)


@_own_names
def lower_conv2d(g: LoopGen, n: Node) -> None:
    """out[f, oh, ow] += w[f, c, i, j] * x[c, tap row, tap column], tap by tap."""
    x, w = n.inputs
    g.alloc(n)
    opened = g.lead_loops(n)
    _zero(g, n)
    weight = f"wv = {g.ref(w, ['cf', 'cc', 'ki', 'kj'])}"
    column = _tap_loops(g, geometry_of(n), x.shape, n.shape, weight)
    g.emit(f"{g.ref(n, ['cf', 'oh', 'ow'])} += wv * {g.ref(x, ['cc', 'ih', column])}")
    g.close(opened + 6)


@_own_names
def lower_conv2d_input_grad(g: LoopGen, n: Node) -> None:
    """dx[c, tap row, tap column] += w[f, c, i, j] * g[f, oh, ow]: the forward's scatter."""
    gy, w = n.inputs
    g.alloc(n)
    opened = g.lead_loops(n)
    _zero(g, n)
    weight = f"wv = {g.ref(w, ['cf', 'cc', 'ki', 'kj'])}"
    column = _tap_loops(g, geometry_of(n), n.shape, gy.shape, weight)
    g.emit(f"{g.ref(n, ['cc', 'ih', column])} += wv * {g.ref(gy, ['cf', 'oh', 'ow'])}")
    g.close(opened + 6)


@_own_names
def lower_conv2d_weight_grad(g: LoopGen, n: Node) -> None:
    """dw[f, c, i, j] = sum over the tap's valid outputs of x[c, tap] * g[f, oh, ow]."""
    x, gy = n.inputs
    g.alloc(n)
    opened = g.lead_loops(n)
    column = _tap_loops(g, geometry_of(n), x.shape, gy.shape, "acc = ZERO")
    g.emit(f"acc += {g.ref(x, ['cc', 'ih', column])} * {g.ref(gy, ['cf', 'oh', 'ow'])}")
    g.close(2)
    _write(g, n, ["cf", "cc", "ki", "kj"], "acc")
    g.close(opened + 4)


# ---- pooling -------------------------------------------------------------------------------
def _window_argmax(g: LoopGen, x: Node, geo: ConvGeometry) -> None:
    """Inside loops over cc, oh, ow: (bh, bw) = first cell of the window holding its max."""
    kh, kw = geo.kernel
    _, h, wd = x.shape
    g.emit("mx = -np.inf")
    g.emit("bh = -1")
    g.emit("bw = -1")
    g.open(f"for ki in range({kh}):")
    _open_tap(g, "ih", "oh", "ki", h, geo, 0)
    g.open(f"for kj in range({kw}):")
    _open_tap(g, "iw", "ow", "kj", wd, geo, 1)
    g.emit(f"xv = {g.ref(x, ['cc', 'ih', 'iw'])}")
    g.open("if xv > mx or bh < 0:")
    g.emit("mx = xv")
    g.emit("bh = ih")
    g.emit("bw = iw")
    g.close(5)


def _pool_nest(g: LoopGen, n: Node) -> int:
    c, ho, wo = n.shape
    opened = g.lead_loops(n)
    g.open(f"for cc in range({c}):")
    g.open(f"for oh in range({ho}):")
    g.open(f"for ow in range({wo}):")
    return opened + 3


@_own_names
def lower_maxpool2d(g: LoopGen, n: Node) -> None:
    (x,) = n.inputs
    g.alloc(n)
    levels = _pool_nest(g, n)
    _window_argmax(g, x, geometry_of(n))
    _write(g, n, ["cc", "oh", "ow"], "mx")
    g.close(levels)


@_own_names
def lower_maxpool2d_gather(g: LoopGen, n: Node) -> None:
    x, u = n.inputs
    g.alloc(n)
    levels = _pool_nest(g, n)
    _window_argmax(g, x, geometry_of(n))
    _write(g, n, ["cc", "oh", "ow"], g.ref(u, ["cc", "bh", "bw"]))
    g.close(levels)


@_own_names
def lower_maxpool2d_grad(g: LoopGen, n: Node) -> None:
    """Zero this example's image, then add each output's adjoint at its window's argmax."""
    x, gy = n.inputs
    c, h, wd = n.shape
    _, ho, wo = gy.shape
    geo = geometry_of(n)
    g.alloc(n)
    opened = g.lead_loops(n)
    g.open(f"for cc in range({c}):")
    g.open(f"for ih in range({h}):")
    g.open(f"for iw in range({wd}):")
    _write(g, n, ["cc", "ih", "iw"], "0.0")
    g.close(2)
    g.open(f"for oh in range({ho}):")
    g.open(f"for ow in range({wo}):")
    _window_argmax(g, x, geo)
    g.emit(f"{g.ref(n, ['cc', 'bh', 'bw'])} += {g.ref(gy, ['cc', 'oh', 'ow'])}")
    g.close(opened + 3)


@_own_names
def lower_avgpool2d(g: LoopGen, n: Node) -> None:
    (x,) = n.inputs
    geo = geometry_of(n)
    kh, kw = geo.kernel
    _, h, wd = x.shape
    g.alloc(n)
    levels = _pool_nest(g, n)
    g.emit("acc = 0.0")
    g.open(f"for ki in range({kh}):")
    _open_tap(g, "ih", "oh", "ki", h, geo, 0)
    g.open(f"for kj in range({kw}):")
    _open_tap(g, "iw", "ow", "kj", wd, geo, 1)
    g.emit(f"acc += {g.ref(x, ['cc', 'ih', 'iw'])}")
    g.close(4)
    _write(g, n, ["cc", "oh", "ow"], f"acc / {float(kh * kw)}")
    g.close(levels)


@_own_names
def lower_avgpool2d_grad(g: LoopGen, n: Node) -> None:
    (gy,) = n.inputs
    geo = geometry_of(n)
    kh, kw = geo.kernel
    _, ho, wo = gy.shape
    c, h, wd = n.shape
    g.alloc(n)
    opened = g.lead_loops(n)
    g.open(f"for cc in range({c}):")
    g.open(f"for ih in range({h}):")
    g.open(f"for iw in range({wd}):")
    g.emit("acc = 0.0")
    g.open(f"for ki in range({kh}):")
    inner = 1 + _open_source(g, "oh", "ih", "ki", ho, geo, 0)
    g.open(f"for kj in range({kw}):")
    inner += 1 + _open_source(g, "ow", "iw", "kj", wo, geo, 1)
    g.emit(f"acc += {g.ref(gy, ['cc', 'oh', 'ow'])}")
    g.close(inner)
    _write(g, n, ["cc", "ih", "iw"], f"acc / {float(kh * kw)}")
    g.close(opened + 3)


# ---- channel ops ---------------------------------------------------------------------------
def _channel_reduce(g: LoopGen, n: Node, divisor: float | None) -> None:
    (x,) = n.inputs
    _, h, wd = x.shape
    g.alloc(n)
    opened = g.lead_loops(n)
    g.open(f"for cc in range({n.shape[0]}):")
    g.emit("acc = 0.0")
    g.open(f"for ih in range({h}):")
    g.open(f"for iw in range({wd}):")
    g.emit(f"acc += {g.ref(x, ['cc', 'ih', 'iw'])}")
    g.close(2)
    _write(g, n, ["cc"], f"acc / {divisor}" if divisor else "acc")
    g.close(opened + 1)


@_own_names
def lower_global_avgpool(g: LoopGen, n: Node) -> None:
    _, h, wd = n.inputs[0].shape
    _channel_reduce(g, n, float(h * wd))


@_own_names
def lower_channel_sum(g: LoopGen, n: Node) -> None:
    _channel_reduce(g, n, None)


@_own_names
def lower_channel_expand(g: LoopGen, n: Node) -> None:
    (v,) = n.inputs
    c, h, wd = n.shape
    g.alloc(n)
    opened = g.lead_loops(n)
    g.open(f"for cc in range({c}):")
    g.emit(f"cv = {g.ref(v, ['cc'])}")
    g.open(f"for ih in range({h}):")
    g.open(f"for iw in range({wd}):")
    _write(g, n, ["cc", "ih", "iw"], "cv")
    g.close(opened + 3)


@_own_names
def lower_batch_mean_per_channel(g: LoopGen, n: Node) -> None:
    """Mean over the batch (when x has one), H and W; the step axes stay those of the loop."""
    (x,) = n.inputs
    _, h, wd = x.shape
    count = f"(B * {float(h * wd)})" if x.batched else f"{float(h * wd)}"
    g.alloc(n)
    opened = g.lead_loops(n)
    g.open(f"for cc in range({n.shape[0]}):")
    g.emit("acc = 0.0")
    levels = 2
    if x.batched:
        g.open("for rb in range(B):")
        levels += 1
    g.open(f"for ih in range({h}):")
    g.open(f"for iw in range({wd}):")
    g.emit(f"acc += {g.ref(x, ['cc', 'ih', 'iw'], batch_var='rb')}")
    g.close(levels)
    _write(g, n, ["cc"], f"acc / {count}")
    g.close(opened + 1)
