"""The segment graph: a model's folded graph rewritten to run one segment of steps.

It is built at the graph level, so it works for every backend: from the model's folded graph
we derive once a *segment graph*, an ordinary graph that any backend compiles:

- every delay by one step along t gets the initial value `first * init + (1 - first) * carry`,
  where `carry` is a new batched input (the state entering the segment) and `first` a scalar
  input that is 1 for the first segment only: the model's own initial values (a learned h0,
  an `h_init` input) act, and receive gradient, in the first segment alone;
- the segment graph outputs each carried state at its last step (`at` the last step);
- its loss is the model's loss restricted to the segment (a sum over t stays a sum, a mean
  over t becomes a sum times 1/T, fed as the input `inv_steps`; terms without t are counted in
  the first segment only) plus sum(seed * state at the last step): the seed is the adjoint of
  that state coming back from the following segment, and the gradient with respect to the
  `carry` input is the seed of the previous segment.

Supported: recurrences along one axis running forwards, delays of one step, losses that are
sums or means over t of per-step terms (scaled, added, plus terms without t). Anything that
reads the whole sequence (h(end), reductions inside the per-step terms), runs backwards in
time (bidirectional models), reads further back (h(t-2)), or has several axes is rejected
with an error that names it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from graphrnn.errors import DSLError, GraphRNNError
from graphrnn.ir.graph import Graph, reachable
from graphrnn.ir.node import Node
from graphrnn.ir.ops.leaf import const, input_node
from graphrnn.ir.registry import OPS, apply, union_context
from graphrnn.passes._common import copy_graph

PREFIX = "bptt."
FIRST = PREFIX + "first"
INV_STEPS = PREFIX + "inv_steps"
SEGMENT_LOSS = PREFIX + "loss"
ADVICE = "compile without bptt_checkpoint (train without --bptt-checkpoint)"


@dataclass(frozen=True)
class Carry:
    """One state carried across segment boundaries: the value a one-step delay reads."""

    input: str  # the state entering the segment
    seed: str  # the adjoint of the state leaving the segment, from the next segment
    output: str  # the state leaving the segment (at its last step)
    label: str  # the user's name for the value, for messages


@dataclass
class SegmentGraph:
    """`graph`: loss with seed terms, outputs the carried states (the forward sweep and the
    backward sweep run it); `loss_graph`: the segment's own loss and the states, no seeds
    (for a loss without gradients)."""

    graph: Graph
    loss_graph: Graph
    axis: str
    carries: list[Carry]


def _fail(message: str, node: Node | None = None) -> GraphRNNError:
    text = f"bptt_checkpoint: {message}"
    if node is not None and node.loc is not None:
        return DSLError(text, node.loc, ADVICE)
    return GraphRNNError(f"{text}; {ADVICE}")


def time_axis(graph: Graph) -> str:
    """The one sequence axis that segments cut, or an error saying why there is none."""
    if graph.loss is None:
        raise _fail(f"model '{graph.name}' declares no loss, so there is no BPTT to segment")
    if len(graph.axes) != 1:
        axes = ", ".join(graph.axes) or "none"
        raise _fail(
            f"model '{graph.name}' has the axes ({axes}); checkpointing cuts exactly one "
            "sequence axis into segments"
        )
    (axis,) = graph.axes
    if axis in graph.axis_sizes:
        raise _fail(f"the length of axis '{axis}' is fixed by the model, it cannot be segmented")
    return axis


def _whole_sequence(node: Node, axis: str) -> str | None:
    """Why `node` cannot be computed one segment at a time, or None if it can."""
    if node.attrs.get("axis") != axis or node.op == "expand_axis":
        return None
    name = f"'{node.inputs[0].label()}'" if node.inputs else "a value"
    if node.op == "delay":
        offset = node.attrs["offset"]
        if offset == -1:
            return None
        if offset > 0:
            return (
                f"{name} reads a later step ({axis}+{offset}): a recurrence running backwards "
                "in time (as in bidirectional models) needs the end of the sequence first"
            )
        return (
            f"{name} reads {-offset} steps back ({axis}{offset}); only one-step delays are carried"
        )
    if node.op == "at":
        where = "end" if node.attrs["index"] == -1 else node.attrs["index"]
        return f"the loss reads {name} at one step ({where}) of the whole sequence, e.g. h(end)"
    if node.op == "reduce_axis":
        return f"a {node.attrs['kind']} over '{axis}' is used inside a per-step term"
    if node.op == "axis_size":
        return f"a per-step term uses the length of '{axis}'"
    return f"'{node.op}' reads the whole sequence along '{axis}'"


def _check_per_step(root: Node, axis: str) -> None:
    """Every value a per-step loss term reads must be computable segment by segment."""
    for node in reachable([root]):
        why = _whole_sequence(node, axis)
        if why is not None:
            raise _fail(why, node)


def _depends_on(nodes: list[Node], axis: str) -> set[int]:
    """Ids of nodes that vary over `axis` or read something that does."""
    varying: set[int] = set()
    for node in nodes:  # post-order: inputs first (members of cycles vary over the axis)
        if axis in node.axes or any(i.id in varying for i in node.inputs):
            varying.add(node.id)
    return varying


class _LossRewriter:
    """The loss restricted to one segment: linear in the reductions over t, so the segment
    losses add up to the model's loss and their gradients to its gradient."""

    def __init__(self, axis: str, first: Node, inv_steps: Node, varying: set[int]):
        self.axis = axis
        self.first = first
        self.inv_steps = inv_steps
        self.varying = varying
        self.done: dict[int, Node] = {}

    def __call__(self, node: Node) -> Node:
        if node.id not in self.done:
            self.done[node.id] = self._rewrite(node)
        return self.done[node.id]

    def _rewrite(self, node: Node) -> Node:
        if node.id not in self.varying:
            return apply("mul", self.first, node)  # counted once: in the first segment
        if node.op == "reduce_axis" and node.attrs["axis"] == self.axis:
            _check_per_step(node.inputs[0], self.axis)
            total = apply("reduce_axis", node.inputs[0], axis=self.axis, kind="sum")
            if node.attrs["kind"] == "mean":
                return apply("mul", total, self.inv_steps)
            return total
        if self._per_step_linear(node):
            return apply(node.op, *map(self, node.inputs), **node.attrs)
        if node.op in ("mul", "div"):
            a, b = node.inputs
            if node.op == "mul" and a.id in self.varying and b.id not in self.varying:
                return apply("mul", self(a), b)
            if node.op == "mul" and b.id in self.varying and a.id not in self.varying:
                return apply("mul", a, self(b))
            if node.op == "div" and b.id not in self.varying:
                return apply("div", self(a), b)
        raise _fail(self._why(node), node)

    def _per_step_linear(self, node: Node) -> bool:
        """Linear and not along the cut axis: the op of the segments' parts, summed over the
        segments, is the op of the whole (an op along t would see one segment only)."""
        return OPS[node.op].linear and node.attrs.get("axis") != self.axis

    def _why(self, node: Node) -> str:
        reads = [n for n in reachable([node]) if n.op == "at" and n.attrs["axis"] == self.axis]
        why = _whole_sequence(reads[0] if reads else node, self.axis)
        if why is not None:
            return why
        if node.op in ("mul", "div"):
            return (
                f"the loss {'multiplies' if node.op == 'mul' else 'divides'} by a value "
                f"computed from the whole sequence along '{self.axis}' (e.g. a masked mean, "
                "the ratio of two sums), which does not split into segments"
            )
        return (
            f"the loss applies '{node.op}' to a value computed from the whole sequence; "
            f"checkpointing supports losses that are sums or means over '{self.axis}' of "
            "per-step terms, scaled by and added to values without it"
        )


