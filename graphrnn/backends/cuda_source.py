"""CUDA C source and the launch program of the CuPy backend, generated without a GPU.

The scheduled, optimised graph becomes a `Program`: every value lives in a buffer in the
aligned layout (ir/node.py), and the program is a list of steps run in order by the executor
(cupy_gpu.py):

- `Launch`: one generated `extern "C" __global__` kernel per loop nest of a node's kernel
  (graphrnn/kernels/), one thread per point of the nest (its free steps, the batch and its
  own dimensions, flattened; a grid-stride loop, so any grid size is correct). Operands are
  indexed with compile-time broadcasting: a dimension where an operand does not vary is
  simply left out of its index. Runs of elementwise nodes are one fused kernel with their
  intermediates in registers, as the Numba backend fuses them into one loop nest.
- `MatVec` / `WeightGrad`: the products the planning (backends/planning.py) hands to a BLAS
  become cuBLAS GEMMs (cupy.dot): a matrix-vector product with a parameter matrix over all
  steps and examples, or over the examples of one step inside a recurrence (there the shared
  matmul kernel instead while batch * rows * cols < GEMM_MIN_STEP, chosen per call), and a
  parameter gradient sum_{t,b} outer(a, b) as one A^T B. Slices whose users all read element
  by element are not copied: kernels read them in place.
- `Fill`: constants, the batch size and axis lengths (buffers filled on the device; kernels
  that read them inline the value instead).
- `StepLoop`: a recurrence; the host loops over the steps and issues the body's launches
  with the step index as the kernel argument `step` (the fixed axis), without synchronising.

Every kernel takes the same leading arguments, `(S_<axis> for each axis of the graph, B,
step)`, then its output buffers, then its input buffers, so launching one needs no per-kernel
knowledge beyond the buffer list. Kernels use no headers, shared memory or intrinsics: the
source compiles with NVRTC (what CuPy uses), with `nvcc --ptx`, and as C++ with a small
prelude (tests/backends/test_cupy_gpu.py runs the kernels that way on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphrnn import kernels
from graphrnn.backends.cuda_c import CTYPES, literal, translate
from graphrnn.backends.planning import (
    BLAS_MIN_STEP,
    blas_product,
    concat_slots,
    consumers,
    delay_views,
    delayed,
    fusion_units,
    gemm_gradients,
    in_slot,
    kernel_nests,
    needs_buffer,
    nodes_of,
    runs,
    slice_views,
    summed_outer,
)
from graphrnn.ir.graph import Graph
from graphrnn.ir.node import Node
from graphrnn.ir.registry import OPS
from graphrnn.loopnest import Assign, For, If, Let, Local, Nest, Ref, lead_dims, walk
from graphrnn.schedule import Loop, schedule
from graphrnn.version import __version__

INDEX = "long long"
# The CPU backend's threshold (planning.BLAS_MIN_STEP); not yet measured on a GPU.
GEMM_MIN_STEP = BLAS_MIN_STEP


# ---- the program -------------------------------------------------------------------------
Dim = int | str  # a compile-time size, or a run-time one: "B" or "S_<axis>"


@dataclass
class Launch:
    """Run `kernel` with one thread per element of `extent` (sizes multiplied)."""

    kernel: str
    extent: tuple[Dim, ...]
    outputs: tuple[int, ...]
    inputs: tuple[int, ...]

    @property
    def buffers(self) -> tuple[int, ...]:
        return self.outputs + self.inputs


@dataclass
class MatVec:
    """out[..., m] = matrix[m, k] @ vector[..., k] for every row: one GEMM, rows of the
    vector times the matrix transposed. Inside a StepLoop only the current step's rows, and
    there `small` (a kernel) runs instead while batch * m * k < GEMM_MIN_STEP."""

    out: int
    matrix: int
    vector: int
    m: int
    k: int
    small: Launch | None = None

    def uses_gemm(self, batch: int) -> bool:
        return self.small is None or batch * self.m * self.k >= GEMM_MIN_STEP


@dataclass
class WeightGrad:
    """out[m, k] = sum over all rows (steps, batch) of outer(a[m], b[k]) = A^T B."""

    out: int
    a: int
    b: int
    m: int
    k: int


@dataclass
class Fill:
    """The whole buffer set to a constant, "B" (the batch size) or "S_<axis>"."""

    out: int
    value: float | str


@dataclass
class StepLoop:
    """A recurrence: `body` once per step of `axis`, first to last if `forward`."""

    axis: str
    forward: bool
    body: list = field(default_factory=list)


Step = Launch | MatVec | WeightGrad | Fill | StepLoop


@dataclass
class Program:
    """What the executor runs: leaves to upload, buffers to allocate (aligned shapes with
    run-time dims), the steps, the kernels' sources and the nodes to return."""

    axes: tuple[str, ...]
    dtype: str
    leaves: list[Node]
    roots: list[Node]
    buffers: dict[int, tuple[Dim, ...]]
    names: dict[int, str]
    steps: list[Step]
    kernels: dict[str, str]

    def size_args(self) -> tuple[str, ...]:
        """The run-time sizes every kernel takes first (before `step`), in order."""
        return tuple(f"S_{a}" for a in self.axes) + ("B",)

    def source(self) -> str:
        return module_text(self.kernels, self.dtype)

    def launches(self) -> list[Launch]:
        """Every kernel launch, the per-step products' small-batch kernels included."""
        steps = list(_flat(self.steps))
        small = [s.small for s in steps if isinstance(s, MatVec) and s.small is not None]
        return [s for s in steps if isinstance(s, Launch)] + small

    def gemms(self) -> list[MatVec | WeightGrad]:
        return [s for s in _flat(self.steps) if isinstance(s, (MatVec, WeightGrad))]


