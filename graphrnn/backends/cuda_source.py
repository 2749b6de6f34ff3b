"""CUDA C source and the launch program of the CuPy backend, generated without a GPU.

The scheduled, optimised graph becomes a `Program`: every value lives in a buffer in the
aligned layout (ir/node.py), and the program is a list of steps run in order by the executor
(cupy_gpu.py):

- `Launch`: one generated `extern "C" __global__` kernel over a flattened extent of
  (steps, batch, elements), one thread per output element (a grid-stride loop, so any grid
  size is correct). Operands are indexed with compile-time broadcasting: a dimension where an
  operand does not vary is simply left out of its index, like `LoopGen.ref` puts 0 there.
  Elementwise nodes of one extent that follow each other are fused into one kernel with their
  intermediates in registers, exactly as the Numba lowering fuses them into one loop nest.
  Reductions (sum, reduce_to, softmax, ...) run one thread per output element (or per
  example for the vector ops) looping over the reduced range.
- `MatVec` / `WeightGrad`: the products the Numba lowering hands to BLAS become cuBLAS GEMMs
  (cupy.dot): a matrix-vector product with a parameter matrix over all steps and examples,
  or over the examples of one step inside a recurrence (there a generated kernel instead
  while batch * rows * cols < GEMM_MIN_STEP, chosen per call), and a parameter gradient
  sum_{t,b} outer(a, b) as one A^T B. The decisions mirror loopgen.py. Slices whose users
  all read element by element are not copied: kernels read them in place.
- `Fill`: constants, the batch size and axis lengths (buffers filled on the device).
- `StepLoop`: a recurrence; the host loops over the steps and issues the body's launches
  with the step index as the kernel argument `step` (the fixed axis), without synchronising.

Every kernel takes the same leading arguments, `(S_<axis> for each axis of the graph, B,
step)`, then its output buffers, then its input buffers, so launching one needs no per-kernel
knowledge beyond the buffer list. Kernels use no headers, shared memory or intrinsics: the
source compiles with NVRTC (what CuPy uses), with `nvcc --ptx`, and as C++ with a small
prelude (tests/backends/test_cupy_gpu.py runs the kernels that way on the CPU).

Elementwise formulas come from the ops' `scalar` templates, written as Python expressions;
`translate` turns them into C: `a if c else b` -> `((c) ? (a) : (b))`, `max` -> `fmax`,
and in float32 `tanh` -> `tanhf` etc., with `f`-suffixed literals.
"""

from __future__ import annotations

import ast
import functools
import math
import re
from dataclasses import dataclass, field

from graphrnn.backends.loopgen import consumers, fusion_units, gemm_gradients, slice_views
from graphrnn.ir.graph import Graph
from graphrnn.ir.node import STATIC, Node
from graphrnn.ir.registry import OPS
from graphrnn.schedule import Bulk, Loop, schedule

INDEX = "long long"
CTYPES = {"float64": "double", "float32": "float"}
# A per-step product with a parameter matrix runs as a cuBLAS GEMM when batch * rows * cols
# reaches this, else as a generated kernel (decided per call, when the batch size is known).
# The CPU backend's threshold; not yet measured on a GPU.
GEMM_MIN_STEP = 1 << 16
# Ops whose templates read their operands only element by element (Kernel.ref), so that a
# slice they read needs no buffer of its own: it is read in place, at shifted indices.
_VIEW_USERS = frozenset(
    "slice concat pad sum mean expand reduce_to softmax log_softmax softmax_cross_entropy mse "
    "delay edge_sum edge_fill place at broadcast expand_axis reduce_axis batch_mean transpose "
    "patches grid conv2d conv2d_input_grad conv2d_weight_grad maxpool2d maxpool2d_gather "
    "maxpool2d_grad avgpool2d avgpool2d_grad global_avgpool channel_sum channel_expand "
    "batch_mean_per_channel".split()
)


# ---- the expression translator -----------------------------------------------------------
class TranslationError(ValueError):
    """A scalar formula uses Python that has no CUDA C counterpart here."""


_MATH = ("tanh", "exp", "log", "sqrt")
_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_COMPARE = {ast.Gt: ">", ast.Lt: "<", ast.GtE: ">=", ast.LtE: "<=", ast.Eq: "==", ast.NotEq: "!="}
_PLACEHOLDER = re.compile(r"\b_arg(\d+)\b")
_SIMPLE = re.compile(r"\w+")


def literal(value: float, dtype: str = "float64") -> str:
    """A floating-point C literal of `dtype` (Python's `/` is true division, so integers in a
    formula become floating literals too)."""
    value = float(value)
    if not math.isfinite(value):
        raise TranslationError(f"the constant {value} has no C literal")
    text = repr(value)
    if "e" not in text and "." not in text:
        text += ".0"
    return text + ("f" if dtype == "float32" else "")