def _refresh_contexts(nodes: list[Node]) -> None:
    """A carried state is batched even where the delayed value is not: let contexts grow
    along the edges until nothing changes (they only grow, so this ends)."""
    changed = True
    while changed:
        changed = False
        for node in nodes:
            if OPS[node.op].leaf:
                continue
            rule = OPS[node.op]
            contexts = [i.context for i in node.inputs]
            new = rule.context(contexts, **node.attrs) if rule.context else union_context(contexts)
            new = new.union(node.context)
            if new != node.context:
                node.context, changed = new, True


def _carry_delays(loss: Node, axis: str, first: Node) -> tuple[list[Carry], dict[str, Node]]:
    """Give every one-step delay the initial value first * init + (1 - first) * carry; returns
    the carries, and the new input and output nodes by name."""
    by_value: dict[int, tuple[Carry, Node]] = {}
    nodes: dict[str, Node] = {}
    rest = apply("sub", const(1.0), first)
    for node in reachable([loss]):
        if node.op != "delay" or node.attrs["axis"] != axis:
            continue
        value, init = node.inputs
        if value.id not in by_value:
            i = len(by_value)
            carry = Carry(
                f"{PREFIX}carry{i}", f"{PREFIX}seed{i}", f"{PREFIX}state{i}", value.label()
            )
            by_value[value.id] = (carry, input_node(carry.input, value.shape))
            nodes[carry.input] = by_value[value.id][1]
            nodes[carry.seed] = input_node(carry.seed, value.shape)
            nodes[carry.output] = value
        carry_node = by_value[value.id][1]
        node.inputs[1] = apply(
            "add", apply("mul", first, init), apply("mul", rest, carry_node), loc=init.loc
        )
    return [c for c, _ in by_value.values()], nodes


def _seed_term(seed: Node, state: Node) -> Node:
    product = apply("mul", seed, state)
    return apply("sum", product) if product.shape != () else product


def build_segment_graph(graph: Graph) -> SegmentGraph:
    """The segment graph of a model's folded graph (the model's own nodes are not touched)."""
    axis = time_axis(graph)
    taken = {name for name in graph.leaves if name.startswith(PREFIX)}
    if taken:
        raise _fail(f"the names {sorted(taken)} are reserved for checkpointing; rename them")
    g = copy_graph(graph)
    first, inv_steps = input_node(FIRST, ()), input_node(INV_STEPS, ())
    varying = _depends_on(reachable([g.loss]), axis)
    loss = _LossRewriter(axis, first, inv_steps, varying)(g.loss)
    carries, new = _carry_delays(loss, axis, first)
    for c in carries:
        new[c.output] = apply("at", new[c.output], axis=axis, index=-1)
    _refresh_contexts(reachable([loss] + [new[c.output] for c in carries]))
    total = loss
    for c in carries:
        total = apply("add", total, _seed_term(new[c.seed], new[c.output]))
    states = {c.output: new[c.output] for c in carries}
    used = {n.id for n in reachable([total, *states.values()])}
    extra = {FIRST: first, INV_STEPS: inv_steps, **{c.input: new[c.input] for c in carries}}
    inputs = {**graph.inputs, **{k: v for k, v in extra.items() if v.id in used}}
    seeds = {c.seed: new[c.seed] for c in carries}
    name = f"segment({graph.name})"
    segment = replace(g, name=name, inputs={**inputs, **seeds}, outputs=states, loss=total)
    # a forward pass takes no targets: the loss graph reads them as inputs
    loss_inputs = {**inputs, **g.targets}
    loss_outputs = {**states, SEGMENT_LOSS: loss}
    loss_graph = replace(
        g, name=name, inputs=loss_inputs, targets={}, outputs=loss_outputs, loss=None
    )
    return SegmentGraph(segment, loss_graph, axis, carries)
