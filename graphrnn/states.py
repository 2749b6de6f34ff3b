"""Recurrent states given to and taken from one call (stateful truncated BPTT).

A *state* is a value that a delay reads at another step: `h` for `h(t-1)`, named as the
model names it (`h`, or `h.C` for the `C` of a cell instance `h`). `carried_graph(graph,
given, final)` is the model's graph with two changes, compiled like any other graph:

- every delay of a state in `given` reads, where its step lies before the sequence, a new
  batched input `initial:<name>` of the state's shape instead of the model's initial value
  (`h(0) = ...`): a constant, a parameter or an input alike is replaced for that call;
- with `final`, the graph outputs `final:<name>`: the state at the last step, for every
  state read one step back along the sequence axis, which is what the next chunk of the
  same sequences starts from.

The chunk's gradient stops at `initial:<name>`, an input: the carried state is a constant
of the chunk, which is what truncated BPTT cuts. Its own adjoint is `grad:initial:<name>`,
computed when the call differentiates inputs. For gradients that are not cut, a state in
`adjoints` gets a batched input `final_adjoint:<name>`, seeded as the adjoint of
`final:<name>` (autodiff.grad's cotangents): the next chunk's `grad:initial:<name>`, so
that chunks run from the last to the first add up to full BPTT.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from graphrnn.errors import DataError
from graphrnn.ir.graph import Graph, reachable
from graphrnn.ir.node import Node
from graphrnn.ir.ops.leaf import input_node
from graphrnn.ir.registry import apply
from graphrnn.passes._common import copy_graph
from graphrnn.segmented.rewrite import _refresh_contexts

INITIAL = "initial:"
FINAL = "final:"
FINAL_ADJOINT = "final_adjoint:"


def delays(graph: Graph) -> list[Node]:
    """The graph's delay nodes, in a fixed order."""
    return [n for n in reachable(graph.roots()) if n.op == "delay"]


def recurrent_states(graph: Graph) -> dict[str, tuple[int, ...]]:
    """Every state by name, with its shape per example (the initial arrays are [B, *shape])."""
    return {d.inputs[0].label(): tuple(d.shape) for d in delays(graph)}


def check_states(graph: Graph, given: Mapping, what: str = "initial") -> dict[str, np.ndarray]:
    """Arrays given by state name (`what`: initial or final_adjoint), or an error naming a
    wrong name or shape."""
    if not isinstance(given, Mapping):
        raise DataError(
            f"{what} must be a dict of arrays by state name, like {{'h': h0}}; got "
            f"{type(given).__name__}"
        )
    states = recurrent_states(graph)
    arrays = {}
    for name, value in given.items():
        if name not in states:
            known = ", ".join(sorted(states)) or "none: it has no recurrence"
            raise DataError(
                f"{what} state '{name}' is not a state of model '{graph.name}'; its states "
                f"(values read at an earlier step) are {known}"
            )
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{what} state '{name}' is not a numeric array") from None
        shape = states[name]
        if array.ndim != 1 + len(shape) or array.shape[1:] != shape:
            raise DataError(
                f"{what} state '{name}' has shape {list(array.shape)}; expected "
                f"[batch, {', '.join(map(str, shape))}] (one state per example)"
            )
        arrays[name] = value
    return arrays


def _final_node(graph: Graph, name: str, users: list[Node]) -> Node | None:
    """`value(end)` for a state read one step back along the one axis, None for a state
    only read forwards in time; an error where a following call could not continue it."""
    back = [d for d in users if d.attrs["offset"] < 0]
    if not back:
        return None
    if len(graph.axes) != 1:
        raise DataError(
            f"final states are taken along one sequence axis; model '{graph.name}' has the "
            f"axes {', '.join(graph.axes)}"
        )
    far = [d for d in back if d.attrs["offset"] < -1]
    if far:
        k = -far[0].attrs["offset"]
        raise DataError(
            f"'{name}' is read {k} steps back ({name}(t-{k})): a following call would need "
            f"its last {k} steps, but it starts from one initial value; final states are "
            "carried for one-step delays only"
        )
    return apply("at", back[0].inputs[0], axis=graph.axes[0], index=-1)


def carried_graph(
    graph: Graph, given: frozenset[str], final: bool, adjoints: frozenset[str] = frozenset()
) -> Graph:
    """The graph whose states in `given` start from inputs, with final states as outputs
    when `final` and adjoint inputs for those in `adjoints` (see the module docstring); the
    model's own graph is not touched."""
    g = copy_graph(graph)
    by_state: dict[str, list[Node]] = {}
    for node in delays(g):
        by_state.setdefault(node.inputs[0].label(), []).append(node)
    inputs = dict(g.inputs)
    for name in sorted(given):
        leaf = input_node(INITIAL + name, by_state[name][0].shape, loc=by_state[name][0].loc)
        inputs[leaf.name] = leaf
        for node in by_state[name]:
            node.inputs[1] = leaf
    outputs = dict(g.outputs)
    if final:
        for name, users in by_state.items():
            node = _final_node(g, name, users)
            if node is not None:
                outputs[FINAL + name] = node
    roots = list(outputs.values()) + ([g.loss] if g.loss is not None else [])
    _refresh_contexts(reachable(roots))
    used = {n.id for n in reachable(roots)}
    inputs = {k: v for k, v in inputs.items() if v.id in used}
    for name in sorted(adjoints):
        if FINAL + name not in outputs:
            raise DataError(
                f"final_adjoint state '{name}' has no final state to seed (it is not read one "
                f"step back); the final states are {', '.join(sorted(final_outputs(outputs)))}"
            )
        out = outputs[FINAL + name]
        inputs[FINAL_ADJOINT + name] = input_node(FINAL_ADJOINT + name, out.shape, loc=out.loc)
    return replace(g, inputs=inputs, outputs=outputs)


def final_outputs(outputs: Graph | Mapping[str, Node]) -> dict[str, Node]:
    """The `final:<name>` outputs of a carried graph (none for a model's own graph)."""
    outputs = outputs.outputs if isinstance(outputs, Graph) else outputs
    return {k: v for k, v in outputs.items() if k.startswith(FINAL)}


def cotangents(graph: Graph) -> dict[str, Node]:
    """The seeds of the final states' adjoints, by output name (autodiff.grad)."""
    return {
        FINAL + k[len(FINAL_ADJOINT) :]: v
        for k, v in graph.inputs.items()
        if k.startswith(FINAL_ADJOINT)
    }