def translate(expr: str, dtype: str = "float64") -> str:
    """The C expression of a Python scalar expression: + - * /, unary minus, comparisons,
    `and`/`or`/`not`, `x if c else y`, max/min/abs and tanh/exp/log/sqrt; names pass through.
    Every subexpression is parenthesised, so C's precedence never matters."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        raise TranslationError(f"cannot parse the formula {expr!r}: {e.msg}") from None
    return _c(tree.body, dtype, expr)


def _c(node: ast.AST, dtype: str, whole: str) -> str:
    f32 = dtype == "float32"

    def sub(n: ast.AST) -> str:
        return _c(n, dtype, whole)

    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return f"({sub(node.left)} {_BINARY[type(node.op)]} {sub(node.right)})"
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.USub):
            return f"(-{sub(node.operand)})"
        if isinstance(node.op, ast.UAdd):
            return sub(node.operand)
        if isinstance(node.op, ast.Not):
            return f"(!{sub(node.operand)})"
    if isinstance(node, ast.IfExp):
        return f"(({sub(node.test)}) ? ({sub(node.body)}) : ({sub(node.orelse)}))"
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        operands = [node.left, *node.comparators]
        parts = [
            f"({sub(a)} {_COMPARE[type(op)]} {sub(b)})"
            for a, op, b in zip(operands, node.ops, operands[1:])
        ]
        return parts[0] if len(parts) == 1 else "(" + " && ".join(parts) + ")"
    if isinstance(node, ast.BoolOp):
        joiner = " && " if isinstance(node.op, ast.And) else " || "
        return "(" + joiner.join(sub(v) for v in node.values) + ")"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        name, args = node.func.id, [sub(a) for a in node.args]
        suffix = "f" if f32 else ""
        if name in _MATH and len(args) == 1:
            return f"{name}{suffix}({args[0]})"
        if name == "abs" and len(args) == 1:
            return f"fabs{suffix}({args[0]})"
        if name in ("max", "min") and len(args) >= 2:
            fn = f"f{name}{suffix}"
            result = args[0]
            for a in args[1:]:
                result = f"{fn}({result}, {a})"
            return result
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return literal(node.value, dtype)
    raise TranslationError(f"cannot translate {ast.unparse(node)!r} in {whole!r} to CUDA C")


@functools.cache
def _template(template: str, arity: int, dtype: str) -> str:
    return translate(template.format(*(f"_arg{i}" for i in range(arity))), dtype)


def scalar_c(template: str, operands: list[str], dtype: str) -> str:
    """An op's `scalar` template applied to C operand expressions."""
    text = _template(template, len(operands), dtype)
    return _PLACEHOLDER.sub(lambda m: operands[int(m.group(1))], text)


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
    import graphrnn

    head = (
        f"// generated by graphrnn {graphrnn.__version__} for {dtype}; edit the model, not this\n"
    )
    return head + "\n".join(kernels.values())


def build_program(graph: Graph, dtype: str, prefix: str = "") -> Program:
    """The program of a (scheduled, usually optimised) graph. Kernel names are `k<n>_<ops>`
    after `prefix` (to put several graphs' kernels in one translation unit)."""
    if dtype not in CTYPES:
        raise ValueError(f"dtype must be float32 or float64, not {dtype!r}")
    roots = graph.roots()
    items = schedule(roots)
    used = {n.id for item in items for n in _nodes(item)}
    leaves = [n for n in graph.leaves.values() if n.id in used]
    return CudaGen(graph.axes, dtype, roots, items, leaves, prefix).program()


def kernel_sources(graph: Graph, dtype: str, prefix: str = "") -> dict[str, str]:
    """Every kernel of the graph's program by name; each source compiles on its own."""
    return build_program(graph, dtype, prefix).kernels


def module_source(graph: Graph, dtype: str, prefix: str = "") -> str:
    """All kernels of the graph in one translation unit (what CuPy's RawModule compiles)."""
    return build_program(graph, dtype, prefix).source()


def _nodes(item) -> list[Node]:
    return [item.node] if isinstance(item, Bulk) else item.nodes


# ---- one kernel --------------------------------------------------------------------------
_INLINE = {"const", "batch_size", "axis_size"}


