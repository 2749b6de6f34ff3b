"""Kernels of the convolution, pooling and channel ops (graphrnn/ir/ops/conv.py).

Each output element is computed from its window (a gather), bounds-checking the padded
border; the one scatter, maxpool2d_grad, runs one point per channel that zeroes its own slice
first, so no two points write one element. The Numba backend prints its own convolutions
(backends/numba_conv.py): on a CPU, looping over taps outside and along output rows inside
vectorises, and the gather form does not. Kernel sizes, strides, paddings and image sizes are
compile-time constants.
"""

from __future__ import annotations

from contextlib import contextmanager

from graphrnn.ir.node import Node
from graphrnn.ir.ops.conv import ConvGeometry, geometry_of
from graphrnn.kernels.common import done, kernel, per_element, per_example
from graphrnn.loopnest import Builder, Nest


def offset(out: str, stride: int, tap: str, dilation: int, pad: int) -> str:
    """Input coordinate of output `out` under kernel tap `tap`: out*stride + tap*dilation - pad."""
    expr = out if stride == 1 else f"{out} * {stride}"
    expr += f" + {tap}" if dilation == 1 else f" + {tap} * {dilation}"
    return f"{expr} - {pad}" if pad else expr


def _tap(b: Builder, name: str, out: str, tap: str, size: int, geo: ConvGeometry, d: int):
    """The input coordinate of output `out` and tap `tap`, and the test that it is inside."""
    var = b.let(name, offset(out, geo.stride[d], tap, geo.dilation[d], geo.padding[d]), "index")
    return var, b.when(f"0 <= {var} < {size}")


def _sources(b: Builder, name: str, pos: str, tap: str, limit: int, geo: ConvGeometry, d: int):
    """For the transposed ops: the output whose tap `tap` reads input `pos` (out * stride =
    pos + pad - tap * dilation), and yields inside the tests that it exists."""
    stride, dilation, pad = geo.stride[d], geo.dilation[d], geo.padding[d]
    t = tap if dilation == 1 else f"{tap} * {dilation}"
    source = f"{pos} + {pad} - {t}" if pad else f"{pos} - {t}"
    if stride == 1:
        var = b.let(name, source, "index")
        with b.when(f"0 <= {var} < {limit}"):
            yield var
        return
    q = b.let(f"q{name}", source, "index")
    with b.when(f"{q} >= 0 and {q} % {stride} == 0"):
        var = b.let(name, f"{q} // {stride}", "index")
        with b.when(f"{var} < {limit}"):
            yield var


@contextmanager
def _window(b: Builder, geo: ConvGeometry, image, oh: str, ow: str):
    """Loops over the taps of output (oh, ow) that fall inside `image` [C, H, W]; yields
    (ki, kj, ih, iw)."""
    (kh, kw), (_, h, wd) = geo.kernel, image
    with b.loop("ki", kh) as ki:
        ih, inside = _tap(b, "ih", oh, ki, h, geo, 0)
        with inside, b.loop("kj", kw) as kj:
            iw, inside_w = _tap(b, "iw", ow, kj, wd, geo, 1)
            with inside_w:
                yield ki, kj, ih, iw


@contextmanager
def _source_window(b: Builder, geo: ConvGeometry, out_map, ih: str, iw: str):
    """Loops over the taps that read input (ih, iw), for the outputs of `out_map` [F, Ho, Wo]
    they come from; yields (ki, kj, oh, ow)."""
    (kh, kw), (_, ho, wo) = geo.kernel, out_map
    with b.loop("ki", kh) as ki:
        for oh in _sources(b, "oh", ih, ki, ho, geo, 0):
            with b.loop("kj", kw) as kj:
                for ow in _sources(b, "ow", iw, kj, wo, geo, 1):
                    yield ki, kj, oh, ow


@kernel("conv2d")
def conv2d(n: Node) -> list[Nest]:
    x, w = n.inputs
    b = per_element(n, names=["cf", "oh", "ow"])
    cf, oh, ow = b.elems
    acc = b.let("acc", "0.0")
    with b.loop("cc", x.shape[0]) as cc:
        with _window(b, geometry_of(n), x.shape, oh, ow) as (ki, kj, ih, iw):
            product = f"{b.ref(x, [cc, ih, iw])} * {b.ref(w, [cf, cc, ki, kj])}"
            b.set(acc, product, "+=")
    b.store(n, b.elems, acc)
    return done(b)


@kernel("conv2d_input_grad")
def conv2d_input_grad(n: Node) -> list[Nest]:
    gy, w = n.inputs
    b = per_element(n, names=["cc", "ih", "iw"])
    cc, ih, iw = b.elems
    acc = b.let("acc", "0.0")
    with _source_window(b, geometry_of(n), gy.shape, ih, iw) as (ki, kj, oh, ow):
        with b.loop("cf", gy.shape[0]) as cf:
            product = f"{b.ref(gy, [cf, oh, ow])} * {b.ref(w, [cf, cc, ki, kj])}"
            b.set(acc, product, "+=")
    b.store(n, b.elems, acc)
    return done(b)


@kernel("conv2d_weight_grad")
def conv2d_weight_grad(n: Node) -> list[Nest]:
    x, gy = n.inputs
    geo = geometry_of(n)
    _, h, wd = x.shape
    _, ho, wo = gy.shape
    b = per_element(n, names=["cf", "cc", "ki", "kj"])
    cf, cc, ki, kj = b.elems
    acc = b.let("acc", "0.0")
    with b.loop("oh", ho) as oh:
        ih, inside = _tap(b, "ih", oh, ki, h, geo, 0)
        with inside, b.loop("ow", wo) as ow:
            iw, inside_w = _tap(b, "iw", ow, kj, wd, geo, 1)
            with inside_w:
                b.set(acc, f"{b.ref(x, [cc, ih, iw])} * {b.ref(gy, [cf, oh, ow])}", "+=")
    b.store(n, b.elems, acc)
    return done(b)


