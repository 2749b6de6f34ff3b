"""Pictures of graphs: the folded graph as the user wrote it, and its unrolled DAG.

The IR is built for compilers: one equation `a(t) = U @ x(t) + W @ h(t-1) + b` lowers to a
handful of matmul/add nodes and a delay, only the last of which carries the name `a`. Drawing
all of that hides the model, so the default picture ("equations" detail) shows one node per
*named* value (equations, inputs, targets, parameters, initial values, the loss) and collapses
the anonymous nodes in between into edges. A read through a delay is the one thing that makes
the graph recurrent, so it is drawn as its own kind of edge, labelled with the lag the user
wrote (`t-1`). The "ops" detail draws every node, for debugging the compiler.

Unrolled graphs (`Model.unroll`) name their per-step copies `h@3` or `h@(2,3)`; each step's
copies are grouped in a cluster and the shared, static nodes (parameters, the loss) are drawn
once outside, which is exactly the weight sharing the picture should show. Over one axis the
clusters are columns in step order, with the initial values in columns of their own (t = 0,
and t = T+1 for a backward recurrence, whose `h(0)` is shown as `h(T+1)`), every equation's
copies in one row and each recurrence (layer, direction) in a band of rows of its own
(graphrnn/viz_grid.py, graphrnn/viz_pin.py).

DOT text needs only the `graphviz` Python package; images (.svg/.png/.pdf) need the Graphviz
`dot` program, and its absence is reported as an error the user can act on.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import graphviz

from graphrnn.errors import GraphRNNError
from graphrnn.ir.graph import Graph
from graphrnn.ir.node import Node
from graphrnn.viz_grid import Grid, grid
from graphrnn.viz_pin import pinned

DETAILS = ("equations", "ops")
IMAGE_FORMATS = ("svg", "png", "pdf")
# Graphviz's JSON of the laid-out picture: every node's position, for tools and tests.
LAYOUT_FORMATS = (*IMAGE_FORMATS, "json")
DOT_FORMATS = ("dot", "gv")

# (axis, offset) pairs, sorted by axis: how far along each axis a read reaches back or ahead.
Lag = tuple[tuple[str, int], ...]
# (axis, index) pairs, sorted by axis: one step of an unrolled graph.
Step = tuple[tuple[str, int], ...]

_STEP_NAME = re.compile(r"^(?P<base>.+)@(?:(?P<one>\d+)|\((?P<many>\d+(?:,\d+)*)\))$")
_UNKNOWN_AXIS = ""
_COLUMNS = "subgraph cluster_"

_NODE_STYLE = {
    "equation": {"shape": "box", "style": "rounded"},
    "input": {"shape": "ellipse"},
    "target": {"shape": "ellipse", "style": "filled", "fillcolor": "lightyellow"},
    "param": {
        "shape": "box",
        "style": "filled",
        "fillcolor": "gray92",
        "fontsize": "10",
        "height": "0.3",
    },
    "initial": {"shape": "box", "style": "dashed,rounded", "fontsize": "10", "height": "0.3"},
    "const": {"shape": "plaintext", "fontsize": "9"},
    "loss": {"shape": "box", "style": "rounded,bold", "peripheries": "2"},
    "op": {"shape": "box", "fontsize": "9", "height": "0.25", "color": "gray50"},
}
_DELAY_EDGE = {"style": "dashed", "color": "red", "fontcolor": "red", "constraint": "false"}
# A delay edge beside a same-step edge between the same two nodes leaves and enters on the
# right, so that the two never share a path.
_BESIDE_PORTS = {"tailport": "e", "headport": "e"}
# An edge from one step into another of an unrolled graph: what a delay edge has become.
_STEP_EDGE = {"color": "red3", "constraint": "false"}
_INITIAL_EDGE = {"style": "dotted", "color": "gray40", "fontcolor": "gray40", "label": "init"}
_PARAM_EDGE = {"color": "gray60"}


@dataclass(frozen=True)
class Edge:
    """`target` reads `source`, through `lag` delays, or as a delay's initial value."""

    source: Node
    target: Node
    lag: Lag = ()
    initial: bool = False


# ---- public API ------------------------------------------------------------------------