class Kernel:
    """A kernel being written: its extent (index variables and sizes, outermost first), its
    body, and the buffers it reads and writes (found as the body refers to them)."""

    def __init__(self, gen: CudaGen, name: str, extent: list[tuple[str, Dim]]):
        self.gen = gen
        self.name = name
        self.extent = extent
        self.lines: list[str] = []
        self.depth = 2
        self.reads: dict[int, Node] = {}
        self.writes: dict[int, Node] = {}

    # -- writing the body
    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def open(self, header: str) -> None:
        self.emit(header + " {")
        self.depth += 1

    def close(self, levels: int = 1) -> None:
        for _ in range(levels):
            self.depth -= 1
            self.emit("}")

    def loop(self, var: str, stop: Dim, start: str | int = 0) -> None:
        self.open(f"for ({INDEX} {var} = {start}; {var} < {stop}; ++{var})")

    def lit(self, value: float) -> str:
        return literal(value, self.gen.dtype)

    def cast(self, size: str) -> str:
        return f"(({self.gen.T}){size})"

    @property
    def T(self) -> str:
        return self.gen.T

    def axis_var(self, axis: str) -> str:
        return self.gen.axis_var(axis)

    def ref(self, node: Node, elems, override=None, batch_var: str = "ib") -> str:
        """The element of `node` at the current indices; dimensions where it does not vary
        are left out (index 0 of a size-1 dimension). Constants are inlined, slices read in
        place are read from their operand."""
        if node.op in _INLINE:
            return self._inline(node)
        if node.id in self.gen.views:
            elems = list(elems)
            shifted = elems[:-1] + [f"{node.attrs['start']} + {elems[-1]}"]
            return self.ref(node.inputs[0], shifted, override, batch_var)
        self.reads.setdefault(node.id, node)
        return self.index(node, elems, override, batch_var)

    def index(self, node: Node, elems, override=None, batch_var: str = "ib") -> str:
        override = override or {}
        g = self.gen
        terms: list[tuple[Dim, str]] = []
        for a in g.axes:
            if a in node.axes:
                terms.append((f"S_{a}", override.get(a, g.axis_var(a))))
        if node.batched:
            terms.append(("B", batch_var))
        elems = list(elems)
        if len(elems) != len(node.shape):
            raise AssertionError(f"{node!r} indexed with {elems}")
        terms.extend(zip(node.shape, elems))
        offset = ""
        for size, var in terms:
            var = str(var) if _SIMPLE.fullmatch(str(var)) else f"({var})"
            offset = var if not offset else f"({offset}) * {size} + {var}"
        return f"{g.names[node.id]}[{offset or 0}]"

    def _inline(self, node: Node) -> str:
        if node.op == "const":
            return self.lit(node.attrs["value"])
        if node.op == "batch_size":
            return self.cast("B")
        return self.cast(f"S_{node.attrs['axis']}")

    def write(self, node: Node, elems, expr: str) -> None:
        self.writes.setdefault(node.id, node)
        self.emit(f"{self.index(node, elems)} = {expr};")

    # -- the finished source
    def source(self) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
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
        for node in list(leaves) + [n for item in items for n in _nodes(item)]:
            self.number.setdefault(node.id, len(self.number))
        self.names = {i: f"v{k}" for i, k in self.number.items()}
        self.virtual = gemm_gradients(items, self.users, self.root_ids)
        self.views = slice_views(items, self.users, self.root_ids, _VIEW_USERS)
        self.kernels: dict[str, str] = {}
        self.buffers: dict[int, tuple[Dim, ...]] = {}
        self.steps: list[Step] = []

    # ---- helpers shared with the op templates
    def axis_var(self, axis: str) -> str:
        return self.fixed.get(axis, f"i_{axis}")

    def alloc_dims(self, node: Node) -> tuple[Dim, ...]:
        dims: list[Dim] = [f"S_{a}" if a in node.axes else 1 for a in self.axes]
        dims.append("B" if node.batched else 1)
        dims.extend(node.shape)
        return tuple(dims)

    def lead(self, node: Node) -> list[tuple[str, Dim]]:
        """The free leading dimensions of a node's nest: its axes not fixed by a loop, and
        the batch."""
        dims: list[tuple[str, Dim]] = [
            (f"i_{a}", f"S_{a}") for a in self.axes if a in node.axes and a not in self.fixed
        ]
        if node.batched:
            dims.append(("ib", "B"))
        return dims

    def nest(self, node: Node, shape=None, names=None) -> tuple[list[tuple[str, Dim]], list]:
        """Extent over the leading dimensions and `shape` (the node's own by default)."""
        shape = node.shape if shape is None else shape
        names = names or [f"e{k}" for k in range(len(shape))]
        return self.lead(node) + list(zip(names, shape)), names

    def kernel(self, node: Node, extent, tag: str | None = None) -> Kernel:
        return Kernel(self, f"{self.prefix}k{self.number[node.id]}_{tag or node.op}", extent)

    def finish(self, k: Kernel, append: bool = True) -> Launch:
        source, outputs, inputs = k.source()
        self.kernels[k.name] = source
        for i in outputs:
            self.buffers.setdefault(i, self.alloc_dims(k.writes[i]))
        extent = tuple(size for _, size in k.extent)
        launch = Launch(k.name, extent, outputs, inputs)
        if append:
            self.current.append(launch)
        return launch

    def needs_buffer(self, node: Node, group_ids: set[int]) -> bool:
        return node.id in self.root_ids or any(u.id not in group_ids for u in self.users[node.id])

    def add(self, step: Step, out: Node) -> None:
        self.buffers.setdefault(out.id, self.alloc_dims(out))
        self.current.append(step)

    # ---- the program
    def program(self) -> Program:
        self.current = self.steps
        bulk: list[Node] = []
        for item in self.items:
            if isinstance(item, Bulk):
                bulk.append(item.node)
                continue
            self._emit_nodes(bulk)
            bulk = []
            self._loop(item)
        self._emit_nodes(bulk)
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
        for unit in fusion_units(nodes, self.virtual | self.views):
            if OPS[unit[0].op].elementwise:
                self._elementwise_group(unit)
            else:
                self._node(unit[0])

    def _elementwise_group(self, group: list[Node]) -> None:
        head = group[0]
        ids = {n.id for n in group}
        extent, elems = self.nest(head)
        tag = "_".join(dict.fromkeys(n.op for n in group[:3]))
        k = self.kernel(head, extent, tag)
        temps: dict[int, str] = {}
        for n in group:
            operands = [
                temps[i.id] if i.id in temps else k.ref(i, elems if i.shape else [])
                for i in n.inputs
            ]
            tmp = f"s{self.number[n.id]}"
            k.emit(f"const {self.T} {tmp} = {scalar_c(OPS[n.op].scalar, operands, self.dtype)};")
            temps[n.id] = tmp
        for n in group:
            if self.needs_buffer(n, ids):
                k.write(n, elems, temps[n.id])
        self.finish(k)

    def _node(self, node: Node) -> None:
        lower = templates().get(node.op)
        if lower is None:
            raise NotImplementedError(f"no CUDA template for op '{node.op}'")
        lower(self, node)


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


def templates() -> dict:
    """`cuda_<op>` functions of this module, by op name."""
    return {name[5:]: fn for name, fn in globals().items() if name.startswith("cuda_")}


