"""The Numba backend's program: a scheduled graph as explicit loop nests in Python source.

Every value lives in a preallocated buffer in the aligned layout (ir/node.py). Each node's
kernel (graphrnn/kernels/, or this backend's own in numba_products.py and numba_conv.py) is
printed as `for` loops over its nest's dimensions, reading operands with index 0 wherever they
do not vary (broadcasting resolved at compile time). Runs of elementwise nodes are one fused
nest (backends/planning.py), consecutive nests over the same steps and examples share those
loops, and recurrences become `for t in range(...)` loops with the step index fixed to t.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphrnn import kernels
from graphrnn.backends import numba_conv, numba_products
from graphrnn.backends.numba_printer import NumbaPrinter
from graphrnn.backends.planning import (
    concat_slots,
    consumers,
    delay_views,
    fusion_units,
    gemm_gradients,
    is_static_matrix,
    kernel_nests,
    needs_buffer,
    runs,
    slice_views,
)
from graphrnn.ir.node import Node
from graphrnn.ir.registry import OPS
from graphrnn.schedule import Loop


@dataclass
class Program:
    """A lowered graph: the leaves' buffer names in argument order, the lines that read the
    axis lengths and batch size, the body with its cut points (see stages.py), the buffers
    returned, the typed constants the body names (name -> literal), and the buffers the
    body writes into (name, shape), which the driver provides."""

    args: list[str]
    sizes: list[str]
    body: list[str]
    cuts: list[int]
    results: list[str]
    constants: dict[str, str]
    allocations: list[tuple[str, str]]


class LoopGen(NumbaPrinter):
    """The program: items in schedule order, recurrences as step loops, fusion and shared
    leading loops, and each node printed by this backend's own kernel or the shared one."""

    def __init__(
        self, axes: tuple[str, ...], dtype: str, roots: list[Node], items, leaves, axis_sizes=None
    ):
        super().__init__(axes, dtype, roots, items, leaves, axis_sizes)
        self.users = consumers(items)
        self.virtual = gemm_gradients(items, self.users, self.root_ids)
        self.views = slice_views(items, self.users, self.root_ids, _whole_buffer)
        self.slots = concat_slots(items, self.users, self.root_ids)
        self.delays = delay_views(items, self.users, self.root_ids)

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
            self.allocations,
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
        for run in runs(items):
            if isinstance(run, Loop):
                self._loop(run)
                self.cut()
            else:
                self._emit_nodes(run)

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
        multiply with, so they can run as sums of rows (numba_products.rows_matmul)."""
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
        for unit in fusion_units(nodes, self.virtual | self.views | self.delays):
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
        head = unit[0]
        if not OPS[head.op].elementwise and not numba_products.computes_per_example(self, head):
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
            if len(unit) == 1 or needs_buffer(n, ids, self.users, self.root_ids):
                self.alloc(n)

    def _unit(self, unit: list[Node]) -> None:
        if OPS[unit[0].op].elementwise:
            ids = {n.id for n in unit}
            stored = [n for n in unit if needs_buffer(n, ids, self.users, self.root_ids)]
            self.print_nest(kernels.fused_nest(unit, stored))
        else:
            self._node(unit[0])

    def _node(self, node: Node) -> None:
        if OPS[node.op].leaf:
            return
        own = numba_products.OWN.get(node.op) or numba_conv.OWN.get(node.op)
        if own is not None and own(self, node):
            return
        self.print_nests(kernel_nests(node, self.slots))


def _whole_buffer(user: Node) -> bool:
    """Users this backend hands a whole buffer: a static transpose is one library copy."""
    return user.op == "transpose" and is_static_matrix(user)
