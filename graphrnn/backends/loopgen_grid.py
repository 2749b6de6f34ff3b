"""Loop-nest templates of the grid ops (graphrnn/ir/ops/grid.py), found by name like those
of loopgen_ops.py.

Both ops are permutations: every output element is one input element. patches loops over its
own steps (i, j), the batch and the vector; grid loops over the batch and the map and reads
the steps (i, j) of its operand explicitly. Block sizes and grid sizes are compile-time
constants of the generated source.
"""

from __future__ import annotations

from graphrnn.backends.loopgen import LoopGen
from graphrnn.ir.node import Node


def _names(g: LoopGen, n: Node, *names: str) -> list[str]:
    k = g.number[n.id]
    return [f"{name}_{k}" for name in names]


def lower_patches(g: LoopGen, n: Node) -> None:
    """p[.., i, j, b, c*ph*pw + di*pw + dj] = x[.., b, c, i*ph + di, j*pw + dj]"""
    (x,) = n.inputs
    a = n.attrs
    ph, pw = a["ph"], a["pw"]
    cc, di, dj = _names(g, n, "gc", "gdi", "gdj")
    g.alloc(n)
    opened = g.lead_loops(n)
    g.open(f"for {cc} in range({x.shape[0]}):")
    g.open(f"for {di} in range({ph}):")
    g.open(f"for {dj} in range({pw}):")
    ri, cj = (g.axis_var(axis) for axis in a["axes"])
    src = g.ref(x, [cc, f"{ri} * {ph} + {di}", f"{cj} * {pw} + {dj}"])
    dst = g.ref(n, [f"{cc} * {ph * pw} + {di} * {pw} + {dj}"])
    g.emit(f"{dst} = {src}")
    g.close(opened + 3)


def lower_grid(g: LoopGen, n: Node) -> None:
    """out[.., b, k // (ph*pw), r*ph + (k // pw) % ph, c*pw + k % pw] = v[.., r, c, b, k]"""
    (v,) = n.inputs
    a = n.attrs
    ph, pw = a.get("ph", 1), a.get("pw", 1)
    r, c, k = _names(g, n, "gr", "gq", "gk")
    row_axis, col_axis = a["axes"]
    g.alloc(n)
    opened = g.lead_loops(n)
    g.open(f"for {r} in range({a['rows']}):")
    g.open(f"for {c} in range({a['cols']}):")
    g.open(f"for {k} in range({v.shape[0]}):")
    src = g.ref(v, [k], override={row_axis: r, col_axis: c})
    if ph == pw == 1:
        dst = g.ref(n, [k, r, c])
    else:
        dst = g.ref(
            n,
            [
                f"{k} // {ph * pw}",
                f"{r} * {ph} + ({k} // {pw}) % {ph}",
                f"{c} * {pw} + {k} % {pw}",
            ],
        )
    g.emit(f"{dst} = {src}")
    g.close(opened + 3)