# ---- linear algebra ----------------------------------------------------------------------
def uses_gemm(g: CudaGen, n: Node) -> bool:
    """loopgen's BLAS rule: a parameter matrix times per-example vectors of the same context,
    over all steps (bulk), or over one step of a recurrence along the graph's only axis."""
    a, v = n.inputs
    if not (_static_matrix(a) and v.context == n.context and n.batched):
        return False
    if not g.fixed:
        return True
    return len(g.axes) == 1 and set(g.fixed) == set(g.axes) and set(g.axes) <= n.axes


def _static_matrix(node: Node) -> bool:
    return node.context == STATIC and len(node.shape) == 2


def cuda_matmul(g: CudaGen, n: Node) -> None:
    """A GEMM in bulk; in a recurrence a GEMM or a kernel, chosen per call by the work per
    step; otherwise a kernel, one thread per output element."""
    a, v = n.inputs
    m, k_ = a.shape
    gemm = uses_gemm(g, n)
    if gemm and not g.fixed:
        g.add(MatVec(n.id, a.id, v.id, m, k_), n)
        return
    extent, _ = g.nest(n)
    k = g.kernel(n, extent)
    k.emit(f"{k.T} acc = {k.lit(0.0)};")
    k.loop("e1", k_)
    k.emit(f"acc += {k.ref(a, ['e0', 'e1'])} * {k.ref(v, ['e1'])};")
    k.close()
    k.write(n, ["e0"], "acc")
    launch = g.finish(k, append=not gemm)
    if gemm:
        g.add(MatVec(n.id, a.id, v.id, m, k_, small=launch), n)


def cuda_outer(g: CudaGen, n: Node) -> None:
    a, b = n.inputs
    extent, elems = g.nest(n)
    k = g.kernel(n, extent)
    k.write(n, elems, f"{k.ref(a, elems[:1])} * {k.ref(b, elems[1:])}")
    g.finish(k)


def cuda_transpose(g: CudaGen, n: Node) -> None:
    extent, elems = g.nest(n)
    k = g.kernel(n, extent)
    k.write(n, elems, k.ref(n.inputs[0], elems[::-1]))
    g.finish(k)


# ---- structure ---------------------------------------------------------------------------
def cuda_concat(g: CudaGen, n: Node) -> None:
    """One kernel over the output; the last index picks the operand."""
    extent, elems = g.nest(n)
    k = g.kernel(n, extent)
    last, start = elems[-1], 0
    k.emit(f"{k.T} val;")
    for j, x in enumerate(n.inputs):
        src = k.ref(x, elems[:-1] + [f"{last} - {start}" if start else last])
        stop = start + x.shape[-1]
        if j == 0:
            k.emit(f"if ({last} < {stop}) val = {src};")
        elif j < len(n.inputs) - 1:
            k.emit(f"else if ({last} < {stop}) val = {src};")
        else:
            k.emit(f"else val = {src};")
        start = stop
    k.write(n, elems, "val")
    g.finish(k)


def cuda_slice(g: CudaGen, n: Node) -> None:
    extent, elems = g.nest(n)
    k = g.kernel(n, extent)
    start = n.attrs["start"]
    last = f"{start} + {elems[-1]}" if start else elems[-1]
    k.write(n, elems, k.ref(n.inputs[0], elems[:-1] + [last]))
    g.finish(k)


def cuda_pad(g: CudaGen, n: Node) -> None:
    (x,) = n.inputs
    before, size = n.attrs["before"], x.shape[-1]
    extent, elems = g.nest(n)
    k = g.kernel(n, extent)
    last = elems[-1]
    src = k.ref(x, elems[:-1] + [f"{last} - {before}" if before else last])
    inside = f"{before} <= {last} && {last} < {before + size}"
    k.write(n, elems, f"({inside}) ? {src} : {k.lit(0.0)}")
    g.finish(k)


def _sum_elems(g: CudaGen, n: Node, count: int | None) -> None:
    (x,) = n.inputs
    k = g.kernel(n, g.lead(n))
    k.emit(f"{k.T} acc = {k.lit(0.0)};")
    rs = [f"r{j}" for j in range(len(x.shape))]
    for r, d in zip(rs, x.shape):
        k.loop(r, d)
    k.emit(f"acc += {k.ref(x, rs)};")
    k.close(len(rs))
    k.write(n, [], f"acc / {k.lit(count)}" if count else "acc")
    g.finish(k)


def cuda_sum(g: CudaGen, n: Node) -> None:
    _sum_elems(g, n, None)


def cuda_mean(g: CudaGen, n: Node) -> None:
    _sum_elems(g, n, math.prod(n.inputs[0].shape))


def cuda_expand(g: CudaGen, n: Node) -> None:
    (x,) = n.inputs
    extent, elems = g.nest(n)
    k = g.kernel(n, extent)
    k.write(n, elems, k.ref(x, elems if x.shape else []))
    g.finish(k)


def _reduced_loops(k: Kernel, src: Node, dst: Node, axes=None) -> tuple[int, dict, str]:
    """Open loops over the axes/batch that `src` has and `dst` lacks; returns the overrides."""
    g = k.gen
    override, opened = {}, 0
    for a in g.axes:
        if a in src.axes and a not in dst.axes and (axes is None or a in axes):
            k.loop(f"r_{a}", f"S_{a}")
            override[a] = f"r_{a}"
            opened += 1
    batch_var = "ib"
    if src.batched and not dst.batched:
        k.loop("rb", "B")
        batch_var, opened = "rb", opened + 1
    return opened, override, batch_var


