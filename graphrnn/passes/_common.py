"""Helpers shared by the passes: copying a graph, the contexts values really have, redirecting
edges safely, hashable keys of attributes, and small constant tests.

Two contexts matter for a node. Its stored `context` is what the compiled backends allocate
and loop over; its *actual* context is the shape the reference interpreter's array really has
(`Actual`). They can differ where a node was made from a placeholder whose bound value varies
over less than the placeholder declared (autodiff now inserts `broadcast` there), and a
reference recurrence stores every member with its stored context. A reduction (`reduce_to`)
sums over what its operand's array varies over, so the passes keep both:
a value may only be replaced by one with the same shape, stored context and actual context.
The one exception is a zero: a zero may become a STATIC zero constant, since any sum of zeros
is zero, provided no surviving consumer's actual context shrinks because of it (e.g.
`add(x_static, zero_per_step)`, which a later `reduce_to` sums over the steps, keeps its
operand) and no materializing consumer's stored context stops following from its operands
(a batched `delay` of two STATIC zeros). `substitute` checks this edge by edge.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from graphrnn.ir.graph import Graph, reachable
from graphrnn.ir.node import Context, Node
from graphrnn.ir.ops.leaf import const
from graphrnn.ir.registry import OPS, ShapeMismatch, union_context


def is_leaf(node: Node) -> bool:
    """Bound by the backend (or standing for a later value): never rewritten."""
    return OPS[node.op].leaf


def node_count(graph: Graph) -> int:
    return len(graph.nodes())


def copy_graph(graph: Graph) -> Graph:
    """The same graph with fresh non-leaf nodes (cycles included); leaves stay shared.

    Forward nodes of an adjoint graph are shared with the model's own graph; passes work on a
    copy so that rewriting the adjoint never touches the model.
    """
    nodes = reachable(graph.roots())
    clone: dict[int, Node] = {}
    for n in nodes:
        if is_leaf(n):
            clone[n.id] = n
        else:
            clone[n.id] = Node(n.op, [], dict(n.attrs), n.shape, n.context, n.name, n.loc)
    for n in nodes:
        if not is_leaf(n):
            clone[n.id].inputs = [clone[i.id] for i in n.inputs]
    return replace(
        graph,
        inputs=dict(graph.inputs),
        targets=dict(graph.targets),
        params=dict(graph.params),
        outputs={k: clone[v.id] for k, v in graph.outputs.items()},
        loss=clone[graph.loss.id] if graph.loss is not None else None,
    )


def infer(op: str, inputs: list[Node], attrs: dict[str, Any]):
    """(shape, context) the op's rules give for these inputs, or None if they reject them."""
    rule = OPS[op]
    try:
        shape = tuple(rule.shape([i.shape for i in inputs], **attrs))
    except (ShapeMismatch, TypeError, ValueError, IndexError):
        return None
    contexts = [i.context for i in inputs]
    context = rule.context(contexts, **attrs) if rule.context else union_context(contexts)
    return shape, context


def _rule_context(op: str, inputs: list[Node], attrs: dict[str, Any]) -> Context | None:
    """The stored context an op's rules give for these operands (None if they reject them)."""
    found = infer(op, inputs, attrs)
    return found[1] if found is not None else None


def consistent(node: Node) -> bool:
    """Whether the node's stored shape and context are what its inputs give."""
    if is_leaf(node) or not node.inputs:
        return True
    return infer(node.op, node.inputs, node.attrs) == (node.shape, node.context)


def resolve(repl: dict[int, Node], node: Node) -> Node:
    """Follow a chain of replacements to its end."""
    seen = set()
    while node.id in repl and node.id not in seen:
        seen.add(node.id)
        node = repl[node.id]
    return node


def substitute(graph: Graph, repl: dict[int, Node], actual: Actual | None = None) -> int:
    """Redirect edges and outputs to replacements where that keeps every value the same.

    An edge moves when the replacement has the old operand's shape, stored and actual
    context, or when the replacement is a zero constant and the consumer's actual context
    stays the same; an output moves only in the first case. Returns how many moved.
    """
    if not repl:
        return 0
    actual = actual or Actual(graph)
    changed = 0
    for node in reachable(graph.roots()):
        if is_leaf(node):
            continue
        for k, old in enumerate(node.inputs):
            new = resolve(repl, old)
            if new is old:
                continue
            trial = node.inputs[:k] + [new] + node.inputs[k + 1 :]
            if same_value_kind(new, old, actual) or (is_zero(new) and actual.keeps(node, trial)):
                node.inputs = trial
                changed += 1
    for key, old in list(graph.outputs.items()):
        new = resolve(repl, old)
        if new is not old and same_value_kind(new, old, actual):
            graph.outputs[key] = new
            changed += 1
    if graph.loss is not None:
        new = resolve(repl, graph.loss)
        if new is not graph.loss and same_value_kind(new, graph.loss, actual):
            graph.loss = new
            changed += 1
    return changed


