"""Kernels of the grid ops (graphrnn/ir/ops/grid.py). Both are permutations: every output
element is one input element. Block and grid sizes are compile-time constants."""

from __future__ import annotations

from graphrnn.ir.node import Node
from graphrnn.kernels.common import done, kernel, per_element
from graphrnn.loopnest import Builder, Nest


@kernel("patches")
def patches(n: Node) -> list[Nest]:
    """p[.., i, j, b, c*ph*pw + di*pw + dj] = x[.., b, c, i*ph + di, j*pw + dj]"""
    (x,) = n.inputs
    ph, pw = n.attrs["ph"], n.attrs["pw"]
    b = per_element(n, (x.shape[0], ph, pw), ["gc", "gdi", "gdj"])
    c, di, dj = b.elems
    ri, cj = (Builder.axis(a) for a in n.attrs["axes"])
    src = b.ref(x, [c, f"{ri} * {ph} + {di}", f"{cj} * {pw} + {dj}"])
    b.store(n, [f"{c} * {ph * pw} + {di} * {pw} + {dj}"], src)
    return done(b)


@kernel("grid")
def grid(n: Node) -> list[Nest]:
    """out[.., b, k // (ph*pw), r*ph + (k // pw) % ph, c*pw + k % pw] = v[.., r, c, b, k]"""
    (v,) = n.inputs
    a = n.attrs
    ph, pw = a.get("ph", 1), a.get("pw", 1)
    row_axis, col_axis = a["axes"]
    b = per_element(n, (a["rows"], a["cols"], v.shape[0]), ["gr", "gq", "gk"])
    r, c, k = b.elems
    src = b.ref(v, [k], {row_axis: r, col_axis: c})
    if ph == pw == 1:
        dst = [k, r, c]
    else:
        dst = [
            f"{k} // {ph * pw}",
            f"{r} * {ph} + ({k} // {pw}) % {ph}",
            f"{c} * {pw} + {k} % {pw}",
        ]
    b.store(n, dst, src)
    return done(b)