def cuda_reduce_to(g: CudaGen, n: Node) -> None:
    (x,) = n.inputs
    if x.id in g.virtual:
        a, b = x.inputs
        m, k_ = x.shape
        g.add(WeightGrad(n.id, a.id, b.id, m, k_), n)
        return
    extent, elems = g.nest(n)
    k = g.kernel(n, extent)
    k.emit(f"{k.T} acc = {k.lit(0.0)};")
    inner, override, batch_var = _reduced_loops(k, x, n)
    src_elems = elems
    if x.shape and not n.shape:
        src_elems = [f"r{j}" for j in range(len(x.shape))]
        for r, d in zip(src_elems, x.shape):
            k.loop(r, d)
        inner += len(src_elems)
    k.emit(f"acc += {k.ref(x, src_elems, override, batch_var)};")
    k.close(inner)
    k.write(n, elems, "acc")
    g.finish(k)


# ---- neural-network ops ------------------------------------------------------------------
def _log_sum_exp(k: Kernel, x: Node, size: int) -> None:
    f = "f" if k.gen.dtype == "float32" else ""
    k.emit(f"{k.T} mx = {k.ref(x, ['0'])};")
    k.loop("r0", size, 1)
    k.emit(f"mx = fmax{f}(mx, {k.ref(x, ['r0'])});")
    k.close()
    k.emit(f"{k.T} se = {k.lit(0.0)};")
    k.loop("r0", size)
    k.emit(f"se += exp{f}({k.ref(x, ['r0'])} - mx);")
    k.close()
    k.emit(f"const {k.T} lse = mx + log{f}(se);")


def _softmax_like(g: CudaGen, n: Node, formula: str) -> None:
    """One thread per vector: the log-sum-exp, then every element."""
    (x,) = n.inputs
    k = g.kernel(n, g.lead(n))
    _log_sum_exp(k, x, x.shape[0])
    k.loop("e0", x.shape[0])
    f = "f" if g.dtype == "float32" else ""
    k.write(n, ["e0"], formula.format(k.ref(x, ["e0"]), f=f))
    k.close()
    g.finish(k)


def cuda_softmax(g: CudaGen, n: Node) -> None:
    _softmax_like(g, n, "exp{f}({0} - lse)")


def cuda_log_softmax(g: CudaGen, n: Node) -> None:
    _softmax_like(g, n, "{0} - lse")


def cuda_softmax_cross_entropy(g: CudaGen, n: Node) -> None:
    o, y = n.inputs
    k = g.kernel(n, g.lead(n))
    _log_sum_exp(k, o, o.shape[0])
    k.emit(f"{k.T} acc = {k.lit(0.0)};")
    k.loop("r0", o.shape[0])
    k.emit(f"acc -= {k.ref(y, ['r0'])} * ({k.ref(o, ['r0'])} - lse);")
    k.close()
    k.write(n, [], "acc")
    g.finish(k)


def cuda_mse(g: CudaGen, n: Node) -> None:
    o, y = n.inputs
    k = g.kernel(n, g.lead(n))
    k.emit(f"{k.T} acc = {k.lit(0.0)};")
    k.loop("r0", o.shape[0])
    k.emit(f"const {k.T} d = {k.ref(o, ['r0'])} - {k.ref(y, ['r0'])};")
    k.emit("acc += d * d;")
    k.close()
    k.write(n, [], f"acc / {k.lit(o.shape[0])}")
    g.finish(k)


# ---- axes and batch ----------------------------------------------------------------------
def cuda_delay(g: CudaGen, n: Node) -> None:
    v, init = n.inputs
    axis, offset = n.attrs["axis"], n.attrs["offset"]
    extent, elems = g.nest(n)
    k = g.kernel(n, extent)
    k.emit(f"const {INDEX} src = {k.axis_var(axis)} + ({offset});")
    inside = f"0 <= src && src < S_{axis}"
    k.write(n, elems, f"({inside}) ? {k.ref(v, elems, {axis: 'src'})} : {k.ref(init, elems)}")
    g.finish(k)


def _boundary(axis: str, offset: int) -> tuple[str, str]:
    """[lo, hi): the steps where a delay by `offset` reads its initial value."""
    size, j = f"S_{axis}", abs(offset)
    if offset < 0:
        return "0", f"({j} < {size} ? {j} : {size})"
    return f"({size} > {j} ? {size} - {j} : 0)", size


def cuda_edge_sum(g: CudaGen, n: Node) -> None:
    (x,) = n.inputs
    axis = n.attrs["axis"]
    lo, hi = _boundary(axis, n.attrs["offset"])
    extent, elems = g.nest(n)
    k = g.kernel(n, extent)
    if axis in x.axes:
        k.emit(f"{k.T} acc = {k.lit(0.0)};")
        k.loop(f"r_{axis}", hi, lo)
        k.emit(f"acc += {k.ref(x, elems, {axis: f'r_{axis}'})};")
        k.close()
    else:
        k.emit(f"const {k.T} acc = {k.cast(f'({hi} - {lo})')} * {k.ref(x, elems)};")
    k.write(n, elems, "acc")
    g.finish(k)


