"""Lowering of a scheduled graph to explicit loop nests in Python source, for Numba.

Every value lives in a preallocated buffer in the aligned layout (ir/node.py); a node becomes a
loop nest over its dimensions, reading its operands with index 0 wherever they do not vary
(broadcasting resolved at compile time). Elementwise nodes of equal extent that follow each
other are fused into one nest, keeping intermediates in scalars. Large products whose matrix is
a parameter become one BLAS call; a parameter gradient sum_t,b outer(a, b) becomes one GEMM.
Recurrences become `for t in range(...)` loops with the step index fixed to t.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from graphrnn.ir.node import STATIC, Node
from graphrnn.ir.registry import OPS
from graphrnn.schedule import Bulk, Loop

BLAS_MIN_STEP = 1 << 16  # batch * rows * cols above which a per-step product uses BLAS
_VIEW_USERS = {
    "slice",
    "concat",
    "softmax",
    "log_softmax",
    "softmax_cross_entropy",
    "mse",
    "sum",
    "mean",
    "expand",
    "broadcast",
    "expand_axis",
    "reduce_axis",
    "delay",
}
_FLOAT = re.compile(r"(?<![\w.])(?:\d+\.\d*(?:e[-+]?\d+)?|\d+e[-+]?\d+)(?![\w.])")
_LOCALS = re.compile(r"\b(acc|mx|se|lse|src|d)\b")


@dataclass
class Program:
    """A lowered graph: the leaves' buffer names in argument order, the lines that read the
    axis lengths and batch size, the body with its cut points (see stages.py), the buffers
    returned, and the typed constants the body names (name -> literal)."""

    args: list[str]
    sizes: list[str]
    body: list[str]
    cuts: list[int]
    results: list[str]
    constants: dict[str, str]


class LoopGen:
    def __init__(
        self, axes: tuple[str, ...], dtype: str, roots: list[Node], items, leaves, axis_sizes=None
    ):
        self.axes = axes
        self.axis_sizes = dict(axis_sizes or {})
        self.dtype = dtype
        self.roots = roots
        self.items = items
        self.leaves = leaves
        self.lines: list[str] = []
        self.cuts: list[int] = []
        self.constants: dict[str, str] = {}
        self.transposed: dict[int, str] = {}
        self.depth = 1
        self.fixed: dict[str, str] = {}
        self.users = consumers(items)
        self.allocated: set[int] = set()
        self.temps: dict[int, str] = {}
        self.shared = None
        self.root_ids = {r.id for r in roots}
        self.number: dict[int, int] = {}
        for node in list(leaves) + [n for item in items for n in _nodes(item)]:
            self.number.setdefault(node.id, len(self.number))
        self.virtual = gemm_gradients(items, self.users, self.root_ids)
        self.views = slice_views(items, self.users, self.root_ids, _VIEW_USERS)

    # ---- emission helpers ------------------------------------------------------------
    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def open(self, header: str) -> None:
        self.emit(header)
        self.depth += 1

    def close(self, levels: int = 1) -> None:
        self.depth -= levels

    def buf(self, node: Node) -> str:
        """Names follow the schedule, not node ids, so equal graphs give equal source."""
        return f"v{self.number[node.id]}"

    def alloc_shape(self, node: Node) -> str:
        dims = [f"S_{a}" if a in node.axes else "1" for a in self.axes]
        dims.append("B" if node.batched else "1")
        dims.extend(str(d) for d in node.shape)
        return "(" + ", ".join(dims) + ",)"

    def alloc(self, node: Node, zero: bool = False) -> None:
        if node.id in self.allocated:
            if zero:
                self.emit(f"{self.buf(node)}[...] = 0.0")
            return
        self.allocated.add(node.id)
        fn = "np.zeros" if zero else "np.empty"
        self.emit(f"{self.buf(node)} = {fn}({self.alloc_shape(node)}, dtype=DT)")

    def typed(self, formula: str) -> str:
        """In float32 kernels, name the formula's float literals as float32 constants: Numba
        types a bare literal as float64, which would turn the whole expression into float64
        arithmetic (half the vector width) and convert back on every store."""
        if self.dtype != "float32":
            return formula

        def constant(m: re.Match) -> str:
            name = "C_" + m.group(0).replace(".", "p").replace("-", "m").replace("+", "")
            self.constants[name] = m.group(0)
            return name

        return _FLOAT.sub(constant, formula)

    def cut(self) -> None:
        """Mark a point where the program may be split into stages (between top-level nests)."""
        if self.depth == 1:
            self.cuts.append(len(self.lines))

    def axis_var(self, axis: str) -> str:
        return self.fixed.get(axis, f"i_{axis}")

    def lead_loops(self, node: Node, skip: set[str] = frozenset()) -> int:
        """Open loops over the axes and batch of `node`; returns how many were opened.
        Inside a shared run (see _emit_run) they are already open."""
        if self.shared is not None:
            return 0
        opened = 0
        for a in self.axes:
            if a in node.axes and a not in self.fixed and a not in skip:
                self.open(f"for i_{a} in range(S_{a}):")
                opened += 1
        if node.batched:
            self.open("for ib in range(B):")
            opened += 1
        return opened

    def elem_loops(self, shape, names=None) -> tuple[int, list[str]]:
        names = names or [f"e{k}" for k in range(len(shape))]
        for name, d in zip(names, shape):
            self.open(f"for {name} in range({d}):")
        return len(shape), names

    def ref(self, node: Node, elems, override: dict | None = None, batch_var: str = "ib") -> str:
        """Index expression of `node`'s buffer inside a nest; 0 where it does not vary."""
        if node.id in self.views:
            shifted = list(elems[:-1]) + [f"{node.attrs['start']} + {elems[-1]}"]
            return self.ref(node.inputs[0], shifted, override, batch_var)
        override = override or {}
        idx = []
        for a in self.axes:
            idx.append(override.get(a, self.axis_var(a)) if a in node.axes else "0")
        idx.append(batch_var if node.batched else "0")
        idx.extend(elems)
        return f"{self.buf(node)}[{', '.join(idx)}]"

    def value(self, node: Node, elems: list[str]) -> str:
        """A scalar operand: a fused temporary, or a buffer element."""
        if node.id in self.temps:
            return self.temps[node.id]
        return self.ref(node, elems if node.shape else [])

    def needs_buffer(self, node: Node, group_ids: set[int]) -> bool:
        return node.id in self.root_ids or any(u.id not in group_ids for u in self.users[node.id])

    # ---- the program -----------------------------------------------------------------
    def generate(self) -> Program:
        self._sizes()
        sizes, self.lines = self.lines, []
        self._emit_items(self.items)
        return Program(
            [self.buf(leaf) for leaf in self.leaves],
            sizes,
            self.lines,
            self.cuts,
            [self.buf(r) for r in self.roots],
            self.constants,
        )

    def _sizes(self) -> None:
        for axis in self.axes:
            if axis in self.axis_sizes:
                self.emit(f"S_{axis} = {self.axis_sizes[axis]}")
                continue
            leaf = next(n for n in self.leaves if axis in n.axes)
            self.emit(f"S_{axis} = {self.buf(leaf)}.shape[{self.axes.index(axis)}]")
        batched = next((n for n in self.leaves if n.batched), None)
        self.emit(f"B = {self.buf(batched)}.shape[{len(self.axes)}]" if batched else "B = 1")

    def _emit_items(self, items) -> None:
        bulk: list[Node] = []
        for item in items:
            if isinstance(item, Bulk):
                bulk.append(item.node)
                continue
            self._emit_nodes(bulk)
            bulk = []
            self._loop(item)
            self.cut()
        self._emit_nodes(bulk)

    def _loop(self, loop: Loop) -> None:
        for node in loop.nodes:
            self.alloc(node)
        self._transposed_copies(loop)
        axis = loop.axis
        steps = f"range(S_{axis})" if loop.forward else f"range(S_{axis} - 1, -1, -1)"
        self.open(f"for t_{axis} in {steps}:")
        self.fixed[axis] = f"t_{axis}"
        self._emit_nodes(loop.nodes)
        del self.fixed[axis]
        self.close()
        self.transposed.clear()  # the copies are locals of this loop's stage

    def _transposed_copies(self, loop: Loop) -> None:
        """Before a loop, a transposed copy of each parameter-like matrix its small products
        multiply with, so they can run as sums of rows (loopgen_ops._matmul_loops)."""
        for n in loop.nodes:
            a = n.inputs[0] if n.op == "matmul" else None
            if a is None or not is_static_matrix(a) or a.op == "transpose":
                continue
            if a.id not in self.transposed:
                m, k = a.shape
                name = f"mt_{self.number[a.id]}"
                self.emit(f"{name} = np.ascontiguousarray({self.buf(a)}.reshape(({m}, {k})).T)")
                self.transposed[a.id] = name

    def _emit_nodes(self, nodes: list[Node]) -> None:
        """Emit nodes in order: elementwise runs fused into one nest, and consecutive units
        with the same leading loops (steps, batch) sharing one set of those loops."""
        run: list[list[Node]] = []
        signature = None
        for unit in fusion_units(nodes, self.virtual | self.views):
            sig = self._shared_signature(unit)
            if sig is not None and sig == signature:
                run.append(unit)
                continue
            self._emit_run(run, signature)
            self.cut()
            run, signature = [unit], sig
        self._emit_run(run, signature)
        self.cut()

    def _shared_signature(self, unit: list[Node]):
        """The leading loops a unit may share with its neighbours, or None if it may not
        (library calls and whole-array statements work on all steps and examples at once)."""
        from graphrnn.backends.loopgen_ops import computes_per_example

        head = unit[0]
        if not OPS[head.op].elementwise and not computes_per_example(self, head):
            return None
        axes = tuple(a for a in self.axes if a in head.axes and a not in self.fixed)
        if not axes and not head.batched:
            return None
        return axes, head.batched

    def _emit_run(self, run: list[list[Node]], signature) -> None:
        if not run:
            return
        if signature is None or len(run) == 1:
            for unit in run:
                self._unit(unit)
            return
        for unit in run:
            self._preallocate(unit)
        axes, batched = signature
        opened = 0
        for a in axes:
            self.open(f"for i_{a} in range(S_{a}):")
            opened += 1
        if batched:
            self.open("for ib in range(B):")
            opened += 1
        self.shared = signature
        for unit in run:
            self._unit(unit)
        self.shared = None
        self.close(opened)

    def _preallocate(self, unit: list[Node]) -> None:
        ids = {n.id for n in unit}
        for n in unit:
            if len(unit) == 1 or self.needs_buffer(n, ids):
                self.alloc(n)

    def _unit(self, unit: list[Node]) -> None:
        if OPS[unit[0].op].elementwise:
            self._elementwise_group(unit)
        else:
            self._node(unit[0])

    def _elementwise_group(self, group: list[Node]) -> None:
        head = group[0]
        ids = {n.id for n in group}
        stored = [n for n in group if self.needs_buffer(n, ids)]
        for n in stored:
            self.alloc(n)
        opened = self.lead_loops(head)
        k, elems = self.elem_loops(head.shape)
        for n in group:
            operands = [self.value(i, elems) for i in n.inputs]
            tmp = f"s{self.number[n.id]}"
            self.emit(f"{tmp} = {self.typed(OPS[n.op].scalar.format(*operands))}")
            self.temps[n.id] = tmp
        for n in stored:
            self.emit(f"{self.ref(n, elems)} = {self.temps[n.id]}")
        for n in group:
            del self.temps[n.id]
        self.close(opened + k)

    def _node(self, node: Node) -> None:
        if node.op in ("input", "param"):
            return
        lower = lowerings().get(node.op)
        if lower is None:
            raise NotImplementedError(f"no loop lowering for op '{node.op}'")
        start = len(self.lines)
        lower(self, node)
        self._rename_locals(start, self.number[node.id])

    def _rename_locals(self, start: int, k: int) -> None:
        """Give each nest's scalars their own names: Numba types and compiles a function with
        many short-lived variables much faster than one where a name spans every nest."""
        for i in range(start, len(self.lines)):
            self.lines[i] = _LOCALS.sub(lambda m: f"{m.group(1)}_{k}", self.lines[i])