def _flat(steps: list[Step]):
    for s in steps:
        if isinstance(s, StepLoop):
            yield from _flat(s.body)
        else:
            yield s


def module_text(kernels: dict[str, str], dtype: str) -> str:
    head = f"// generated by graphrnn {__version__} for {dtype}; edit the model, not this\n"
    return head + "\n".join(kernels.values())


def build_program(graph: Graph, dtype: str, prefix: str = "") -> Program:
    """The program of a (scheduled, usually optimised) graph. Kernel names are `k<n>_<ops>`
    after `prefix` (to put several graphs' kernels in one translation unit)."""
    if dtype not in CTYPES:
        raise ValueError(f"dtype must be float32 or float64, not {dtype!r}")
    roots = graph.roots()
    items = schedule(roots)
    used = {n.id for item in items for n in nodes_of(item)}
    leaves = [n for n in graph.leaves.values() if n.id in used]
    return CudaGen(graph.axes, dtype, roots, items, leaves, prefix).program()


def kernel_sources(graph: Graph, dtype: str, prefix: str = "") -> dict[str, str]:
    """Every kernel of the graph's program by name; each source compiles on its own."""
    return build_program(graph, dtype, prefix).kernels


def module_source(graph: Graph, dtype: str, prefix: str = "") -> str:
    """All kernels of the graph in one translation unit (what CuPy's RawModule compiles)."""
    return build_program(graph, dtype, prefix).source()