def _conditional_copy(g: CudaGen, n: Node, condition: str) -> None:
    (x,) = n.inputs
    extent, elems = g.nest(n)
    k = g.kernel(n, extent)
    k.write(n, elems, f"({condition}) ? {k.ref(x, elems)} : {k.lit(0.0)}")
    g.finish(k)


def cuda_edge_fill(g: CudaGen, n: Node) -> None:
    axis = n.attrs["axis"]
    lo, hi = _boundary(axis, n.attrs["offset"])
    var = g.axis_var(axis)
    _conditional_copy(g, n, f"{lo} <= {var} && {var} < {hi}")


def _position(axis: str, index: int) -> str:
    return f"(S_{axis} - {-index})" if index < 0 else str(index - 1)


def cuda_place(g: CudaGen, n: Node) -> None:
    axis = n.attrs["axis"]
    _conditional_copy(g, n, f"{g.axis_var(axis)} == {_position(axis, n.attrs['index'])}")


def cuda_at(g: CudaGen, n: Node) -> None:
    (x,) = n.inputs
    axis = n.attrs["axis"]
    extent, elems = g.nest(n)
    k = g.kernel(n, extent)
    k.write(n, elems, k.ref(x, elems, {axis: _position(axis, n.attrs["index"])}))
    g.finish(k)


def cuda_expand_axis(g: CudaGen, n: Node) -> None:
    (x,) = n.inputs
    extent, elems = g.nest(n)
    k = g.kernel(n, extent)
    k.write(n, elems, k.ref(x, elems))
    g.finish(k)


def cuda_broadcast(g: CudaGen, n: Node) -> None:
    cuda_expand_axis(g, n)


def cuda_reduce_axis(g: CudaGen, n: Node) -> None:
    (x,) = n.inputs
    axis = n.attrs["axis"]
    extent, elems = g.nest(n)
    k = g.kernel(n, extent)
    if axis in x.axes:
        k.emit(f"{k.T} acc = {k.lit(0.0)};")
        k.loop(f"r_{axis}", f"S_{axis}")
        k.emit(f"acc += {k.ref(x, elems, {axis: f'r_{axis}'})};")
        k.close()
    else:
        k.emit(f"const {k.T} acc = {k.cast(f'S_{axis}')} * {k.ref(x, elems)};")
    mean = n.attrs["kind"] == "mean"
    k.write(n, elems, f"acc / {k.cast(f'S_{axis}')}" if mean else "acc")
    g.finish(k)


def cuda_batch_mean(g: CudaGen, n: Node) -> None:
    """The mean over the batch; a value that does not vary over it is its own mean."""
    (x,) = n.inputs
    extent, elems = g.nest(n)
    k = g.kernel(n, extent)
    if x.batched:
        k.emit(f"{k.T} acc = {k.lit(0.0)};")
        k.loop("rb", "B")
        k.emit(f"acc += {k.ref(x, elems, batch_var='rb')};")
        k.close()
        k.write(n, elems, f"acc / {k.cast('B')}")
    else:
        k.write(n, elems, k.ref(x, elems))
    g.finish(k)


def cuda_const(g: CudaGen, n: Node) -> None:
    g.add(Fill(n.id, float(n.attrs["value"])), n)


def cuda_batch_size(g: CudaGen, n: Node) -> None:
    g.add(Fill(n.id, "B"), n)


def cuda_axis_size(g: CudaGen, n: Node) -> None:
    g.add(Fill(n.id, f"S_{n.attrs['axis']}"), n)


# ---- convolution, pooling and channel ops (ir/ops/conv.py; cf. loopgen_conv.py) ----------
def _geometry(n: Node):
    from graphrnn.ir.ops.conv import geometry_of

    return geometry_of(n)


def _offset(out: str, stride: int, tap: str, dilation: int, pad: int) -> str:
    expr = out if stride == 1 else f"{out} * {stride}"
    expr += f" + {tap}" if dilation == 1 else f" + {tap} * {dilation}"
    return f"{expr} - {pad}" if pad else expr


def _open_tap(k: Kernel, var: str, out: str, tap: str, size: int, geo, d: int) -> None:
    """`var` = the input coordinate of output `out` and tap `tap`; opens `if` it is inside."""
    off = _offset(out, geo.stride[d], tap, geo.dilation[d], geo.padding[d])
    k.emit(f"const {INDEX} {var} = {off};")
    k.open(f"if (0 <= {var} && {var} < {size})")


def _open_source(k: Kernel, var: str, pos: str, tap: str, limit: int, geo, d: int) -> int:
    """For the transposed ops: the output `var` whose tap reads input `pos`; opens the ifs
    that require it to exist and returns how many levels it opened."""
    stride, dilation, pad = geo.stride[d], geo.dilation[d], geo.padding[d]
    t = tap if dilation == 1 else f"{tap} * {dilation}"
    source = f"{pos} + {pad} - {t}" if pad else f"{pos} - {t}"
    if stride == 1:
        k.emit(f"const {INDEX} {var} = {source};")
        k.open(f"if (0 <= {var} && {var} < {limit})")
        return 1
    k.emit(f"const {INDEX} q{var} = {source};")
    k.open(f"if (q{var} >= 0 && q{var} % {stride} == 0)")
    k.emit(f"const {INDEX} {var} = q{var} / {stride};")
    k.open(f"if ({var} < {limit})")
    return 2