def lowerings() -> dict:
    """`lower_<op>` functions of the template modules, by op name."""
    from graphrnn.backends import loopgen_conv, loopgen_grid, loopgen_ops

    modules = [loopgen_ops, loopgen_conv, loopgen_grid]
    return {
        name[len("lower_") :]: getattr(m, name)
        for m in modules
        for name in dir(m)
        if name.startswith("lower_")
    }


def _nodes(item) -> list[Node]:
    return [item.node] if isinstance(item, Bulk) else item.nodes


def consumers(items) -> dict[int, list[Node]]:
    """For every node id, the scheduled nodes that read it."""
    users: dict[int, list[Node]] = defaultdict(list)
    for item in items:
        for node in _nodes(item):
            for i in node.inputs:
                users[i.id].append(node)
    return users


def gemm_gradients(items, users, root_ids: set[int]) -> set[int]:
    """Outer products only summed into a parameter's gradient: the sum is lowered as one GEMM
    and the outer product itself is never formed. Every compiled backend decides this alike."""
    virtual = set()
    for item in items:
        for n in _nodes(item):
            if n.op != "reduce_to" or n.inputs[0].op != "outer" or n.context != STATIC:
                continue
            outer = n.inputs[0]
            a, b = outer.inputs
            single_use = [u.id for u in users[outer.id]] == [n.id]
            aligned = a.context == b.context == outer.context and outer.batched
            if single_use and aligned and outer.id not in root_ids:
                virtual.add(outer.id)
    return virtual


def slice_views(items, users, root_ids: set[int], view_users) -> set[int]:
    """Slices read in place through shifted indices instead of being copied: those whose
    every user is elementwise or an op in `view_users` (templates that index element by
    element, not library calls on the whole buffer)."""
    views = set()
    for item in items:
        for n in _nodes(item):
            if n.op != "slice" or n.id in root_ids:
                continue
            if all(OPS[u.op].elementwise or u.op in view_users for u in users[n.id]):
                views.add(n.id)
    return views


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


def is_static_matrix(node: Node) -> bool:
    return node.context == STATIC and len(node.shape) == 2
