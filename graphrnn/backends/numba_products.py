"""The Numba backend's own kernels, where its algorithm differs from graphrnn/kernels/:
products and transposes that go to BLAS (numba's np.dot) or to a contiguous copy, small
per-step products written as sums of rows, parameter gradients as one GEMM, and the
whole-array fills of constants and sizes.

Each entry of `OWN` prints the node and returns True, or returns False to leave it to the
op's shared kernel.
"""

from __future__ import annotations

from graphrnn.backends.numba_printer import NumbaPrinter
from graphrnn.backends.planning import (
    BLAS_MIN_STEP,
    blas_product,
    is_static_matrix,
    summed_outer,
)
from graphrnn.ir.node import STATIC, Node
from graphrnn.ir.registry import OPS
from graphrnn.kernels import linalg
from graphrnn.kernels.common import loops, per_example, reduced


def computes_per_example(g: NumbaPrinter, n: Node) -> bool:
    """True if the node is printed as a nest over its (step, example) points, so that it can
    share those loops with its neighbours; False for library calls on whole arrays."""
    if OPS[n.op].whole_array or n.id in g.virtual:
        return False
    if n.op == "matmul":
        return not blas_product(n, g.axes, g.fixed)
    if n.op == "transpose":
        return not is_static_matrix(n)
    if n.op == "reduce_to":
        return n.inputs[0].id not in g.virtual
    return True


def matmul(g: NumbaPrinter, n: Node) -> bool:
    """A BLAS GEMM in bulk; in a recurrence BLAS or loops, chosen per call by the work per
    step; otherwise loops."""
    a, v = n.inputs
    m, k = a.shape
    if not blas_product(n, g.axes, g.fixed):
        _loops(g, n)
        return True
    at = f"{g.buf(a)}.reshape(({m}, {k})).T"
    if not g.fixed:
        g.alloc(n)
        flat = f"{g.buf(v)}.reshape((-1, {k}))"
        g.emit(f"np.dot({flat}, {at}, {g.buf(n)}.reshape((-1, {m})))")
        return True
    t = next(iter(g.fixed.values()))
    g.alloc(n)
    g.open(f"if B * {m * k} >= {BLAS_MIN_STEP}:")
    g.emit(f"np.dot({g.buf(v)}[{t}], {at}, {g.buf(n)}[{t}])")
    g.close()
    g.open("else:")
    _loops(g, n)
    g.close()
    return True


def _loops(g: NumbaPrinter, n: Node) -> None:
    """A small product as loops. With the matrix readable transposed (row e1 contiguous in
    e0) it is a sum of scaled rows, out += A^T[e1, :] * v[e1], which vectorises over the
    outputs; a dot product per output (the shared kernel) would end every row in a horizontal
    reduction, about six times slower for a 128 x 32 product on these machines."""
    a, v = n.inputs
    m, k = a.shape
    b = per_example(n)
    column = _transposed_reader(g, b, a)
    if column is None:
        g.print_nests(linalg.matmul(n))
        return
    with b.loop("e0", m) as e0:
        b.store(n, [e0], "ZERO")
    with b.loop("e1", k) as e1:
        d = b.let("d", b.ref(v, [e1]))
        with b.loop("e0", m) as e0:
            b.store(n, [e0], f"{column(e1, e0)} * {d}", "+=")
    g.print_nest(b.nest)


def _transposed_reader(g: NumbaPrinter, b, a: Node):
    """A function (row, col) -> an element of A^T, if A^T is in memory row by row: A is the
    transpose of a static matrix, or the loop made a transposed copy (LoopGen)."""
    if a.op == "transpose" and is_static_matrix(a.inputs[0]):
        inner = a.inputs[0]
        return lambda r, c: b.ref(inner, [r, c])
    if a.id in g.transposed:
        name = g.transposed[a.id]
        return lambda r, c: f"{name}[{r}, {c}]"
    return None


def transpose(g: NumbaPrinter, n: Node) -> bool:
    """A static matrix is transposed once, as one contiguous copy."""
    if not is_static_matrix(n):
        return False
    (m, k), src = n.shape, g.buf(n.inputs[0])
    g.allocated.add(n.id)
    t = f"np.ascontiguousarray({src}.reshape(({k}, {m})).T)"
    g.emit(f"{g.buf(n)} = {t}.reshape({g.alloc_shape(n)})")
    return True


def outer(g: NumbaPrinter, n: Node) -> bool:
    """An outer product only summed into a gradient is never formed (see reduce_to)."""
    return n.id in g.virtual


def reduce_to(g: NumbaPrinter, n: Node) -> bool:
    """A parameter gradient sum_{t,b} outer(a, b) is one GEMM A^T B (A = a as [T*B, m], B
    likewise). Any other sum into a static vector or matrix (a bias gradient) adds whole rows
    of its operand, step by step and example by example: the shared kernel's sum per output
    element strides through memory, which a GPU thread per element reads coalesced but a CPU
    core reads one cache line per addition."""
    gemm = summed_outer(n, g.virtual)
    if gemm is None:
        return _rows_sum(g, n) if n.context == STATIC and n.shape else False
    a, b, m, k = gemm
    g.alloc(n)
    rows_a, rows_b = f"{g.buf(a)}.reshape((-1, {m})).T", f"{g.buf(b)}.reshape((-1, {k}))"
    g.emit(f"np.dot({rows_a}, {rows_b}, {g.buf(n)}.reshape(({m}, {k})))")
    return True


def _rows_sum(g: NumbaPrinter, n: Node) -> bool:
    (x,) = n.inputs
    names = [f"e{k}" for k in range(len(n.shape))]
    b = per_example(n)
    with loops(b, names, n.shape) as e:
        b.store(n, e, "ZERO")
    with reduced(b, x, n) as (override, batch), loops(b, names, n.shape) as e:
        b.store(n, e, b.ref(x, e, override, batch), "+=")
    g.print_nest(b.nest)
    return True


def _fill(g: NumbaPrinter, n: Node, value: str) -> bool:
    g.alloc(n)
    g.emit(f"{g.buf(n)}[...] = {value}")
    return True


OWN = {
    "matmul": matmul,
    "transpose": transpose,
    "outer": outer,
    "reduce_to": reduce_to,
    "const": lambda g, n: _fill(g, n, repr(n.attrs["value"])),
    "batch_size": lambda g, n: _fill(g, n, "B"),
    "axis_size": lambda g, n: _fill(g, n, f"S_{n.attrs['axis']}"),
}