def cuda_conv2d(g: CudaGen, n: Node) -> None:
    x, w = n.inputs
    geo = _geometry(n)
    c, h, wd = x.shape
    kh, kw = geo.kernel
    extent, _ = g.nest(n, names=["cf", "oh", "ow"])
    k = g.kernel(n, extent)
    k.emit(f"{k.T} acc = {k.lit(0.0)};")
    k.loop("cc", c)
    k.loop("ki", kh)
    _open_tap(k, "ih", "oh", "ki", h, geo, 0)
    k.loop("kj", kw)
    _open_tap(k, "iw", "ow", "kj", wd, geo, 1)
    k.emit(f"acc += {k.ref(x, ['cc', 'ih', 'iw'])} * {k.ref(w, ['cf', 'cc', 'ki', 'kj'])};")
    k.close(5)
    k.write(n, ["cf", "oh", "ow"], "acc")
    g.finish(k)


def cuda_conv2d_input_grad(g: CudaGen, n: Node) -> None:
    gy, w = n.inputs
    geo = _geometry(n)
    f, ho, wo = gy.shape
    kh, kw = geo.kernel
    extent, _ = g.nest(n, names=["cc", "ih", "iw"])
    k = g.kernel(n, extent)
    k.emit(f"{k.T} acc = {k.lit(0.0)};")
    k.loop("ki", kh)
    inner = 1 + _open_source(k, "oh", "ih", "ki", ho, geo, 0)
    k.loop("kj", kw)
    inner += 1 + _open_source(k, "ow", "iw", "kj", wo, geo, 1)
    k.loop("cf", f)
    k.emit(f"acc += {k.ref(gy, ['cf', 'oh', 'ow'])} * {k.ref(w, ['cf', 'cc', 'ki', 'kj'])};")
    k.close(inner + 1)
    k.write(n, ["cc", "ih", "iw"], "acc")
    g.finish(k)


def cuda_conv2d_weight_grad(g: CudaGen, n: Node) -> None:
    x, gy = n.inputs
    geo = _geometry(n)
    _, h, wd = x.shape
    _, ho, wo = gy.shape
    extent, _ = g.nest(n, names=["cf", "cc", "ki", "kj"])
    k = g.kernel(n, extent)
    k.emit(f"{k.T} acc = {k.lit(0.0)};")
    k.loop("oh", ho)
    _open_tap(k, "ih", "oh", "ki", h, geo, 0)
    k.loop("ow", wo)
    _open_tap(k, "iw", "ow", "kj", wd, geo, 1)
    k.emit(f"acc += {k.ref(x, ['cc', 'ih', 'iw'])} * {k.ref(gy, ['cf', 'oh', 'ow'])};")
    k.close(4)
    k.write(n, ["cf", "cc", "ki", "kj"], "acc")
    g.finish(k)


def _window_argmax(k: Kernel, x: Node, geo, cell: bool = True) -> None:
    """mx = the maximum of the window (oh, ow) and, if `cell`, (bh, bw) = the first cell
    holding it (bh < 0 until a cell inside the image has been seen)."""
    kh, kw = geo.kernel
    _, h, wd = x.shape
    k.emit(f"{k.T} mx = {k.lit(0.0)};")
    k.emit(f"{INDEX} bh = -1;")
    if cell:
        k.emit(f"{INDEX} bw = -1;")
    k.loop("ki", kh)
    _open_tap(k, "ih", "oh", "ki", h, geo, 0)
    k.loop("kj", kw)
    _open_tap(k, "iw", "ow", "kj", wd, geo, 1)
    k.emit(f"const {k.T} xv = {k.ref(x, ['cc', 'ih', 'iw'])};")
    k.open("if (xv > mx || bh < 0)")
    k.emit("mx = xv;")
    k.emit("bh = ih;")
    if cell:
        k.emit("bw = iw;")
    k.close(5)


def _pool_kernel(g: CudaGen, n: Node) -> Kernel:
    extent, _ = g.nest(n, names=["cc", "oh", "ow"])
    return g.kernel(n, extent)


def cuda_maxpool2d(g: CudaGen, n: Node) -> None:
    k = _pool_kernel(g, n)
    _window_argmax(k, n.inputs[0], _geometry(n), cell=False)
    k.write(n, ["cc", "oh", "ow"], "mx")
    g.finish(k)


def cuda_maxpool2d_gather(g: CudaGen, n: Node) -> None:
    x, u = n.inputs
    k = _pool_kernel(g, n)
    _window_argmax(k, x, _geometry(n))
    k.write(n, ["cc", "oh", "ow"], k.ref(u, ["cc", "bh", "bw"]))
    g.finish(k)


def cuda_maxpool2d_grad(g: CudaGen, n: Node) -> None:
    """One thread per (step, example, channel): it zeroes its own slice, then adds each
    output's adjoint at its window's argmax, so no two threads write one element."""
    x, gy = n.inputs
    c, h, wd = n.shape
    _, ho, wo = gy.shape
    geo = _geometry(n)
    k = g.kernel(n, g.lead(n) + [("cc", c)])
    k.loop("ih", h)
    k.loop("iw", wd)
    k.write(n, ["cc", "ih", "iw"], k.lit(0.0))
    k.close(2)
    k.loop("oh", ho)
    k.loop("ow", wo)
    _window_argmax(k, x, geo)
    k.emit(f"{k.index(n, ['cc', 'bh', 'bw'])} += {k.ref(gy, ['cc', 'oh', 'ow'])};")
    k.close(2)
    g.finish(k)


