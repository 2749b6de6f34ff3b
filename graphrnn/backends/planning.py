"""Decisions every compiled backend makes alike about a scheduled graph, made once here:
who reads each value, which nodes fuse into one nest, which products go to a BLAS, which
parameter gradients are one GEMM, and which slices are read in place instead of copied."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from graphrnn.ir.node import STATIC, Node
from graphrnn.ir.registry import OPS
from graphrnn.schedule import Bulk, Loop

# A per-step product with a parameter matrix runs as a BLAS call when batch * rows * cols
# reaches this, else as a generated loop (chosen per call, when the batch size is known): a
# BLAS call costs about a microsecond, more than a small product. Measured on the CPU; the
# GPU backend uses it for cuBLAS too until it is measured there.
BLAS_MIN_STEP = 1 << 16


def nodes_of(item) -> list[Node]:
    return [item.node] if isinstance(item, Bulk) else item.nodes


def runs(items) -> list[list[Node] | Loop]:
    """The schedule as the backends print it: runs of consecutive bulk nodes (as lists) and
    recurrences, in order."""
    out: list[list[Node] | Loop] = []
    for item in items:
        if isinstance(item, Bulk):
            if not out or not isinstance(out[-1], list):
                out.append([])
            out[-1].append(item.node)
        else:
            out.append(item)
    return out


def consumers(items) -> dict[int, list[Node]]:
    """For every node id, the scheduled nodes that read it."""
    users: dict[int, list[Node]] = defaultdict(list)
    for item in items:
        for node in nodes_of(item):
            for i in node.inputs:
                users[i.id].append(node)
    return users


def is_static_matrix(node: Node) -> bool:
    return node.context == STATIC and len(node.shape) == 2


def blas_product(n: Node, axes: tuple[str, ...], fixed) -> bool:
    """Whether a matmul is a BLAS product (GEMM): a parameter matrix times per-example
    vectors of the same context, over all steps at once (outside any recurrence), or over
    the examples of one step inside a recurrence along the graph's only axis."""
    a, v = n.inputs
    if not (is_static_matrix(a) and v.context == n.context and n.batched):
        return False
    if not fixed:
        return True
    return len(axes) == 1 and set(fixed) == set(axes) and set(axes) <= n.axes


def gemm_gradients(items, users, root_ids: set[int]) -> set[int]:
    """Outer products only summed into a parameter's gradient: the sum is lowered as one GEMM
    and the outer product itself is never formed."""
    virtual = set()
    for item in items:
        for n in nodes_of(item):
            if n.op != "reduce_to" or n.inputs[0].op != "outer" or n.context != STATIC:
                continue
            outer = n.inputs[0]
            a, b = outer.inputs
            single_use = [u.id for u in users[outer.id]] == [n.id]
            aligned = a.context == b.context == outer.context and outer.batched
            if single_use and aligned and outer.id not in root_ids:
                virtual.add(outer.id)
    return virtual


def summed_outer(n: Node, virtual: set[int]) -> tuple[Node, Node, int, int] | None:
    """For a reduce_to lowered as one GEMM (see gemm_gradients): the outer product's operands
    a [.., m] and b [.., k], and m, k; else None."""
    (x,) = n.inputs
    if x.id not in virtual:
        return None
    a, b = x.inputs
    m, k = x.shape
    return a, b, m, k


def reads_in_place(op: str) -> bool:
    """Whether the op's kernel reads its operands element by element (so a slice operand
    needs no buffer of its own)."""
    return OPS[op].elementwise or OPS[op].reads_in_place


def slice_views(
    items, users, root_ids: set[int], whole_buffer: Callable[[Node], bool] = lambda n: False
) -> set[int]:
    """Slices read in place, at shifted indices, instead of being copied: those whose every
    user reads element by element; `whole_buffer(user)` names the users a backend hands the
    whole buffer to a library (which would not see the shift)."""
    views = set()
    for item in items:
        for n in nodes_of(item):
            if n.op != "slice" or n.id in root_ids:
                continue
            readers = users[n.id]
            if all(reads_in_place(u.op) and not whole_buffer(u) for u in readers):
                views.add(n.id)
    return views