def to_dot(
    graph: Graph,
    *,
    title: str | None = None,
    detail: str = "equations",
    folded: Graph | None = None,
) -> str:
    """DOT text for `graph`, folded or unrolled.

    detail="equations" draws the named values and collapses anonymous intermediate nodes;
    detail="ops" draws every node. `folded` is the graph `graph` was unrolled from: with
    several axes it tells which axis a per-step name like `e@2` indexes (the name alone does
    not say when `e` varies over only some of the axes).
    """
    _check_detail(detail)
    names = _display_names(graph)
    collect = _equation_view if detail == "equations" else _op_view
    nodes, edges = collect(graph, names)
    steps = _assign_steps(graph, nodes, edges, names, folded)
    sides = _initial_sides(graph, folded, nodes, edges, steps, names)
    names.update(_initial_names(names, sides))
    columns = _one_axis(steps)
    boundary = _boundary_steps(sides, steps) if columns else {}
    steps.update(boundary)
    dot = _build(graph, nodes, edges, steps, names, detail, title, set(boundary.values()))
    if columns:
        _add_grid(dot, nodes, edges, steps, names, set(sides))
    return dot.source


def render(
    model_or_graph,
    unroll: int | dict[str, int] | None = None,
    path: str | os.PathLike | None = None,
    detail: str = "equations",
    fmt: str | None = None,
) -> str | bytes:
    """Draw a Model or Graph, folded or unrolled over `unroll` steps; return the DOT text.

    The format comes from `fmt` or else from the suffix of `path` (.dot/.gv, .svg, .png,
    .pdf, or .json: Graphviz's JSON of the laid-out picture). DOT output never needs the
    Graphviz binaries; the others do, and without them this raises GraphRNNError saying how
    to install them. With `path=None` and an image `fmt`, the image bytes are returned
    instead of written (handy in notebooks).
    """
    graph, folded, title = _select(model_or_graph, unroll)
    text = to_dot(graph, title=title, detail=detail, folded=folded)
    form = _output_format(path, fmt)
    if form in DOT_FORMATS:
        if path is not None:
            _write_atomic(Path(path), text.encode("utf-8"))
        return text
    image = _layout(text, form, path)
    if path is None:
        return image
    _write_atomic(Path(path), image)
    return text


# ---- what to draw ------------------------------------------------------------------------


def _check_detail(detail: str) -> None:
    if detail not in DETAILS:
        raise GraphRNNError(f"unknown detail {detail!r}; choose one of {', '.join(DETAILS)}")


def _display_names(graph: Graph) -> dict[int, str]:
    """The name each node is shown by: its own, else the output it is, else 'loss'.

    Only nodes with a display name survive the "equations" view; the loss is usually an
    anonymous reduction, so it gets its name from its role.
    """
    names = {n.id: n.name for n in graph.nodes() if n.name}
    names.update({n.id: n.name for n in graph.params.values() if n.name})
    for key, node in graph.outputs.items():
        names.setdefault(node.id, key)
    if graph.loss is not None:
        names.setdefault(graph.loss.id, "loss")
    return names


def _equation_view(graph: Graph, names: dict[int, str]) -> tuple[list[Node], list[Edge]]:
    """The named nodes reachable from the outputs and loss, and who reads whom among them."""

    def shown(node: Node) -> bool:
        return node.id in names or node.op in ("param", "input")

    drawn: dict[int, Node] = {}
    edges: list[Edge] = []
    queue = deque([*graph.roots(), *graph.params.values()])
    while queue:
        node = queue.popleft()
        if node.id in drawn:
            continue
        drawn[node.id] = node
        if _is_step_input(node):
            continue  # `x@3` stands for the sequence `x` at step 3; don't draw `x` too
        for edge in _reads(node, shown):
            edges.append(edge)
            queue.append(edge.source)
    return _in_graph_order(graph, drawn.values()), edges


def _op_view(graph: Graph, names: dict[int, str]) -> tuple[list[Node], list[Edge]]:
    """Every node, and an edge per input (delay inputs styled as in the equations view)."""
    nodes = _in_graph_order(graph, {n.id: n for n in [*graph.nodes(), *graph.params.values()]})
    edges = [
        Edge(source, node, *_through(node, k, (), False))
        for node in nodes
        for k, source in enumerate(node.inputs)
    ]
    return nodes, edges