def _window_argmax(
    b: Builder, x: Node, geo: ConvGeometry, cc: str, oh: str, ow: str, cell: bool = True
):
    """(mx, bh, bw): the maximum of the window of output (oh, ow) and, if `cell`, the first
    cell holding it (bh < 0 until a cell inside the image has been seen)."""
    mx = b.let("mx", "0.0")
    bh = b.let("bh", "-1", "index")
    bw = b.let("bw", "-1", "index") if cell else None
    with _window(b, geo, x.shape, oh, ow) as (_, _, ih, iw):
        xv = b.let("xv", b.ref(x, [cc, ih, iw]))
        with b.when(f"{xv} > {mx} or {bh} < 0"):
            b.set(mx, xv)
            b.set(bh, ih)
            if cell:
                b.set(bw, iw)
    return mx, bh, bw


def _pool(n: Node) -> Builder:
    return per_element(n, names=["cc", "oh", "ow"])


@kernel("maxpool2d")
def maxpool2d(n: Node) -> list[Nest]:
    b = _pool(n)
    mx, _, _ = _window_argmax(b, n.inputs[0], geometry_of(n), *b.elems, cell=False)
    b.store(n, b.elems, mx)
    return done(b)


@kernel("maxpool2d_gather")
def maxpool2d_gather(n: Node) -> list[Nest]:
    """u at the argmax of each window of x."""
    x, u = n.inputs
    b = _pool(n)
    cc = b.elems[0]
    _, bh, bw = _window_argmax(b, x, geometry_of(n), *b.elems)
    b.store(n, b.elems, b.ref(u, [cc, bh, bw]))
    return done(b)


@kernel("maxpool2d_grad")
def maxpool2d_grad(n: Node) -> list[Nest]:
    """Zero this channel's image, then add each output's adjoint at its window's argmax."""
    x, gy = n.inputs
    c, h, wd = n.shape
    _, ho, wo = gy.shape
    b = per_example(n, [("cc", c)])
    cc = b.elems[0]
    with b.loop("ih", h) as ih, b.loop("iw", wd) as iw:
        b.store(n, [cc, ih, iw], "0.0")
    with b.loop("oh", ho) as oh, b.loop("ow", wo) as ow:
        _, bh, bw = _window_argmax(b, x, geometry_of(n), cc, oh, ow)
        b.store(n, [cc, bh, bw], b.ref(gy, [cc, oh, ow]), "+=")
    return done(b)


@kernel("avgpool2d")
def avgpool2d(n: Node) -> list[Nest]:
    (x,) = n.inputs
    geo = geometry_of(n)
    kh, kw = geo.kernel
    b = _pool(n)
    cc, oh, ow = b.elems
    acc = b.let("acc", "0.0")
    with _window(b, geo, x.shape, oh, ow) as (_, _, ih, iw):
        b.set(acc, b.ref(x, [cc, ih, iw]), "+=")
    b.store(n, b.elems, f"{acc} / {float(kh * kw)}")
    return done(b)


@kernel("avgpool2d_grad")
def avgpool2d_grad(n: Node) -> list[Nest]:
    (gy,) = n.inputs
    geo = geometry_of(n)
    kh, kw = geo.kernel
    b = per_element(n, names=["cc", "ih", "iw"])
    cc, ih, iw = b.elems
    acc = b.let("acc", "0.0")
    with _source_window(b, geo, gy.shape, ih, iw) as (_, _, oh, ow):
        b.set(acc, b.ref(gy, [cc, oh, ow]), "+=")
    b.store(n, b.elems, f"{acc} / {float(kh * kw)}")
    return done(b)


def _channel_reduce(n: Node, divisor: str | None, batch: bool = False) -> list[Nest]:
    """Per channel, the sum over the map (and over the batch when `batch` and x has one)."""
    (x,) = n.inputs
    _, h, wd = x.shape
    b = per_example(n, [("cc", n.shape[0])])
    cc = b.elems[0]
    acc = b.let("acc", "0.0")

    def add(rb: str | None) -> None:
        with b.loop("ih", h) as ih, b.loop("iw", wd) as iw:
            b.set(acc, b.ref(x, [cc, ih, iw], batch=rb), "+=")

    if batch and x.batched:
        with b.loop("rb", "B") as rb:
            add(rb)
    else:
        add(None)
    b.store(n, [cc], f"{acc} / {divisor}" if divisor else acc)
    return done(b)


@kernel("global_avgpool")
def global_avgpool(n: Node) -> list[Nest]:
    _, h, wd = n.inputs[0].shape
    return _channel_reduce(n, f"{float(h * wd)}")


@kernel("channel_sum")
def channel_sum(n: Node) -> list[Nest]:
    return _channel_reduce(n, None)


@kernel("channel_expand")
def channel_expand(n: Node) -> list[Nest]:
    b = per_element(n, names=["cc", "ih", "iw"])
    b.store(n, b.elems, b.ref(n.inputs[0], b.elems[:1]))
    return done(b)


@kernel("batch_mean_per_channel")
def batch_mean_per_channel(n: Node) -> list[Nest]:
    """Mean over the batch (when x has one), H and W; the step axes stay those of the node."""
    (x,) = n.inputs
    _, h, wd = x.shape
    count = f"(B * {float(h * wd)})" if x.batched else f"{float(h * wd)}"
    return _channel_reduce(n, count, batch=True)