def delay_views(items, users, root_ids: set[int]) -> set[int]:
    """Delays read in place: a delay whose every reader is elementwise is not copied into a
    buffer of its own each step; its readers read the delayed value where it is stored, or
    the initial value past the boundary (`delayed`)."""
    views = set()
    for item in items:
        for n in nodes_of(item):
            if n.op == "delay" and n.id not in root_ids and users[n.id]:
                if all(OPS[u.op].elementwise for u in users[n.id]):
                    views.add(n.id)
    return views


def delayed(n: Node, step: str) -> tuple[str, str]:
    """For a delay read in place at `step` of its axis: the step it reads (an index
    expression) and the condition that it lies inside the sequence."""
    axis, offset = n.attrs["axis"], n.attrs["offset"]
    src = f"{step} + {offset}" if offset >= 0 else f"{step} - {-offset}"
    return src, f"0 <= {src} < S_{axis}"


def concat_slots(items, users, root_ids: set[int]) -> dict[int, tuple[Node, int]]:
    """Operands written straight into their concat's buffer instead of into their own and
    copied: {operand id: (concat, offset along the last dimension)}. An operand qualifies if
    the concat is its only reader, it varies over what the concat varies over (so the two
    buffers index alike), and it is an elementwise node (printed as a nest that stores each
    element where its index says)."""
    slots: dict[int, tuple[Node, int]] = {}
    for item in items:
        for c in nodes_of(item):
            if c.op != "concat":
                continue
            offset = 0
            for x in c.inputs:
                readers = users[x.id]
                alone = len(readers) == 1 and readers[0] is c and x.id not in root_ids
                if alone and OPS[x.op].elementwise and x.context == c.context:
                    slots[x.id] = (c, offset)
                offset += x.shape[-1]
    return slots


def in_slot(node: Node, elems: list[str], slots) -> tuple[Node, list[str]]:
    """Where an element of `node` lives: in its concat's buffer if it has a slot there (with
    no `elems`, just the buffer's node)."""
    while node.id in slots:
        node, offset = slots[node.id]
        if elems:
            elems = list(elems[:-1]) + [f"{offset} + {elems[-1]}"]
    return node, elems


def kernel_nests(node: Node, slots) -> list:
    """The nests of the node's shared kernel that a backend prints. A concat's kernel has one
    nest per operand, in order; those of operands written into their slot are left out."""
    kernel = OPS[node.op].kernel
    if kernel is None:
        raise NotImplementedError(f"no kernel for op '{node.op}'")
    nests = kernel(node)
    if node.op == "concat":
        nests = [nest for x, nest in zip(node.inputs, nests) if x.id not in slots]
    return nests


def fusion_units(nodes: list[Node], skip: set[int]) -> list[list[Node]]:
    """Consecutive elementwise nodes of one context and shape, grouped to become one fused
    nest (or kernel); every other node is a unit of its own. Leaves and `skip` are dropped."""
    units: list[list[Node]] = []
    for node in nodes:
        if node.op in ("input", "param") or node.id in skip:
            continue
        if units and _fusable(node, units[-1][0]):
            units[-1].append(node)
        else:
            units.append([node])
    return units


def _fusable(node: Node, head: Node) -> bool:
    if not (OPS[node.op].elementwise and OPS[head.op].elementwise):
        return False
    return node.context == head.context and node.shape == head.shape


def needs_buffer(node: Node, group_ids: set[int], users, root_ids: set[int]) -> bool:
    """Whether a node of a fused group must be stored: it is an output or read outside."""
    return node.id in root_ids or any(u.id not in group_ids for u in users[node.id])