def _reads(node: Node, shown: Callable[[Node], bool]) -> list[Edge]:
    """The shown nodes that `node`'s expression reads, looking through anonymous nodes.

    Each read remembers the delays it passed (as a lag) and whether it entered a delay's
    initial-value input; anonymous constants (`+ 0.0`, sizes) are dropped as noise.
    """
    edges: dict[tuple[int, Lag, bool], Edge] = {}
    seen: set[tuple[int, Lag, bool]] = set()
    stack = [(i, *_through(node, k, (), False)) for k, i in enumerate(node.inputs)]
    stack.reverse()
    while stack:
        current, lag, initial = stack.pop()
        key = (current.id, lag, initial)
        if key in seen:
            continue
        seen.add(key)
        if shown(current):
            edges.setdefault(key, Edge(current, node, lag, initial))
            continue
        inner = [(i, *_through(current, k, lag, initial)) for k, i in enumerate(current.inputs)]
        stack.extend(reversed(inner))
    return list(edges.values())


def _through(node: Node, k: int, lag: Lag, initial: bool) -> tuple[Lag, bool]:
    """The lag and initial flag of a read that goes from `node` into its k-th input."""
    if node.op != "delay":
        return lag, initial
    if k == 1:
        return lag, True
    return _shift(lag, node.attrs["axis"], node.attrs["offset"]), initial


def _shift(lag: Lag, axis: str, offset: int) -> Lag:
    total = dict(lag)
    total[axis] = total.get(axis, 0) + offset
    return tuple(sorted((a, k) for a, k in total.items() if k != 0))


def _is_step_input(node: Node) -> bool:
    """A per-step slice `x@3` of an input sequence: `at` nodes all the way down to an input."""
    if not (node.name and "@" in node.name and node.op == "at"):
        return False
    while node.op == "at":
        node = node.inputs[0]
    return node.op == "input"


def _in_graph_order(graph: Graph, nodes: Iterable[Node] | dict[int, Node]) -> list[Node]:
    """Nodes sorted inputs-first, so the DOT text reads in the order values are computed."""
    values = list(nodes.values()) if isinstance(nodes, dict) else list(nodes)
    order = {n.id: k for k, n in enumerate(graph.nodes())}
    return sorted(values, key=lambda n: (order.get(n.id, -1), n.id))


# ---- steps of unrolled graphs ------------------------------------------------------------


def _assign_steps(
    graph: Graph,
    nodes: list[Node],
    edges: list[Edge],
    names: dict[int, str],
    folded: Graph | None,
) -> dict[int, Step]:
    """The step cluster of each per-step node; nodes left out are static, drawn once.

    Named copies carry their step in their name. Anonymous copies (only drawn in the "ops"
    view) go with the named copy that consumes them, or else with the step their inputs share.
    """
    steps = _named_steps(graph, nodes, _axes_by_name(graph, folded))
    loss_id = graph.loss.id if graph.loss is not None else None
    anonymous = [n for n in nodes if n.id not in names and n.inputs and n.id != loss_id]
    _steps_from_consumers(anonymous, edges, steps)
    _steps_from_inputs(anonymous, steps)
    return steps


def _named_steps(graph: Graph, nodes: list[Node], axes: dict) -> dict[int, Step]:
    """Steps parsed from names like `h@3`, inputs first so that reads can settle axes."""
    steps: dict[int, Step] = {}
    for node in nodes:
        parsed = _parse_step(node.name) if node.name else None
        if parsed is None:
            continue
        base, indices = parsed
        known = axes.get(base)
        if known is None or len(known) != len(indices):
            known = _axes_from_reads(node, indices, steps, graph.axes)
        steps[node.id] = tuple(zip(known, indices))
    return steps


def _axes_from_reads(node: Node, indices: tuple[int, ...], steps: dict, graph_axes) -> tuple:
    """Which axes `h@3` indexes when its name alone cannot say (several axes, no folded graph).

    All axes if the count matches; else the axes on which every per-step value it reads sits
    at exactly these indices (`e@2` reading `q@2` at j = 2 is over j).
    """
    if len(indices) == len(graph_axes):
        return tuple(sorted(graph_axes))
    stepped = [steps[e.source.id] for e in _reads(node, lambda n: n.id in steps)]
    choices: set[tuple[str, ...]] | None = None
    for step in stepped:
        at = dict(step)
        fits = {
            axes
            for axes in itertools.combinations(sorted(at), len(indices))
            if tuple(at[a] for a in axes) == indices
        }
        choices = fits if choices is None else choices & fits
    if choices is not None and len(choices) == 1:
        return choices.pop()
    return (_UNKNOWN_AXIS,) * len(indices)


