"""Printing loop nests (graphrnn/loopnest.py) as Numba Python: buffers, indices and names.

Every value lives in a preallocated buffer in the aligned layout (ir/node.py). A nest becomes
`for` loops over its free leading dimensions and its own, reading operands with index 0
wherever they do not vary (broadcasting resolved at compile time); slices read in place are
read from their operand at shifted indices. The program (numba_program.py) decides what is
printed where; this module only prints.
"""

from __future__ import annotations

import re

from graphrnn.backends.planning import delayed, in_slot, nodes_of
from graphrnn.ir.node import Node
from graphrnn.loopnest import Assign, For, If, Let, Local, Nest, Ref, lead_dims, resolve

_FLOAT = re.compile(r"(?<![\w.])(?:\d+\.\d*(?:e[-+]?\d+)?|\d+e[-+]?\d+)(?![\w.])")


class NumbaPrinter:
    """The state printing shares with the program: buffer names, the open loops and fixed
    step axes, which nodes are views, written into a concat's slot or never formed, and the
    lines written so far."""

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
        self.allocated: set[int] = set()
        self.allocations: list[tuple[str, str]] = []  # (buffer, shape): made by the driver
        self.shared = None
        self.root_ids = {r.id for r in roots}
        self.number: dict[int, int] = {}
        for node in list(leaves) + [n for item in items for n in nodes_of(item)]:
            self.number.setdefault(node.id, len(self.number))
        self.virtual: set[int] = set()
        self.views: set[int] = set()
        self.slots: dict[int, tuple[Node, int]] = {}
        self.delays: set[int] = set()

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

    def alloc(self, node: Node) -> None:
        node, _ = in_slot(node, [], self.slots)
        if node.id in self.allocated:
            return
        self.allocated.add(node.id)
        self.allocations.append((self.buf(node), self.alloc_shape(node)))

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

    def ref(self, node: Node, elems, override: dict | None = None, batch_var: str = "ib") -> str:
        """Index expression of `node`'s buffer inside a nest; 0 where it does not vary."""
        if node.id in self.views:
            shifted = list(elems[:-1]) + [f"{node.attrs['start']} + {elems[-1]}"]
            return self.ref(node.inputs[0], shifted, override, batch_var)
        override = override or {}
        if node.id in self.delays:
            return self._delayed(node, elems, override, batch_var)
        node, elems = in_slot(node, elems, self.slots)
        idx = []
        for a in self.axes:
            idx.append(override.get(a, self.axis_var(a)) if a in node.axes else "0")
        idx.append(batch_var if node.batched else "0")
        idx.extend(elems)
        return f"{self.buf(node)}[{', '.join(idx)}]"

    def _delayed(self, n: Node, elems, override: dict, batch_var: str) -> str:
        v, init = n.inputs
        axis = n.attrs["axis"]
        src, inside = delayed(n, override.get(axis, self.axis_var(axis)))
        value = self.ref(v, elems, {**override, axis: src}, batch_var)
        return f"({value} if {inside} else {self.ref(init, elems, override, batch_var)})"

    # ---- printing nests --------------------------------------------------------------
    def print_nests(self, nests: list[Nest]) -> None:
        for nest in nests:
            self.print_nest(nest)

    def print_nest(self, nest: Nest) -> None:
        """Loops over the nest's free leading dimensions (unless a shared run has them open)
        and its own, then the body, with the nest's locals named after its node."""
        for node in nest.writes():
            self.alloc(node)
        names = _NestNames(self, nest)
        dims = [] if self.shared is not None else lead_dims(nest.node, self.axes, self.fixed)
        for var, size in dims + nest.dims:
            self.open(f"for {var} in range({size}):")
        self._body(nest.body, names)
        self.close(len(dims) + len(nest.dims))

    def _body(self, body, names: _NestNames) -> None:
        for s in body:
            if isinstance(s, Let):
                self.emit(f"{names.local(s.local)} = {names.expr(s.expr)}")
            elif isinstance(s, Assign):
                target = names.expr(s.target.token) if isinstance(s.target, Local) else None
                target = target or names.ref(s.target)
                self.emit(f"{target} {s.op} {names.expr(s.expr)}")
            elif isinstance(s, For):
                start, stop = names.expr(s.start), names.expr(s.stop)
                steps = f"{stop} - 1, {start} - 1, -1" if s.reverse else f"{start}, {stop}"
                if not s.reverse and start == "0":
                    steps = stop
                self.open(f"for {names.local(s.var)} in range({steps}):")
                self._body(s.body, names)
                self.close()
            elif isinstance(s, If):
                self.open(f"if {names.expr(s.cond)}:")
                self._body(s.body, names)
                self.close()
                if s.orelse:
                    self.open("else:")
                    self._body(s.orelse, names)
                    self.close()


class _NestNames:
    """The printed names of one nest's tokens: its locals suffixed with the node's number
    (Numba types and compiles a function with many short-lived variables much faster than
    one where a name spans every nest), its buffer elements, the step axes' indices."""

    def __init__(self, gen: NumbaPrinter, nest: Nest):
        self.gen = gen
        self.nest = nest
        k = gen.number[nest.node.id]
        self.names = {t: f"{loc.name}_{k}" for t, loc in nest.locals.items()}
        for a in gen.axes:
            self.names[f"__A{a}__"] = gen.axis_var(a)
        for token, ref in nest.refs.items():
            self.names[token] = self.ref(ref)

    def local(self, local: Local) -> str:
        return self.names[local.token]

    def expr(self, text: str) -> str:
        text = resolve(text, self.names)
        return self.gen.typed(text) if self.nest.elementwise else text

    def ref(self, ref: Ref) -> str:
        elems = [resolve(e, self.names) for e in ref.elems]
        override = {a: resolve(v, self.names) for a, v in ref.override}
        batch = resolve(ref.batch, self.names) if ref.batch else "ib"
        return self.gen.ref(ref.node, elems, override, batch)