def same_value_kind(new: Node, old: Node, actual: Actual) -> bool:
    """Whether `new` can stand for `old` everywhere: same shape, stored and actual context."""
    if new.shape != old.shape or new.context != old.context:
        return False
    a = actual(new)
    return a is not None and a == actual(old)


def users(graph: Graph) -> dict[int, list[Node]]:
    """Consumers of every node (a node using a value twice is listed twice)."""
    result: dict[int, list[Node]] = {}
    for node in reachable(graph.roots()):
        for i in node.inputs:
            result.setdefault(i.id, []).append(node)
    return result


def root_ids(graph: Graph) -> set[int]:
    return {r.id for r in graph.roots()}


def sums(graph: Graph, actual: Actual):
    """Each sum of the graph, users before what they use: (root, terms, private). A sum is a
    tree of adds of the root's shape whose inner adds are `private`: read once (by the sum),
    not an output, with the context their operands give them, and evaluated where the root
    is (both in bulk, or in the same recurrence); `terms` are its leaves."""
    loops = actual.loops
    use = users(graph)
    roots = root_ids(graph)
    seen: set[int] = set()
    for root in reversed(reachable(graph.roots())):
        if root.op != "add" or root.id in seen:
            continue
        place = loops.get(root.id)

        def private(n: Node, place=place) -> bool:
            once = len(use.get(n.id, ())) == 1 and n.id not in roots
            fits = consistent(n) and actual(n) == n.context and loops.get(n.id) == place
            return once and fits

        terms: list[Node] = []
        stack = [root]
        while stack:
            n = stack.pop()
            if n is root or (n.op == "add" and n.shape == root.shape and private(n)):
                seen.add(n.id)
                stack.extend(reversed(n.inputs))
            else:
                terms.append(n)
        yield root, terms, private


def inherit(new: Node, old: Node) -> None:
    """A fresh node standing for a user-named one takes its name and place."""
    if new.name is None and old.name is not None:
        new.name = old.name
        new.loc = old.loc
    elif new.loc is None:
        new.loc = old.loc


# ---- constants ---------------------------------------------------------------------------
def const_value(node: Node) -> float | None:
    return node.attrs["value"] if node.op == "const" else None


def is_zero(node: Node) -> bool:
    return node.op == "const" and node.attrs["value"] == 0.0


def is_one(node: Node) -> bool:
    return node.op == "const" and node.attrs["value"] == 1.0


def zero(shape) -> Node:
    return const(0.0, shape)


# ---- hashable keys -----------------------------------------------------------------------
class Unhashable(Exception):
    """An attribute value that has no faithful hashable form: the node is not merged."""


def freeze(value: Any) -> Any:
    """A hashable, type-tagged form of an attribute value (1 and 1.0 and True stay apart;
    0.0 and -0.0 stay apart; NaN equals NaN)."""
    if value is None or isinstance(value, (bool, int, str)):
        return (type(value).__name__, value)
    if isinstance(value, float):
        return ("float", value.hex() if not math.isnan(value) else "nan")
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return freeze(value.item())
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(freeze(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), freeze(v)) for k, v in value.items())))
    if isinstance(value, (set, frozenset)):
        return ("set", frozenset(freeze(v) for v in value))
    if isinstance(value, Context):
        return ("context", value.axes, value.batched)
    if isinstance(value, np.ndarray):
        return ("ndarray", str(value.dtype), value.shape, value.tobytes())
    try:
        hash(value)
    except TypeError:
        raise Unhashable(type(value).__name__) from None
    return ("object", type(value).__qualname__, value)


def attrs_key(attrs: dict[str, Any]) -> Any:
    return tuple(sorted((k, freeze(v)) for k, v in attrs.items()))


def describe(node: Node) -> str:
    """How reports name a value: the user's name, else op and id."""
    return f"'{node.name}'" if node.name else f"{node.op}%{node.id}"


def summarize(details: list[str], limit: int = 3) -> str:
    """Report details in parentheses, the first few of a long list."""
    if not details:
        return ""
    shown = details[:limit]
    if len(details) > limit:
        shown.append(f"... {len(details) - limit} more")
    return f" ({'; '.join(shown)})"