def _steps_from_consumers(anonymous: list[Node], edges: list[Edge], steps: dict) -> None:
    consumers: dict[int, list[Node]] = defaultdict(list)
    for edge in edges:
        consumers[edge.source.id].append(edge.target)
    for node in reversed(anonymous):
        found = {steps.get(c.id) for c in consumers[node.id]}
        if len(found) == 1 and None not in found:
            steps[node.id] = found.pop()


def _steps_from_inputs(anonymous: list[Node], steps: dict) -> None:
    for node in anonymous:
        if node.id in steps:
            continue
        found = {steps[i.id] for i in node.inputs if i.id in steps}
        if len(found) == 1:
            steps[node.id] = found.pop()


def _axes_by_name(graph: Graph, folded: Graph | None) -> dict[str, tuple[str, ...]]:
    """The axes each base name varies over, as far as the graphs can tell."""
    known = {name: tuple(sorted(n.axes)) for name, n in {**graph.inputs, **graph.targets}.items()}
    if folded is not None:
        for node in folded.nodes():
            if node.name:
                known.setdefault(node.name, tuple(sorted(node.axes)))
        for name, node in folded.outputs.items():
            known.setdefault(name, tuple(sorted(node.axes)))
    return known


def _parse_step(name: str) -> tuple[str, tuple[int, ...]] | None:
    """`h@3` -> ("h", (3,)), `h@(2,3)` -> ("h", (2, 3)); indices follow sorted axis names."""
    match = _STEP_NAME.match(name)
    if match is None:
        return None
    return match["base"], tuple(int(k) for k in (match["one"] or match["many"]).split(","))


def _cluster_name(step: Step) -> str:
    return "cluster_" + "_".join(f"{axis or 'step'}{k}" for axis, k in step)


def _step_text(step: Step) -> str:
    return ", ".join(f"{axis} = {k}" if axis else f"step {k}" for axis, k in step)


# ---- initial values ----------------------------------------------------------------------

# The axis a delay reads an initial value for, and whether it reads ahead (offset > 0).
Side = tuple[str, bool]


def _initial_sides(
    graph: Graph,
    folded: Graph | None,
    nodes: list[Node],
    edges: list[Edge],
    steps: dict[int, Step],
    names: dict[int, str],
) -> dict[int, Side]:
    """For each drawn initial value: the axis it starts and whether a backward recurrence
    reads it, so that it stands at T+1, past the last step, rather than at 0.

    The delays that read it say so (in `graph` if folded, else in `folded`); an unrolled graph
    without its folded graph has no delays left, and there the steps of its readers tell.
    """
    found: dict[int, set[Side]] = defaultdict(set)
    for source in (graph, folded) if folded is not None else (graph,):
        for node in source.nodes():
            if node.op == "delay":
                found[node.inputs[1].id].add((node.attrs["axis"], node.attrs["offset"] > 0))
    sides = {n.id: next(iter(found[n.id])) for n in nodes if len(found.get(n.id, ())) == 1}
    if steps:
        for node in nodes:
            if node.id not in sides and names.get(node.id, "").endswith("(0)"):
                side = _side_from_readers(node, edges, steps)
                if side is not None:
                    sides[node.id] = side
    return sides


def _side_from_readers(node: Node, edges: list[Edge], steps: dict[int, Step]) -> Side | None:
    """Not ahead if every reader is at the first step of one axis, ahead if every reader is
    at its last (of several); else unknown."""
    read_at = {steps.get(e.target.id) for e in edges if e.source is node}
    if len(read_at) != 1 or None in read_at:
        return None
    step = read_at.pop()
    if len(step) != 1:
        return None
    ((axis, k),) = step
    last = max(s[0][1] for s in steps.values() if len(s) == 1 and s[0][0] == axis)
    if k == 1:
        return axis, False
    return (axis, True) if k == last else None


