"""What the kernel families share: registering a kernel on its op, and the nest shapes that
most kernels take (one point per output element, or per example)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

from graphrnn.ir.node import Node
from graphrnn.ir.registry import OPS
from graphrnn.loopnest import Builder, Nest

Kernel = Callable[[Node], list[Nest]]


def kernel(op_name: str) -> Callable[[Kernel], Kernel]:
    """Attach `fn` to the op record as its kernel description."""

    def attach(fn: Kernel) -> Kernel:
        OPS[op_name].kernel = fn
        return fn

    return attach


def per_element(n: Node, shape=None, names=None, tag: str | None = None) -> Builder:
    """A nest with one point per element of `shape` (the node's own by default)."""
    shape = n.shape if shape is None else shape
    names = names or [f"e{k}" for k in range(len(shape))]
    return Builder(n, list(zip(names, shape)), tag)


def per_example(n: Node, extra=()) -> Builder:
    """A nest with one point per (step, example) of `n`, and per entry of `extra` dims."""
    return Builder(n, list(extra))


@contextmanager
def reduced(b: Builder, src: Node, dst: Node, axes=None):
    """Loops over the step axes (those in `axes`, all by default) and the batch that `src`
    varies over and `dst` does not; yields (override, batch) for reading `src` inside."""
    override: dict[str, str] = {}
    with _nested(b, [a for a in sorted(src.axes - dst.axes) if axes is None or a in axes]) as vs:
        override.update(vs)
        if src.batched and not dst.batched:
            with b.loop("rb", "B") as rb:
                yield override, rb
        else:
            yield override, None


@contextmanager
def _nested(b: Builder, axes: list[str]):
    if not axes:
        yield {}
        return
    with b.loop(f"r_{axes[0]}", f"S_{axes[0]}") as var:
        with _nested(b, axes[1:]) as rest:
            yield {axes[0]: var, **rest}


@contextmanager
def loops(b: Builder, names: list[str], shape):
    """Nested sequential loops over `shape`; yields the loop variables."""
    if not shape:
        yield []
        return
    with b.loop(names[0], shape[0]) as var:
        with loops(b, names[1:], shape[1:]) as rest:
            yield [var, *rest]


def copy(n: Node) -> list[Nest]:
    """Every element of `n` is its operand's at the same position (broadcasting over the
    steps or batch `n` has and the operand lacks)."""
    b = per_element(n)
    b.store(n, b.elems, b.ref(n.inputs[0], b.elems))
    return [b.nest]


def done(*builders: Builder) -> list[Nest]:
    return [b.nest for b in builders]