# ---- printing one nest as a kernel -------------------------------------------------------
class KernelPrinter:
    """One nest as a kernel: its locals keep their names (each kernel is its own function),
    refs become flat indices into the buffers, inline constants become literals; the buffers
    read and written are found as the body refers to them."""

    def __init__(self, gen: CudaGen, nest: Nest, name: str):
        self.gen = gen
        self.nest = nest
        self.name = name
        self.extent = lead_dims(nest.node, gen.axes, gen.fixed) + nest.dims
        self.reads: dict[int, Node] = {}
        self.writes: dict[int, Node] = {}
        self.lines: list[str] = []
        self.depth = 2
        self.names = {t: loc.name for t, loc in nest.locals.items()}
        self.mutable = {
            s.target.token
            for s in walk(nest.body)
            if isinstance(s, Assign) and isinstance(s.target, Local)
        }
        for a in gen.axes:
            self.names[f"__A{a}__"] = gen.axis_var(a)
        for token, ref in nest.refs.items():
            self.names[token] = self.ref(ref)

    # -- expressions
    def value(self, expr: str) -> str:
        return translate(expr, self.gen.dtype, "value", self.names)

    def index(self, expr: str) -> str:
        return translate(expr, self.gen.dtype, "index", self.names)

    def ref(self, ref: Ref) -> str:
        """The element of the ref's node; dimensions where it does not vary are left out.
        Constants are inlined, slices read in place are read from their operand."""
        elems = [self.index(e) for e in ref.elems]
        override = {a: self.index(v) for a, v in ref.override}
        batch = self.index(ref.batch) if ref.batch else "ib"
        return self.gen.element(ref.node, elems, override, batch, self.reads)

    # -- statements
    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def body(self, statements) -> None:
        T = self.gen.T
        for s in statements:
            if isinstance(s, Let):
                ctype = INDEX if s.local.kind == "index" else T
                ctype = ctype if s.local.token in self.mutable else f"const {ctype}"
                expr = self.index(s.expr) if s.local.kind == "index" else self.value(s.expr)
                self.emit(f"{ctype} {s.local.name} = {expr};")
            elif isinstance(s, Assign):
                self.emit(f"{self._target(s)} {s.op} {self._assigned(s)};")
            elif isinstance(s, For):
                self._loop(s)
            elif isinstance(s, If):
                self.emit(f"if ({self.index(s.cond)}) {{")
                self._block(s.body)
                if s.orelse:
                    self.emit("} else {")
                    self._block(s.orelse)
                self.emit("}")

    def _block(self, statements) -> None:
        self.depth += 1
        self.body(statements)
        self.depth -= 1

    def _target(self, s: Assign) -> str:
        if isinstance(s.target, Local):
            return s.target.name
        elems = [self.index(e) for e in s.target.elems]
        node, elems = in_slot(s.target.node, elems, self.gen.slots)
        self.writes.setdefault(node.id, node)
        return self.gen.element(node, elems, {}, "ib", None)

    def _assigned(self, s: Assign) -> str:
        if isinstance(s.target, Local) and s.target.kind == "index":
            return self.index(s.expr)
        return self.value(s.expr)

    def _loop(self, s: For) -> None:
        v, start, stop = s.var.name, self.index(s.start), self.index(s.stop)
        if s.reverse:
            self.emit(f"for ({INDEX} {v} = {stop} - 1; {v} >= {start}; --{v}) {{")
        else:
            self.emit(f"for ({INDEX} {v} = {start}; {v} < {stop}; ++{v}) {{")
        self._block(s.body)
        self.emit("}")

    # -- the finished source
    def source(self) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
        self.body(self.nest.body)
        g = self.gen
        outputs = tuple(self.writes)
        inputs = tuple(i for i in self.reads if i not in self.writes)
        params = [f"const {INDEX} {s}" for s in g.size_args] + [f"const {INDEX} step"]
        params += [f"{g.T}* __restrict__ {g.names[i]}" for i in outputs]
        params += [f"const {g.T}* __restrict__ {g.names[i]}" for i in inputs]
        sizes = [str(size) for _, size in self.extent]
        lines = [f'extern "C" __global__ void {self.name}(']
        lines += [f"    {p}," for p in params[:-1]] + [f"    {params[-1]}", ") {"]
        lines.append(f"    const {INDEX} n = {' * '.join(sizes) or '1'};")
        stride = f"({INDEX})gridDim.x * blockDim.x"
        start = f"({INDEX})blockIdx.x * blockDim.x + threadIdx.x"
        lines.append(f"    for ({INDEX} idx = {start}; idx < n; idx += {stride}) {{")
        lines.extend(self._decompose())
        lines.extend(self.lines)
        lines += ["    }", "}", ""]
        return "\n".join(lines), outputs, inputs

    def _decompose(self) -> list[str]:
        """Index variables from the flat thread index, innermost dimension fastest."""
        if not self.extent:
            return []
        if len(self.extent) == 1:
            return [f"        const {INDEX} {self.extent[0][0]} = idx;"]
        lines = [f"        {INDEX} rest = idx;"]
        for var, size in reversed(self.extent[1:]):
            lines.append(f"        const {INDEX} {var} = rest % {size};")
            lines.append(f"        rest /= {size};")
        lines.append(f"        const {INDEX} {self.extent[0][0]} = rest;")
        return lines