def _initial_names(names: dict[int, str], sides: dict[int, Side]) -> dict[int, str]:
    """`h(0)` read by a backward recurrence over t is shown as `h(T+1)`."""
    return {
        i: f"{names[i][:-3]}({axis.upper()}+1)"
        for i, (axis, ahead) in sides.items()
        if ahead and names.get(i, "").endswith("(0)")
    }


# ---- the unrolled grid -------------------------------------------------------------------


def _one_axis(steps: dict[int, Step]) -> bool:
    """Whether every step is a step of one and the same axis (a grid of steps is not laid
    out as columns)."""
    axes = {step[0][0] if len(step) == 1 else None for step in steps.values()}
    return len(axes) == 1 and None not in axes and _UNKNOWN_AXIS not in axes


def _boundary_steps(sides: dict[int, Side], steps: dict[int, Step]) -> dict[int, Step]:
    """Initial values go in columns of their own: step 0, or T+1 for a backward recurrence."""
    last = max(step[0][1] for step in steps.values())
    return {i: ((axis, last + 1 if ahead else 0),) for i, (axis, ahead) in sides.items()}


def _add_grid(
    dot: graphviz.Digraph,
    nodes: list[Node],
    edges: list[Edge],
    steps: dict[int, Step],
    names: dict[int, str],
    initial: set[int],
) -> None:
    """The invisible constraints of graphrnn/viz_grid.py: rows, and bands of recurrences."""
    column = {i: step[0][1] for i, step in steps.items()}
    base = {i: _base_name(names[i]) for i in column if i in names}
    links = [(e.source, e.target) for e in edges]
    _emit_grid(dot, grid(nodes, links, column, base, initial))


def _base_name(name: str) -> str:
    parsed = _parse_step(name)
    return parsed[0] if parsed is not None else name


def _emit_grid(dot: graphviz.Digraph, layout: Grid) -> None:
    for row in layout.same_rank:
        with dot.subgraph() as rank:
            rank.attr(rank="same")
            for node in row:
                rank.node(_node_id(node))
    for u, v in layout.stack:
        dot.edge(_node_id(u), _node_id(v), style="invis")


# ---- DOT ---------------------------------------------------------------------------------


def _build(
    graph: Graph,
    nodes: list[Node],
    edges: list[Edge],
    steps: dict[int, Step],
    names: dict[int, str],
    detail: str,
    title: str | None,
    boundary: set[Step],
) -> graphviz.Digraph:
    """The Digraph: static nodes at top level, per-step nodes in one cluster per step (the
    `boundary` steps, 0 and T+1, hold initial values and are framed dashed)."""
    dot = graphviz.Digraph(
        _dot_id(graph.name),
        graph_attr=_graph_attrs(graph, title, bool(steps)),
        node_attr={"fontname": "Helvetica"},
        edge_attr={"fontname": "Helvetica", "fontsize": "10"},
    )
    kinds = {n.id: _kind(n, graph, names) for n in nodes}
    clusters: dict[Step, list[Node]] = defaultdict(list)
    for node in nodes:
        if node.id in steps:
            clusters[steps[node.id]].append(node)
        else:
            _add_node(dot, node, kinds[node.id], names, graph.axes, detail)
    for step in sorted(clusters):
        with dot.subgraph(name=_cluster_name(step)) as sub:
            style = "rounded,dashed" if step in boundary else "rounded"
            sub.attr(label=_step_text(step), style=style, color="gray60")
            for node in clusters[step]:
                _add_node(sub, node, kinds[node.id], names, graph.axes, detail)
    plain = {(e.source.id, e.target.id) for e in edges if not e.lag and not e.initial}
    for edge, lags in _grouped(edges):
        across = _crosses_steps(edge, steps)
        pair = (edge.source.id, edge.target.id)
        beside = edge.source is not edge.target and (pair in plain or pair[::-1] in plain)
        _add_edge(dot, edge, lags, kinds[edge.source.id], across, beside)
    return dot


