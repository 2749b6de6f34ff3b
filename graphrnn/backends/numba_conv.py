"""The Numba backend's convolutions: a scatter, tap by tap, instead of graphrnn/kernels/conv.py's
gather. On a CPU, looping over filters, channels and kernel taps outside and along output rows
inside, with each tap's valid output range computed once (no bounds test in the inner loop),
vectorises along the row; the gather form, a sum over each output's window, did not. The
nests are printed by this backend alone; pooling and channel ops use the shared kernels.
"""

from __future__ import annotations

from contextlib import contextmanager

from graphrnn.backends.numba_printer import NumbaPrinter
from graphrnn.ir.node import Node
from graphrnn.ir.ops.conv import ConvGeometry, geometry_of
from graphrnn.kernels.common import loops, per_example
from graphrnn.loopnest import Builder


def _tap_range(b: Builder, o: str, k: str, geo: ConvGeometry, d: int, size: int, out: int):
    """The offset k * dilation - pad of tap k, and the half-open range of outputs whose tap k
    lies inside the input (0 <= o * stride + offset < size)."""
    stride, dilation, pad = geo.stride[d], geo.dilation[d], geo.padding[d]
    off = b.let(f"off{o}", f"{k} * {dilation} - {pad}", "index")
    lo = b.let(f"{o}l", f"max(0, -({off} // {stride}))", "index")
    hi = b.let(f"{o}h", f"min({out}, ({size - 1} - {off}) // {stride} + 1)", "index")
    return off, lo, hi


def _at(o: str, off: str, stride: int) -> str:
    return f"{o} + {off}" if stride == 1 else f"{o} * {stride} + {off}"


class _Tap:
    """The loop variables of one tap, and `rows()`: its valid output rows and columns."""

    def __init__(self, b: Builder, geo: ConvGeometry, cf, cc, ki, kj, oh_range, ow_range):
        self.b, self.geo = b, geo
        self.cf, self.cc, self.ki, self.kj = cf, cc, ki, kj
        self.oh_range, self.ow_range = oh_range, ow_range

    @contextmanager
    def rows(self):
        """Yields (oh, ih, ow, iw): output row and column, and the image's under this tap."""
        b, (sh, sw) = self.b, self.geo.stride
        offh, lo_h, hi_h = self.oh_range
        offw, lo_w, hi_w = self.ow_range
        with b.loop("oh", hi_h, lo_h) as oh:
            ih = b.let("ih", _at(oh, offh, sh), "index")
            with b.loop("ow", hi_w, lo_w) as ow:
                yield oh, ih, ow, _at(ow, offw, sw)


@contextmanager
def _taps(b: Builder, geo: ConvGeometry, image, out_map):
    """Loops over the filters of `out_map` [F, ...], the channels of `image` [C, ...] and the
    kernel taps; yields a _Tap inside them."""
    (kh, kw), (c, h, wd), (f, ho, wo) = geo.kernel, image, out_map
    with b.loop("cf", f) as cf, b.loop("cc", c) as cc, b.loop("ki", kh) as ki:
        oh_range = _tap_range(b, "oh", ki, geo, 0, h, ho)
        with b.loop("kj", kw) as kj:
            ow_range = _tap_range(b, "ow", kj, geo, 1, wd, wo)
            yield _Tap(b, geo, cf, cc, ki, kj, oh_range, ow_range)


def _zero(b: Builder, n: Node) -> None:
    with loops(b, ["cz", "hz", "wz"], n.shape) as e:
        b.store(n, e, "ZERO")


def _scatter(g: NumbaPrinter, n: Node, image, out_map, store) -> bool:
    """Zero n, then for every tap add `store(tap, oh, ih, ow, iw, wv)` along the tap's valid
    output rows; wv is the tap's weight (the op's second operand)."""
    w = n.inputs[1]
    b = per_example(n)
    _zero(b, n)
    with _taps(b, geometry_of(n), image, out_map) as tap:
        wv = b.let("wv", b.ref(w, [tap.cf, tap.cc, tap.ki, tap.kj]))
        with tap.rows() as (oh, ih, ow, iw):
            store(b, tap, oh, ih, ow, iw, wv)
    g.print_nest(b.nest)
    return True


def conv2d(g: NumbaPrinter, n: Node) -> bool:
    """out[f, oh, ow] += w[f, c, i, j] * x[c, tap row, tap column], tap by tap."""
    x = n.inputs[0]

    def store(b, tap, oh, ih, ow, iw, wv):
        b.store(n, [tap.cf, oh, ow], f"{wv} * {b.ref(x, [tap.cc, ih, iw])}", "+=")

    return _scatter(g, n, x.shape, n.shape, store)


def conv2d_input_grad(g: NumbaPrinter, n: Node) -> bool:
    """dx[c, tap row, tap column] += w[f, c, i, j] * g[f, oh, ow]: the forward's scatter."""
    gy = n.inputs[0]

    def store(b, tap, oh, ih, ow, iw, wv):
        b.store(n, [tap.cc, ih, iw], f"{wv} * {b.ref(gy, [tap.cf, oh, ow])}", "+=")

    return _scatter(g, n, n.shape, gy.shape, store)


def conv2d_weight_grad(g: NumbaPrinter, n: Node) -> bool:
    """dw[f, c, i, j] = sum over the tap's valid outputs of x[c, tap] * g[f, oh, ow]."""
    x, gy = n.inputs
    b = per_example(n)
    with _taps(b, geometry_of(n), x.shape, gy.shape) as tap:
        acc = b.let("acc", "ZERO")
        with tap.rows() as (oh, ih, ow, iw):
            product = f"{b.ref(x, [tap.cc, ih, iw])} * {b.ref(gy, [tap.cf, oh, ow])}"
            b.set(acc, product, "+=")
        b.store(n, [tap.cf, tap.cc, tap.ki, tap.kj], acc)
    g.print_nest(b.nest)
    return True


OWN = {
    "conv2d": conv2d,
    "conv2d_input_grad": conv2d_input_grad,
    "conv2d_weight_grad": conv2d_weight_grad,
}