# ---- the generator -----------------------------------------------------------------------
class CudaGen:
    def __init__(
        self, axes: tuple[str, ...], dtype: str, roots: list[Node], items, leaves, prefix=""
    ):
        self.axes = axes
        self.dtype = dtype
        self.prefix = prefix
        self.T = CTYPES[dtype]
        self.roots = roots
        self.items = items
        self.leaves = leaves
        self.size_args = tuple(f"S_{a}" for a in axes) + ("B",)
        self.fixed: dict[str, str] = {}
        self.users = consumers(items)
        self.root_ids = {r.id for r in roots}
        self.number: dict[int, int] = {}
        for node in list(leaves) + [n for item in items for n in nodes_of(item)]:
            self.number.setdefault(node.id, len(self.number))
        self.names = {i: f"v{k}" for i, k in self.number.items()}
        self.virtual = gemm_gradients(items, self.users, self.root_ids)
        self.views = slice_views(items, self.users, self.root_ids)
        self.slots = concat_slots(items, self.users, self.root_ids)
        self.delays = delay_views(items, self.users, self.root_ids)
        self.kernels: dict[str, str] = {}
        self.buffers: dict[int, tuple[Dim, ...]] = {}
        self.steps: list[Step] = []

    def axis_var(self, axis: str) -> str:
        return self.fixed.get(axis, f"i_{axis}")

    def alloc_dims(self, node: Node) -> tuple[Dim, ...]:
        dims: list[Dim] = [f"S_{a}" if a in node.axes else 1 for a in self.axes]
        dims.append("B" if node.batched else 1)
        dims.extend(node.shape)
        return tuple(dims)

    def element(self, node: Node, elems, override, batch: str, reads) -> str:
        """C text of one element of `node` at the given indices; `reads` (if given) collects
        the buffers read."""
        if OPS[node.op].whole_array:
            return self._inline(node)
        if node.id in self.views:
            shifted = list(elems[:-1]) + [f"({node.attrs['start']} + {elems[-1]})"]
            return self.element(node.inputs[0], shifted, override, batch, reads)
        if node.id in self.delays:
            return self._delayed(node, elems, override, batch, reads)
        node, elems = in_slot(node, elems, self.slots)
        if reads is not None:
            reads.setdefault(node.id, node)
        terms: list[tuple[Dim, str]] = []
        for a in self.axes:
            if a in node.axes:
                terms.append((f"S_{a}", override.get(a, self.axis_var(a))))
        if node.batched:
            terms.append(("B", batch))
        if len(elems) != len(node.shape):
            raise AssertionError(f"{node!r} indexed with {elems}")
        terms.extend(zip(node.shape, elems))
        offset = ""
        for size, var in terms:
            offset = var if not offset else f"({offset}) * {size} + {var}"
        return f"{self.names[node.id]}[{offset or 0}]"

    def _delayed(self, n: Node, elems, override, batch: str, reads) -> str:
        v, init = n.inputs
        axis = n.attrs["axis"]
        src, inside = delayed(n, override.get(axis, self.axis_var(axis)))
        src, inside = translate(src, self.dtype, "index"), translate(inside, self.dtype, "index")
        value = self.element(v, elems, {**override, axis: src}, batch, reads)
        return f"({inside} ? {value} : {self.element(init, elems, override, batch, reads)})"

    def _inline(self, node: Node) -> str:
        if node.op == "const":
            return literal(node.attrs["value"], self.dtype)
        if node.op == "batch_size":
            return f"(({self.T})B)"
        return f"(({self.T})S_{node.attrs['axis']})"

    def launch(self, nest: Nest, name: str, append: bool = True) -> Launch:
        printer = KernelPrinter(self, nest, name)
        source, outputs, inputs = printer.source()
        self.kernels[name] = source
        for i in outputs:
            self.buffers.setdefault(i, self.alloc_dims(printer.writes[i]))
        extent = tuple(size for _, size in printer.extent)
        step = Launch(name, extent, outputs, inputs)
        if append:
            self.current.append(step)
        return step

    def kernel_name(self, nest: Nest) -> str:
        return f"{self.prefix}k{self.number[nest.node.id]}_{nest.tag}"

    def add(self, step: Step, out: Node) -> None:
        self.buffers.setdefault(out.id, self.alloc_dims(out))
        self.current.append(step)

    # ---- the program
    def program(self) -> Program:
        self.current = self.steps
        for run in runs(self.items):
            if isinstance(run, Loop):
                self._loop(run)
            else:
                self._emit_nodes(run)
        program = Program(
            self.axes,
            self.dtype,
            self.leaves,
            self.roots,
            self.buffers,
            self.names,
            self.steps,
            self.kernels,
        )
        _check(program)
        return program

    def _loop(self, loop: Loop) -> None:
        step = StepLoop(loop.axis, loop.forward)
        self.steps.append(step)
        self.current = step.body
        self.fixed[loop.axis] = "step"
        self._emit_nodes(loop.nodes)
        del self.fixed[loop.axis]
        self.current = self.steps

    def _emit_nodes(self, nodes: list[Node]) -> None:
        for unit in fusion_units(nodes, self.virtual | self.views | self.delays):
            if OPS[unit[0].op].elementwise:
                ids = {n.id for n in unit}
                stored = [n for n in unit if needs_buffer(n, ids, self.users, self.root_ids)]
                nest = kernels.fused_nest(unit, stored)
                self.launch(nest, self.kernel_name(nest))
            else:
                self._node(unit[0])

    def _node(self, node: Node) -> None:
        if OPS[node.op].leaf:
            return
        own = OWN.get(node.op)
        if own is not None and own(self, node):
            return
        for nest in kernel_nests(node, self.slots):
            self.launch(nest, self.kernel_name(nest))