def _grouped(edges: list[Edge]) -> list[tuple[Edge, list[Lag]]]:
    """One edge per pair of nodes and kind of read: several delays of one value (`h(t-1)`
    and `h(t-2)`) become one edge labelled `t-1, t-2`, not two edges drawn on each other."""
    groups: dict[tuple[int, int, bool, bool], list[Edge]] = defaultdict(list)
    for edge in edges:
        groups[(edge.source.id, edge.target.id, edge.initial, bool(edge.lag))].append(edge)
    return [(group[0], [e.lag for e in group]) for group in groups.values()]


def _crosses_steps(edge: Edge, steps: dict[int, Step]) -> bool:
    """An edge from one step's cluster into another's: the unrolled recurrence.

    Such edges do not constrain the layout, so each step stacks up as its own column and the
    columns stand side by side, as unrolled RNNs are usually drawn (were they to constrain it,
    every step would sit lower than the last, a staircase as wide as it is tall).
    """
    source, target = steps.get(edge.source.id), steps.get(edge.target.id)
    return source is not None and target is not None and source != target


def _graph_attrs(graph: Graph, title: str | None, unrolled: bool) -> dict[str, str]:
    attrs = {"label": title if title is not None else graph.name, "labelloc": "t"}
    if unrolled:
        # rank=same across the step clusters (graphrnn/viz_grid.py) needs the newer ranking;
        # few crossing-minimisation passes mostly keep the columns in the declared order,
        # which spares graphrnn/viz_pin.py a second layout
        attrs.update(newrank="true", mclimit="0.01")
    return attrs


def _dot_id(name: str) -> str:
    return re.sub(r"\W+", "_", name).strip("_") or "graph"


def _node_id(node: Node) -> str:
    return f"n{node.id}"


def _kind(node: Node, graph: Graph, names: dict[int, str]) -> str:
    """What a node is to the user, which decides how it is drawn."""
    if graph.loss is not None and node is graph.loss:
        return "loss"
    if node.op == "param":
        return "param"
    if node.op == "input":
        return "target" if node.attrs.get("role") == "target" else "input"
    if _is_step_input(node):
        while node.op == "at":
            node = node.inputs[0]
        return "target" if node.attrs.get("role") == "target" else "input"
    if node.op == "const":
        return "initial" if node.id in names else "const"
    return "equation" if node.id in names else "op"


def _add_node(dot, node: Node, kind: str, names: dict[int, str], axes, detail: str) -> None:
    label = _label(node, names.get(node.id), axes, detail)
    dot.node(_node_id(node), label, **_NODE_STYLE[kind])


def _label(node: Node, name: str | None, graph_axes, detail: str) -> str:
    """`h(t) [16]`: the name, the axes it varies over, its per-example shape.

    In the "ops" view the op is shown too, under the name of named nodes.
    """
    head = name if name is not None else _op_text(node)
    ordered = [a for a in graph_axes if a in node.axes] + sorted(node.axes - set(graph_axes))
    if ordered:
        head += ("(" if name is not None else " (") + ", ".join(ordered) + ")"
    if node.shape:
        head += " [" + ", ".join(str(d) for d in node.shape) + "]"
    if detail == "ops" and name is not None and node.op not in ("param", "input"):
        head += "\\n" + _op_text(node)
    return head


def _op_text(node: Node) -> str:
    attrs = node.attrs
    if node.op == "const":
        return f"const {attrs.get('value')}"
    if node.op == "at":
        return f"at {attrs.get('axis')}={attrs.get('index')}"
    if node.op == "reduce_axis":
        return f"{attrs.get('kind')} over {attrs.get('axis')}"
    return node.op


def _add_edge(
    dot: graphviz.Digraph,
    edge: Edge,
    lags: list[Lag],
    source_kind: str,
    across: bool,
    beside: bool,
) -> None:
    """A read, styled by what it is; `beside`: a same-step edge joins the same two nodes."""
    attrs: dict[str, str] = dict(_STEP_EDGE) if across else {}
    if source_kind == "param":
        attrs.update(_PARAM_EDGE)
    if edge.initial:
        attrs.update(_INITIAL_EDGE)
    elif edge.lag:
        attrs.update(_DELAY_EDGE, label=_lags_text(lags))
        if beside:
            attrs.update(_BESIDE_PORTS)
    dot.edge(_node_id(edge.source), _node_id(edge.target), **attrs)


