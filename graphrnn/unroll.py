"""Unrolling: the folded graph for given axis lengths as an explicit acyclic graph.

Every node that varies over an axis is copied once per step and named like `h@3`; static
nodes (parameters, constants, values without an axis) appear once and are shared by all steps.
A delay becomes a plain edge to the copy at the shifted step, or to the initial value at the
boundary. The unrolled graph is the definition of what the folded graph means.
"""

from __future__ import annotations

import itertools
import sys

from graphrnn.ir.graph import Graph
from graphrnn.ir.node import Context, Node
from graphrnn.ir.ops.leaf import const
from graphrnn.ir.registry import apply

Step = tuple[tuple[str, int], ...]


def unroll(graph: Graph, sizes: dict[str, int]) -> Graph:
    """The acyclic graph for axis lengths `sizes` (1-based steps, e.g. {"t": 5}); axes of
    static length (graph.axis_sizes) need not be given."""
    sizes = dict(sizes)
    for axis, size in graph.axis_sizes.items():
        if sizes.setdefault(axis, size) != size:
            raise ValueError(f"axis '{axis}' has the static length {size}, not {sizes[axis]}")
    missing = [a for a in graph.axes if a not in sizes]
    if missing:
        raise ValueError(f"give a length for the axes {missing} to unroll '{graph.name}'")
    unroller = _Unroller(sizes)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 50 * (sum(sizes.values()) + 100)))
    try:
        outputs = {}
        for name, node in graph.outputs.items():
            for step in unroller.steps(node.axes):
                outputs[_step_name(name, step)] = unroller.copy(node, step)
        loss = unroller.copy(graph.loss, ()) if graph.loss is not None else None
    finally:
        sys.setrecursionlimit(limit)
    return Graph(
        f"unroll({graph.name})",
        graph.axes,
        graph.inputs,
        graph.targets,
        graph.params,
        outputs,
        loss,
        dict(graph.axis_sizes),
    )


def _step_name(name: str, step: Step) -> str:
    if not step:
        return name
    if len(step) == 1:
        return f"{name}@{step[0][1]}"
    return f"{name}@({','.join(str(k) for _, k in step)})"


class _Unroller:
    def __init__(self, sizes: dict[str, int]):
        self.sizes = sizes
        self.memo: dict[tuple[int, Step], Node] = {}

    def steps(self, axes) -> list[Step]:
        names = sorted(axes)
        ranges = [range(1, self.sizes[a] + 1) for a in names]
        return [tuple(zip(names, combo)) for combo in itertools.product(*ranges)]

    def copy(self, node: Node, step: Step) -> Node:
        step = tuple((a, k) for a, k in step if a in node.axes)
        key = (node.id, step)
        if key not in self.memo:
            self.memo[key] = self._copy(node, dict(step))
        return self.memo[key]

    def _at(self, node: Node, step: dict[str, int]) -> Node:
        for axis in sorted(node.axes):
            node = apply("at", node, axis=axis, index=step[axis])
        return node

    def _sum_over(self, node: Node, step: dict, axes) -> Node:
        total = None
        for extra in self.steps(axes):
            term = self.copy(node, tuple({**step, **dict(extra)}.items()))
            total = term if total is None else apply("add", total, term)
        return total

    def _copy(self, node: Node, step: dict[str, int]) -> Node:
        op, attrs = node.op, node.attrs
        if op in ("param", "const", "batch_size") or (op == "input" and not node.axes):
            return node
        name = _step_name(node.name, tuple(sorted(step.items()))) if node.name else None
        if op == "input":
            result = self._at(node, step)
            result.name = name
            return result
        if op == "delay":
            axis, source = attrs["axis"], step[attrs["axis"]] + attrs["offset"]
            if 1 <= source <= self.sizes[axis]:
                return self.copy(node.inputs[0], tuple({**step, axis: source}.items()))
            return self.copy(node.inputs[1], tuple(step.items()))
        if op == "axis_size":
            return const(float(self.sizes[attrs["axis"]]))
        if op in ("reduce_axis", "edge_sum", "at", "reduce_to"):
            return self._reduction(node, step)
        if op == "broadcast":
            inner = self.copy(node.inputs[0], tuple(step.items()))
            if node.batched and not inner.batched:
                return apply("broadcast", inner, context=Context(frozenset(), True))
            return inner
        if op in ("place", "edge_fill", "expand_axis"):
            return self._placement(node, step)
        if op in ("patches", "grid"):
            return self._grid_op(node, step)
        inputs = [self.copy(i, tuple(step.items())) for i in node.inputs]
        return apply(op, *inputs, name=name, loc=node.loc, **attrs)

    def _reduction(self, node: Node, step: dict[str, int]) -> Node:
        (x,), attrs = node.inputs, node.attrs
        if node.op == "reduce_to":
            total = self._sum_over(x, step, x.axes - node.axes)
            return apply("reduce_to", total, **attrs)
        axis = attrs["axis"]
        if node.op == "at":
            index = attrs["index"]
            position = index if index > 0 else self.sizes[axis] + 1 + index
            return self.copy(x, tuple({**step, axis: position}.items()))
        if node.op == "edge_sum":
            total = None
            for position in _boundary_steps(self.sizes[axis], attrs["offset"]):
                term = self.copy(x, tuple({**step, axis: position}.items()))
                total = term if total is None else apply("add", total, term)
            return total if total is not None else const(0.0, node.shape)
        total = self._sum_over(x, step, {axis})
        if attrs["kind"] == "mean":
            total = apply("div", total, const(float(self.sizes[axis])))
        return total

    def _grid_op(self, node: Node, step: dict[str, int]) -> Node:
        """patches at step (i, j): that step of the patches of the (static) image; grid: the
        grid of a value assembled from every step's copy with `place`."""
        (x,), attrs = node.inputs, node.attrs
        axes = attrs["axes"]
        outer = tuple((a, k) for a, k in step.items() if a not in axes)
        if node.op == "patches":
            return self._at(apply("patches", self.copy(x, outer), **attrs), step)
        total = None
        for extra in self.steps(axes):
            term = self.copy(x, tuple({**step, **dict(extra)}.items()))
            for axis, k in extra:
                term = apply("place", term, axis=axis, index=k)
            total = term if total is None else apply("add", total, term)
        return apply("grid", total, **attrs)

    def _placement(self, node: Node, step: dict[str, int]) -> Node:
        (x,), attrs = node.inputs, node.attrs
        axis, position = attrs["axis"], step[attrs["axis"]]
        if node.op == "expand_axis":
            hit = True
        elif node.op == "place":
            index = attrs["index"]
            hit = position == (index if index > 0 else self.sizes[axis] + 1 + index)
        else:
            hit = position in _boundary_steps(self.sizes[axis], attrs["offset"])
        inner = {a: k for a, k in step.items() if a != axis}
        return self.copy(x, tuple(inner.items())) if hit else const(0.0, node.shape)


def _boundary_steps(size: int, offset: int) -> list[int]:
    k = min(abs(offset), size)
    return list(range(1, k + 1)) if offset < 0 else list(range(size - k + 1, size + 1))