def cuda_avgpool2d(g: CudaGen, n: Node) -> None:
    (x,) = n.inputs
    geo = _geometry(n)
    kh, kw = geo.kernel
    _, h, wd = x.shape
    k = _pool_kernel(g, n)
    k.emit(f"{k.T} acc = {k.lit(0.0)};")
    k.loop("ki", kh)
    _open_tap(k, "ih", "oh", "ki", h, geo, 0)
    k.loop("kj", kw)
    _open_tap(k, "iw", "ow", "kj", wd, geo, 1)
    k.emit(f"acc += {k.ref(x, ['cc', 'ih', 'iw'])};")
    k.close(4)
    k.write(n, ["cc", "oh", "ow"], f"acc / {k.lit(kh * kw)}")
    g.finish(k)


def cuda_avgpool2d_grad(g: CudaGen, n: Node) -> None:
    (gy,) = n.inputs
    geo = _geometry(n)
    kh, kw = geo.kernel
    _, ho, wo = gy.shape
    extent, _ = g.nest(n, names=["cc", "ih", "iw"])
    k = g.kernel(n, extent)
    k.emit(f"{k.T} acc = {k.lit(0.0)};")
    k.loop("ki", kh)
    inner = 1 + _open_source(k, "oh", "ih", "ki", ho, geo, 0)
    k.loop("kj", kw)
    inner += 1 + _open_source(k, "ow", "iw", "kj", wo, geo, 1)
    k.emit(f"acc += {k.ref(gy, ['cc', 'oh', 'ow'])};")
    k.close(inner)
    k.write(n, ["cc", "ih", "iw"], f"acc / {k.lit(kh * kw)}")
    g.finish(k)


def _channel_reduce(g: CudaGen, n: Node, divisor: float | None) -> None:
    (x,) = n.inputs
    _, h, wd = x.shape
    k = g.kernel(n, g.lead(n) + [("cc", n.shape[0])])
    k.emit(f"{k.T} acc = {k.lit(0.0)};")
    k.loop("ih", h)
    k.loop("iw", wd)
    k.emit(f"acc += {k.ref(x, ['cc', 'ih', 'iw'])};")
    k.close(2)
    k.write(n, ["cc"], f"acc / {k.lit(divisor)}" if divisor else "acc")
    g.finish(k)


def cuda_global_avgpool(g: CudaGen, n: Node) -> None:
    _, h, wd = n.inputs[0].shape
    _channel_reduce(g, n, float(h * wd))


def cuda_channel_sum(g: CudaGen, n: Node) -> None:
    _channel_reduce(g, n, None)


def cuda_channel_expand(g: CudaGen, n: Node) -> None:
    (v,) = n.inputs
    extent, _ = g.nest(n, names=["cc", "ih", "iw"])
    k = g.kernel(n, extent)
    k.write(n, ["cc", "ih", "iw"], k.ref(v, ["cc"]))
    g.finish(k)


def cuda_batch_mean_per_channel(g: CudaGen, n: Node) -> None:
    """Mean over the batch (when x has one), H and W; the step axes stay those of the node."""
    (x,) = n.inputs
    _, h, wd = x.shape
    k = g.kernel(n, g.lead(n) + [("cc", n.shape[0])])
    k.emit(f"{k.T} acc = {k.lit(0.0)};")
    levels = 2
    if x.batched:
        k.loop("rb", "B")
        levels += 1
    k.loop("ih", h)
    k.loop("iw", wd)
    k.emit(f"acc += {k.ref(x, ['cc', 'ih', 'iw'], batch_var='rb')};")
    k.close(levels)
    count = f"({k.cast('B')} * {k.lit(h * wd)})" if x.batched else k.lit(h * wd)
    k.write(n, ["cc"], f"acc / {count}")
    g.finish(k)


# ---- grid ops (ir/ops/grid.py; cf. loopgen_grid.py) --------------------------------------
def cuda_patches(g: CudaGen, n: Node) -> None:
    """p[.., i, j, b, c*ph*pw + di*pw + dj] = x[.., b, c, i*ph + di, j*pw + dj]"""
    (x,) = n.inputs
    a = n.attrs
    ph, pw = a["ph"], a["pw"]
    extent, _ = g.nest(n, shape=(x.shape[0], ph, pw), names=["gc", "gdi", "gdj"])
    k = g.kernel(n, extent)
    ri, cj = (g.axis_var(axis) for axis in a["axes"])
    src = k.ref(x, ["gc", f"{ri} * {ph} + gdi", f"{cj} * {pw} + gdj"])
    k.write(n, [f"gc * {ph * pw} + gdi * {pw} + gdj"], src)
    g.finish(k)


def cuda_grid(g: CudaGen, n: Node) -> None:
    """out[.., b, k // (ph*pw), r*ph + (k // pw) % ph, c*pw + k % pw] = v[.., r, c, b, k]"""
    (v,) = n.inputs
    a = n.attrs
    ph, pw = a.get("ph", 1), a.get("pw", 1)
    row_axis, col_axis = a["axes"]
    dims = [("gr", a["rows"]), ("gq", a["cols"]), ("gk", v.shape[0])]
    k = g.kernel(n, g.lead(n) + dims)
    src = k.ref(v, ["gk"], override={row_axis: "gr", col_axis: "gq"})
    if ph == pw == 1:
        dst = ["gk", "gr", "gq"]
    else:
        dst = [f"gk / {ph * pw}", f"gr * {ph} + (gk / {pw}) % {ph}", f"gq * {pw} + gk % {pw}"]
    k.write(n, dst, src)
    g.finish(k)