def _lags_text(lags: list[Lag]) -> str:
    """Lags as the user writes them: `t-1`, `t+1`, `t-1, t-2`, `i-1, j+2`; with several lags
    of several axes each, `(i-1, j), (i, j-1)`."""
    ordered = sorted(lags, key=lambda lag: [(a, abs(k), k) for a, k in lag])
    if len(ordered) > 1 and any(len(lag) > 1 for lag in ordered):
        return ", ".join(f"({_lag_text(lag)})" for lag in ordered)
    return ", ".join(_lag_text(lag) for lag in ordered)


def _lag_text(lag: Lag) -> str:
    return ", ".join(f"{axis}{offset:+d}" for axis, offset in lag)


# ---- output ------------------------------------------------------------------------------


def _select(model_or_graph, unroll) -> tuple[Graph, Graph, str]:
    """The graph to draw, the folded graph it comes from, and a title."""
    from graphrnn.model import Model

    if isinstance(model_or_graph, Model):
        folded = model_or_graph.graph
    elif isinstance(model_or_graph, Graph):
        folded = model_or_graph
    else:
        raise TypeError(f"render expects a graphrnn Model or Graph, not {type(model_or_graph)}")
    if unroll is None:
        return folded, folded, folded.name
    sizes = _sizes(folded, unroll)
    if isinstance(model_or_graph, Model):
        graph = model_or_graph.unroll(sizes)
    else:
        from graphrnn.unroll import unroll as unroll_graph

        graph = unroll_graph(folded, sizes)
    spans = ", ".join(f"{axis} = 1..{n}" for axis, n in sizes.items())
    return graph, folded, f"{folded.name} unrolled for {spans}" if spans else folded.name


def _sizes(graph: Graph, unroll: int | dict[str, int]) -> dict[str, int]:
    sizes = dict(unroll) if isinstance(unroll, dict) else {a: unroll for a in graph.axes}
    bad = {a: n for a, n in sizes.items() if isinstance(n, bool) or not isinstance(n, int) or n < 1}
    if bad:
        raise GraphRNNError(f"unroll lengths must be positive integers, got {bad}")
    return sizes


def _output_format(path, fmt: str | None) -> str:
    """The format asked for: `fmt`, else the file suffix, else DOT text."""
    if fmt is not None:
        form = fmt.lower().lstrip(".")
    elif path is not None:
        form = Path(path).suffix.lower().lstrip(".")
    else:
        form = "dot"
    if form not in DOT_FORMATS + LAYOUT_FORMATS:
        where = f"'{path}'" if path is not None else f"format {fmt!r}"
        raise GraphRNNError(
            f"cannot draw to {where}: use a .dot, .gv, .svg, .png, .pdf or .json file name"
        )
    return form


def _missing_binaries(target: str) -> GraphRNNError:
    return GraphRNNError(
        f"writing {target} needs the Graphviz binaries (the `dot` program), which are not "
        "installed or not on PATH. Install them with `apt-get install graphviz` "
        "(Debian/Ubuntu) or `brew install graphviz` (macOS), or write DOT text instead, "
        "which needs no binaries: `-o file.dot` (path='file.dot' in Python)."
    )


def _layout(text: str, form: str, path) -> bytes:
    """Lay the DOT text out with Graphviz's `dot` into image bytes, in memory; step columns
    that `dot` puts out of order are put in order (graphrnn/viz_pin.py).

    Piping (rather than graphviz's `render`) leaves no stray source file beside the output.
    """
    target = f"'{path}'" if path is not None else f"a .{form} image"
    if shutil.which("dot") is None:
        raise _missing_binaries(target)
    try:
        fixed = _columns_in_order(text)
        if fixed is None:
            return graphviz.Source(text).pipe(format=form)
        return graphviz.Source(fixed, engine="neato").pipe(format=form, neato_no_op=2)
    except graphviz.ExecutableNotFound:
        raise _missing_binaries(target) from None


def _columns_in_order(text: str) -> str | None:
    """The pinned DOT text where `dot` draws step columns out of order, else None."""
    if _COLUMNS not in text:
        return None
    return pinned(text, graphviz.Source(text).pipe(format="json"))


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, so a reader never sees half a file."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise GraphRNNError(f"cannot write '{path}': {error.strerror or error}") from None