def _check(program: Program) -> None:
    """Every buffer a step reads is a leaf or written by some step (a generator bug else)."""
    known = {n.id for n in program.leaves} | set(program.buffers)
    for s in _flat(program.steps):
        reads = {
            Launch: lambda s: s.inputs,
            MatVec: lambda s: (s.matrix, s.vector),
            WeightGrad: lambda s: (s.a, s.b),
            Fill: lambda s: (),
        }[type(s)](s)
        missing = [i for i in reads if i not in known]
        if missing:
            raise AssertionError(f"{s} reads buffers never written: {missing}")
    for r in program.roots:
        if r.id not in known:
            raise AssertionError(f"the output {r!r} has no buffer")


# ---- where the GPU's algorithm differs from the shared kernels: cuBLAS and fills ---------
def _matmul(g: CudaGen, n: Node) -> bool:
    """A cuBLAS GEMM in bulk; in a recurrence a GEMM or the shared kernel, chosen per call by
    the work per step; otherwise the shared kernel, one thread per output element."""
    if not blas_product(n, g.axes, g.fixed):
        return False
    a, v = n.inputs
    m, k = a.shape
    if not g.fixed:
        g.add(MatVec(n.id, a.id, v.id, m, k), n)
        return True
    (nest,) = OPS["matmul"].kernel(n)
    small = g.launch(nest, g.kernel_name(nest), append=False)
    g.add(MatVec(n.id, a.id, v.id, m, k, small=small), n)
    return True


def _reduce_to(g: CudaGen, n: Node) -> bool:
    gemm = summed_outer(n, g.virtual)
    if gemm is None:
        return False
    a, b, m, k = gemm
    g.add(WeightGrad(n.id, a.id, b.id, m, k), n)
    return True


OWN = {
    "matmul": _matmul,
    "reduce_to": _reduce_to,
    "const": lambda g, n: g.add(Fill(n.id, float(n.attrs["value"])), n) or True,
    "batch_size": lambda g, n: g.add(Fill(n.id, "B"), n) or True,
    "axis_size": lambda g, n: g.add(Fill(n.id, f"S_{n.attrs['axis']}"), n) or True,
}