def matrix_label(a: Node) -> str:
    """A matrix in a report: its name, or the name it transposes with ^T."""
    if a.name:
        return a.name
    if a.op == "transpose" and a.inputs[0].name:
        return a.inputs[0].name + "^T"
    return f"{a.op}%{a.id}"


# ---- schedule ----------------------------------------------------------------------------
def loop_of(graph: Graph) -> dict[int, int | None]:
    """For every node: the index of the recurrence (schedule Loop) it belongs to, or None
    where it is evaluated in bulk (hoisted out of every loop)."""
    from graphrnn.schedule import Loop, schedule

    result: dict[int, int | None] = {}
    for k, item in enumerate(schedule(graph.roots())):
        if isinstance(item, Loop):
            for n in item.nodes:
                result[n.id] = k
        else:
            result[item.node.id] = None
    return result


# ---- actual contexts ---------------------------------------------------------------------
def actual_context(op: str, inputs: list[Context], attrs) -> Context | None:
    """The context of the reference interpreter's array for an op outside any recurrence,
    given its operands' actual contexts; mirrors the ops' `evaluate`. None for an op with a
    context rule of its own that is not known here."""
    if op in ("reduce_axis", "edge_sum", "at"):
        # an operand the same at every step is scaled (sum) or kept (mean, at), not broadcast
        return Context(inputs[0].axes - {attrs["axis"]}, inputs[0].batched)
    if op in ("batch_mean", "batch_mean_per_channel"):
        return Context(inputs[0].axes, False)
    if op == "reduce_to":
        target = attrs["context"]
        return Context(inputs[0].axes & target.axes, inputs[0].batched and target.batched)
    if op == "patches":  # grid ops (ir/ops/grid.py) add or remove their two axes
        return Context(inputs[0].axes | set(attrs["axes"]), inputs[0].batched)
    if op == "grid":
        return Context(inputs[0].axes - set(attrs["axes"]), inputs[0].batched)
    if OPS[op].context is not None:
        return None
    return union_context(inputs)  # NumPy broadcasting of the operands' leading axes


class Actual:
    """Actual contexts of a graph's nodes (see the module docstring), computed once; a node
    made later gets its context from its operands, or None (unknown) where that differs from
    its stored context, since it might end up inside a recurrence."""

    def __init__(self, graph: Graph):
        self.loops = loop_of(graph)
        self.table: dict[int, Context] = {}
        for node in reachable(graph.roots()):
            self.table[node.id] = self._of(node, self.loops.get(node.id) is not None)

    def _of(self, node: Node, in_loop: bool) -> Context | None:
        if in_loop or is_leaf(node) or not node.inputs or OPS[node.op].materialises:
            return node.context
        acts = [self.table.get(i.id) for i in node.inputs]
        if any(a is None for a in acts):
            return None
        return actual_context(node.op, acts, node.attrs)

    def __call__(self, node: Node) -> Context | None:
        if node.id in self.table:
            return self.table[node.id]
        # A node made after the table: compute it and what it needs, in post-order without
        # recursion. An operand still missing when its user is done lies on a cycle through
        # new nodes: unknown.
        stack, seen = [(node, False)], {node.id}
        while stack:
            n, done = stack.pop()
            if done:
                a = self._of(n, False) if all(i.id in self.table for i in n.inputs) else None
                self.table[n.id] = a if a == n.context else None
                continue
            stack.append((n, True))
            for i in n.inputs:
                if i.id not in self.table and i.id not in seen:
                    seen.add(i.id)
                    stack.append((i, False))
        return self.table[node.id]

    def keeps(self, node: Node, inputs: list[Node]) -> bool:
        """Whether `node` read `inputs` keeps its actual context. A materializing op's array
        has its stored context, which must still be what its context rule gives (a delay of
        two STATIC zeros is unbatched, so a batched one keeps its operands); any other op
        must give the same context from its operands alone (so that it would, even if the
        new operands took it out of a recurrence)."""
        if OPS[node.op].materialises:
            return _rule_context(node.op, inputs, node.attrs) == _rule_context(
                node.op, node.inputs, node.attrs
            )
        return self.rule(node.op, inputs, node.attrs) == self(node)

    def rule(self, op: str, inputs: list[Node], attrs) -> Context | None:
        """The actual context an op would have with these operands (outside recurrences)."""
        if OPS[op].materialises:
            return None
        acts = [self(i) for i in inputs]
        if any(a is None for a in acts):
            return None
        return actual_context(op, acts, attrs)
