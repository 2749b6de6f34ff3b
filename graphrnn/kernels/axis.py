"""Kernels of the ops on step axes and the batch (graphrnn/ir/ops/axis.py).

`Builder.axis(a)` is the current index along step axis a: a loop variable, or the step of the
recurrence the nest runs in. batch_size and axis_size have no kernel: each backend fills them.
"""

from __future__ import annotations

from graphrnn.ir.node import Node
from graphrnn.kernels.common import copy, done, kernel, per_element, reduced
from graphrnn.loopnest import Builder, Nest


@kernel("delay")
def delay(n: Node) -> list[Nest]:
    """v one or more steps away along the axis, or the initial value past the boundary."""
    v, init = n.inputs
    axis, offset = n.attrs["axis"], n.attrs["offset"]
    b = per_element(n)
    src = b.let("src", f"{Builder.axis(axis)} + {offset}", "index")
    with b.when(f"0 <= {src} < S_{axis}"):
        b.store(n, b.elems, b.ref(v, b.elems, {axis: src}))
    with b.otherwise():
        b.store(n, b.elems, b.ref(init, b.elems))
    return done(b)


def _boundary(axis: str, offset: int) -> tuple[str, str]:
    """[lo, hi): the steps where a delay by `offset` reads its initial value."""
    size, k = f"S_{axis}", abs(offset)
    if offset < 0:
        return "0", f"({k} if {k} < {size} else {size})"
    return f"({size} - {k} if {size} > {k} else 0)", size


@kernel("edge_sum")
def edge_sum(n: Node) -> list[Nest]:
    (x,) = n.inputs
    axis = n.attrs["axis"]
    lo, hi = _boundary(axis, n.attrs["offset"])
    b = per_element(n)
    if axis in x.axes:
        acc = b.let("acc", "0.0")
        with b.loop(f"r_{axis}", hi, lo) as r:
            b.set(acc, b.ref(x, b.elems, {axis: r}), "+=")
    else:
        acc = b.let("acc", f"({hi} - {lo}) * {b.ref(x, b.elems)}")
    b.store(n, b.elems, acc)
    return done(b)


def _conditional_copy(n: Node, condition: str) -> list[Nest]:
    b = per_element(n)
    b.store(n, b.elems, f"({b.ref(n.inputs[0], b.elems)} if {condition} else 0.0)")
    return done(b)


@kernel("edge_fill")
def edge_fill(n: Node) -> list[Nest]:
    axis = n.attrs["axis"]
    lo, hi = _boundary(axis, n.attrs["offset"])
    return _conditional_copy(n, f"{lo} <= {Builder.axis(axis)} < {hi}")


def _position(axis: str, index: int) -> str:
    """The 0-based step of a 1-based index; negative indices count from the end."""
    return f"(S_{axis} - {-index})" if index < 0 else str(index - 1)


@kernel("place")
def place(n: Node) -> list[Nest]:
    axis = n.attrs["axis"]
    position = _position(axis, n.attrs["index"])
    return _conditional_copy(n, f"{Builder.axis(axis)} == {position}")


@kernel("at")
def at(n: Node) -> list[Nest]:
    (x,) = n.inputs
    axis = n.attrs["axis"]
    b = per_element(n)
    b.store(n, b.elems, b.ref(x, b.elems, {axis: _position(axis, n.attrs["index"])}))
    return done(b)


kernel("expand_axis")(copy)


@kernel("reduce_axis")
def reduce_axis(n: Node) -> list[Nest]:
    (x,) = n.inputs
    axis = n.attrs["axis"]
    b = per_element(n)
    if axis in x.axes:
        acc = b.let("acc", "0.0")
        with b.loop(f"r_{axis}", f"S_{axis}") as r:
            b.set(acc, b.ref(x, b.elems, {axis: r}), "+=")
    else:
        acc = b.let("acc", f"S_{axis} * {b.ref(x, b.elems)}")
    mean = n.attrs["kind"] == "mean"
    b.store(n, b.elems, f"{acc} / S_{axis}" if mean else acc)
    return done(b)


@kernel("batch_mean")
def batch_mean(n: Node) -> list[Nest]:
    """The mean over the batch; a value that does not vary over it is its own mean."""
    (x,) = n.inputs
    b = per_element(n)
    acc = b.let("acc", "0.0")
    with reduced(b, x, n, axes=set()) as (override, batch):
        b.set(acc, b.ref(x, b.elems, override, batch), "+=")
    b.store(n, b.elems, f"{acc} / B" if x.batched else acc)
    return done(b)
