"""Kernels of the structural ops (graphrnn/ir/ops/structure.py)."""

from __future__ import annotations

import math

from graphrnn.ir.node import Node
from graphrnn.kernels.common import (
    copy,
    done,
    kernel,
    loops,
    per_element,
    per_example,
    reduced,
)
from graphrnn.loopnest import Nest


@kernel("concat")
def concat(n: Node) -> list[Nest]:
    """One nest per operand, each copying its block: no test of which operand an output
    element comes from."""
    nests, start = [], 0
    for j, x in enumerate(n.inputs):
        b = per_element(n, x.shape, tag="concat" if j == 0 else f"concat{j}")
        e = b.elems
        b.store(n, e[:-1] + [f"{start} + {e[-1]}"], b.ref(x, e))
        nests.append(b.nest)
        start += x.shape[-1]
    return nests


@kernel("slice")
def slice_(n: Node) -> list[Nest]:
    b = per_element(n)
    e = b.elems
    b.store(n, e, b.ref(n.inputs[0], e[:-1] + [f"{n.attrs['start']} + {e[-1]}"]))
    return done(b)


@kernel("pad")
def pad(n: Node) -> list[Nest]:
    (x,) = n.inputs
    before, size = n.attrs["before"], x.shape[-1]
    b = per_element(n)
    e, last = b.elems, b.elems[-1]
    src = b.ref(x, e[:-1] + [f"{last} - {before}"])
    b.store(n, e, f"({src} if {before} <= {last} < {before + size} else 0.0)")
    return done(b)


def _sum_elems(n: Node, count: int | None) -> list[Nest]:
    (x,) = n.inputs
    b = per_example(n)
    acc = b.let("acc", "0.0")
    with loops(b, [f"r{j}" for j in range(len(x.shape))], x.shape) as rs:
        b.set(acc, b.ref(x, rs), "+=")
    b.store(n, [], f"{acc} / {float(count)}" if count else acc)
    return done(b)


@kernel("sum")
def sum_(n: Node) -> list[Nest]:
    return _sum_elems(n, None)


@kernel("mean")
def mean(n: Node) -> list[Nest]:
    return _sum_elems(n, math.prod(n.inputs[0].shape))


@kernel("expand")
def expand(n: Node) -> list[Nest]:
    (x,) = n.inputs
    b = per_element(n)
    b.store(n, b.elems, b.ref(x, b.elems if x.shape else []))
    return done(b)


@kernel("reduce_to")
def reduce_to(n: Node) -> list[Nest]:
    """The sum over the steps and batch `x` varies over and `n` does not (and over x's
    elements when n is a scalar)."""
    (x,) = n.inputs
    b = per_element(n)
    acc = b.let("acc", "0.0")
    with reduced(b, x, n) as (override, batch):
        if x.shape and not n.shape:
            with loops(b, [f"r{j}" for j in range(len(x.shape))], x.shape) as rs:
                b.set(acc, b.ref(x, rs, override, batch), "+=")
        else:
            b.set(acc, b.ref(x, b.elems, override, batch), "+=")
    b.store(n, b.elems, acc)
    return done(b)


kernel("broadcast")(copy)


@kernel("cumsum")
def cumsum(n: Node) -> list[Nest]:
    """One point per row: a running sum along the last dimension, from its end if reversed."""
    (x,) = n.inputs
    b = per_element(n, n.shape[:-1])
    acc = b.let("acc", "0.0")
    with b.loop("e", n.shape[-1], reverse=n.attrs.get("reverse", False)) as e:
        b.set(acc, b.ref(x, [*b.elems, e]), "+=")
        b.store(n, [*b.elems, e], acc)
    return done(b)
