"""Scheduling the folded graph: strongly connected components in dependency order.

A component of one node without a self-loop is evaluated in bulk, over all its steps at once
(this is what hoists the input projection out of the loop). A larger component is a
recurrence: every cycle must pass through a delay, all its delays must run along one axis in
one direction, and it is evaluated by a loop over that axis. Anything else is not causal and
is rejected here, naming the user's equations.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphrnn.errors import CausalityError
from graphrnn.ir.graph import reachable
from graphrnn.ir.node import Node


@dataclass
class Bulk:
    node: Node


@dataclass
class Loop:
    """A recurrence along `axis`; `forward` loops from the first step to the last."""

    axis: str
    forward: bool
    nodes: list[Node]

    @property
    def delays(self) -> list[Node]:
        ids = {n.id for n in self.nodes}
        return [n for n in self.nodes if n.op == "delay" and n.inputs[0].id in ids]


def schedule(roots: list[Node]) -> list[Bulk | Loop]:
    items: list[Bulk | Loop] = []
    for component in _components(roots):
        ids = {n.id for n in component}
        if len(component) == 1 and not any(i.id in ids for i in component[0].inputs):
            items.append(Bulk(component[0]))
        else:
            items.append(_loop(component, ids))
    return items


def _names(nodes: list[Node]) -> str:
    names = sorted({n.name for n in nodes if n.name})
    return ", ".join(f"'{n}'" for n in names) or "unnamed values"


def _first_loc(nodes: list[Node]):
    return next((n.loc for n in nodes if n.loc is not None), None)


def _loop(component: list[Node], ids: set[int]) -> Loop:
    delays = [n for n in component if n.op == "delay" and n.inputs[0].id in ids]
    order = _order_without_delays(component, ids)
    if order is None:
        raise CausalityError(
            f"the equations {_names(component)} depend on each other at the same step",
            _first_loc(component),
            "every cycle must read an earlier (or later) step, e.g. h(t-1)",
        )
    kinds = {(d.attrs["axis"], d.attrs["offset"] < 0) for d in delays}
    if len(kinds) > 1:
        lags = ", ".join(sorted({f"{d.attrs['axis']}{d.attrs['offset']:+d}" for d in delays}))
        raise CausalityError(
            f"the equations {_names(component)} form one cycle that reads steps {lags}",
            _first_loc(component),
            "a recurrence must run in one direction along one axis; split it into two "
            "recurrences (e.g. a forward and a backward one) and combine their outputs",
        )
    ((axis, forward),) = kinds
    whole = [n for n in component if n.op != "delay" and n.attrs.get("axis") == axis]
    if whole:
        raise CausalityError(
            f"the recurrence {_names(component)} uses a whole-sequence value "
            f"({whole[0].op} over '{axis}') inside its own step",
            _first_loc(whole + component),
            "a step may read only earlier (or later) steps of its own recurrence",
        )
    return Loop(axis, forward, order)


def _order_without_delays(component: list[Node], ids: set[int]) -> list[Node] | None:
    """Topological order of a component with its delayed edges cut; None if a cycle remains."""

    def same_step_inputs(n: Node) -> list[Node]:
        inputs = n.inputs[1:] if n.op == "delay" else n.inputs
        return [i for i in inputs if i.id in ids]

    pending = {n.id: len(same_step_inputs(n)) for n in component}
    users: dict[int, list[Node]] = {n.id: [] for n in component}
    for n in component:
        for i in same_step_inputs(n):
            users[i.id].append(n)
    ready = [n for n in component if pending[n.id] == 0]
    order = []
    while ready:
        n = ready.pop()
        order.append(n)
        for u in users[n.id]:
            pending[u.id] -= 1
            if pending[u.id] == 0:
                ready.append(u)
    return order if len(order) == len(component) else None


def _components(roots: list[Node]) -> list[list[Node]]:
    """Tarjan's algorithm, iterative; components come out dependencies first."""
    nodes = reachable(roots)
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[Node] = []
    result: list[list[Node]] = []
    counter = 0
    for start in nodes:
        if start.id in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node.id] = low[node.id] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node.id)
            recurse = False
            for j in range(i, len(node.inputs)):
                child = node.inputs[j]
                if child.id not in index:
                    work.append((node, j + 1))
                    work.append((child, 0))
                    recurse = True
                    break
                if child.id in on_stack:
                    low[node.id] = min(low[node.id], index[child.id])
            if recurse:
                continue
            if low[node.id] == index[node.id]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member.id)
                    component.append(member)
                    if member.id == node.id:
                        break
                result.append(component)
            if work:
                parent = work[-1][0]
                low[parent.id] = min(low[parent.id], low[node.id])
    return result
