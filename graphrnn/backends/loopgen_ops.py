"""Loop-nest templates of the non-elementwise ops, one function per op (`lower_<op>`).

Elementwise ops need none: their formula is the op's `scalar` template. Every template
computes each output element from its inputs (reductions loop over the reduced range inside),
so none needs a zeroed buffer and all work the same inside a recurrence, where the step axis
is fixed to the loop variable.
"""

from __future__ import annotations

from graphrnn.backends.loopgen import BLAS_MIN_STEP, LoopGen, is_static_matrix
from graphrnn.ir.node import Node


def _nest(g: LoopGen, node: Node, shape=None) -> tuple[int, list[str]]:
    opened = g.lead_loops(node)
    k, elems = g.elem_loops(node.shape if shape is None else shape)
    return opened + k, elems


def _reduced_loops(
    g: LoopGen, src: Node, dst: Node, axes=None, batch=None
) -> tuple[int, dict, str]:
    """Open loops over the axes/batch that `src` has and `dst` lacks; returns the overrides."""
    override, opened = {}, 0
    for a in g.axes:
        if a in src.axes and a not in dst.axes and (axes is None or a in axes):
            g.open(f"for r_{a} in range(S_{a}):")
            override[a] = f"r_{a}"
            opened += 1
    batch_var = "ib"
    if src.batched and not dst.batched and batch is not False:
        g.open("for rb in range(B):")
        batch_var, opened = "rb", opened + 1
    return opened, override, batch_var


def _write(g: LoopGen, node: Node, elems, expr: str) -> None:
    g.emit(f"{g.ref(node, elems)} = {expr}")


_WHOLE_ARRAY = {"const", "batch_size", "axis_size"}


def computes_per_example(g: LoopGen, n: Node) -> bool:
    """True if the template computes one (step, example) at a time inside its leading loops,
    so that it can share them with its neighbours; False for library calls on whole arrays."""
    if n.op in _WHOLE_ARRAY or n.id in g.virtual:
        return False
    if n.op == "matmul":
        return not _uses_blas(g, n)
    if n.op == "transpose":
        return not is_static_matrix(n)
    if n.op == "reduce_to":
        return n.inputs[0].id not in g.virtual
    return True


def _uses_blas(g: LoopGen, n: Node) -> bool:
    """Products with a parameter matrix go to BLAS in bulk; inside a one-axis recurrence a
    runtime test on the batch size picks BLAS or a loop nest (a BLAS call costs about a
    microsecond, more than a small product)."""
    a, v = n.inputs
    if not (is_static_matrix(a) and v.context == n.context and n.batched):
        return False
    return not g.fixed or (len(g.axes) == 1 and set(g.fixed) == set(g.axes))


# ---- linear algebra ----------------------------------------------------------------------
def lower_matmul(g: LoopGen, n: Node) -> None:
    a, v = n.inputs
    m, k = a.shape
    if not _uses_blas(g, n):
        _matmul_loops(g, n)
        return
    at = f"{g.buf(a)}.reshape(({m}, {k})).T"
    if not g.fixed:
        g.allocated.add(n.id)
        flat = f"{g.buf(v)}.reshape((-1, {k}))"
        g.emit(f"{g.buf(n)} = np.dot({flat}, {at}).reshape({g.alloc_shape(n)})")
        return
    t = next(iter(g.fixed.values()))
    g.alloc(n)
    g.open(f"if B * {m * k} >= {BLAS_MIN_STEP}:")
    g.emit(f"np.dot({g.buf(v)}[{t}], {at}, {g.buf(n)}[{t}])")
    g.close()
    g.open("else:")
    _matmul_loops(g, n)
    g.close()


def _matmul_loops(g: LoopGen, n: Node) -> None:
    """A small product as loops. With the matrix readable transposed (row e1 contiguous in
    e0) it is a sum of scaled rows, out += A^T[e1, :] * v[e1], which vectorises over the
    outputs; a dot product per output would end every row in a horizontal reduction (about
    six times slower for a 128 x 32 product on these machines)."""
    a, v = n.inputs
    m, k = a.shape
    g.alloc(n)
    opened = g.lead_loops(n)
    column = transposed_reader(g, a)
    if column is None:
        g.open(f"for e0 in range({m}):")
        g.emit("acc = ZERO")
        g.open(f"for e1 in range({k}):")
        g.emit(f"acc += {g.ref(a, ['e0', 'e1'])} * {g.ref(v, ['e1'])}")
        g.close()
        _write(g, n, ["e0"], "acc")
        g.close(opened + 1)
        return
    g.open(f"for e0 in range({m}):")
    _write(g, n, ["e0"], "ZERO")
    g.close()
    g.open(f"for e1 in range({k}):")
    g.emit(f"d = {g.ref(v, ['e1'])}")
    g.open(f"for e0 in range({m}):")
    g.emit(f"{g.ref(n, ['e0'])} += {column('e1', 'e0')} * d")
    g.close(2)
    g.close(opened)


def transposed_reader(g: LoopGen, a: Node):
    """A function (row, col) -> an index expression of A^T, if A^T is in memory row by row:
    A is the transpose of a STATIC matrix, or the loop made a transposed copy (LoopGen)."""
    if a.op == "transpose" and is_static_matrix(a.inputs[0]):
        inner = a.inputs[0]
        return lambda r, c: g.ref(inner, [r, c])
    if a.id in g.transposed:
        name = g.transposed[a.id]
        return lambda r, c: f"{name}[{r}, {c}]"
    return None


def lower_outer(g: LoopGen, n: Node) -> None:
    if n.id in g.virtual:
        return
    a, b = n.inputs
    g.alloc(n)
    opened, elems = _nest(g, n)
    _write(g, n, elems, f"{g.ref(a, elems[:1])} * {g.ref(b, elems[1:])}")
    g.close(opened)


def lower_transpose(g: LoopGen, n: Node) -> None:
    if is_static_matrix(n):
        (m, k), src = n.shape, g.buf(n.inputs[0])
        g.allocated.add(n.id)
        t = f"np.ascontiguousarray({src}.reshape(({k}, {m})).T)"
        g.emit(f"{g.buf(n)} = {t}.reshape({g.alloc_shape(n)})")
        return
    g.alloc(n)
    opened, elems = _nest(g, n)
    _write(g, n, elems, g.ref(n.inputs[0], elems[::-1]))
    g.close(opened)


# ---- structure ---------------------------------------------------------------------------
def lower_concat(g: LoopGen, n: Node) -> None:
    g.alloc(n)
    start = 0
    for x in n.inputs:
        opened = g.lead_loops(n)
        k, elems = g.elem_loops(x.shape)
        out = elems[:-1] + [f"{start} + {elems[-1]}"]
        _write(g, n, out, g.ref(x, elems))
        g.close(opened + k)
        start += x.shape[-1]


def lower_slice(g: LoopGen, n: Node) -> None:
    g.alloc(n)
    opened, elems = _nest(g, n)
    src = elems[:-1] + [f"{n.attrs['start']} + {elems[-1]}"]
    _write(g, n, elems, g.ref(n.inputs[0], src))
    g.close(opened)


def lower_pad(g: LoopGen, n: Node) -> None:
    (x,) = n.inputs
    before, size = n.attrs["before"], x.shape[-1]
    g.alloc(n)
    opened, elems = _nest(g, n)
    last = elems[-1]
    src = g.ref(x, elems[:-1] + [f"{last} - {before}"])
    _write(g, n, elems, f"{src} if {before} <= {last} < {before + size} else 0.0")
    g.close(opened)


def _sum_elems(g: LoopGen, n: Node, scale: str | None) -> None:
    (x,) = n.inputs
    g.alloc(n)
    opened = g.lead_loops(n)
    g.emit("acc = 0.0")
    k, elems = g.elem_loops(x.shape, [f"r{j}" for j in range(len(x.shape))])
    g.emit(f"acc += {g.ref(x, elems)}")
    g.close(k)
    _write(g, n, [], f"acc / {scale}" if scale else "acc")
    g.close(opened)


def lower_sum(g: LoopGen, n: Node) -> None:
    _sum_elems(g, n, None)


def lower_mean(g: LoopGen, n: Node) -> None:
    count = 1
    for d in n.inputs[0].shape:
        count *= d
    _sum_elems(g, n, f"{float(count)}")


def lower_expand(g: LoopGen, n: Node) -> None:
    (x,) = n.inputs
    g.alloc(n)
    opened, elems = _nest(g, n)
    _write(g, n, elems, g.ref(x, elems if x.shape else []))
    g.close(opened)


def lower_reduce_to(g: LoopGen, n: Node) -> None:
    (x,) = n.inputs
    if x.id in g.virtual:
        _gemm_gradient(g, n, x)
        return
    g.alloc(n)
    opened, elems = _nest(g, n)
    g.emit("acc = 0.0")
    inner, override, batch_var = _reduced_loops(g, x, n)
    src_elems = elems
    if x.shape and not n.shape:
        k, src_elems = g.elem_loops(x.shape, [f"r{j}" for j in range(len(x.shape))])
        inner += k
    g.emit(f"acc += {g.ref(x, src_elems, override, batch_var)}")
    g.close(inner)
    _write(g, n, elems, "acc")
    g.close(opened)


def _gemm_gradient(g: LoopGen, n: Node, outer: Node) -> None:
    """sum over steps and batch of outer(a, b) = A^T B with A = a as [T*B, m], B likewise."""
    a, b = outer.inputs
    m, k = outer.shape
    g.allocated.add(n.id)
    g.emit(
        f"{g.buf(n)} = np.dot({g.buf(a)}.reshape((-1, {m})).T, "
        f"{g.buf(b)}.reshape((-1, {k}))).reshape({g.alloc_shape(n)})"
    )


# ---- neural-network ops ------------------------------------------------------------------
def _log_sum_exp(g: LoopGen, x: Node, size: int) -> None:
    g.emit(f"mx = {g.ref(x, ['0'])}")
    g.open(f"for r0 in range(1, {size}):")
    g.emit(f"mx = max(mx, {g.ref(x, ['r0'])})")
    g.close()
    g.emit("se = 0.0")
    g.open(f"for r0 in range({size}):")
    g.emit(f"se += exp({g.ref(x, ['r0'])} - mx)")
    g.close()
    g.emit("lse = mx + log(se)")


def _softmax_like(g: LoopGen, n: Node, formula: str) -> None:
    (x,) = n.inputs
    g.alloc(n)
    opened = g.lead_loops(n)
    _log_sum_exp(g, x, x.shape[0])
    g.open(f"for e0 in range({x.shape[0]}):")
    _write(g, n, ["e0"], formula.format(g.ref(x, ["e0"])))
    g.close(opened + 1)


def lower_softmax(g: LoopGen, n: Node) -> None:
    _softmax_like(g, n, "exp({0} - lse)")


def lower_log_softmax(g: LoopGen, n: Node) -> None:
    _softmax_like(g, n, "{0} - lse")


def lower_softmax_cross_entropy(g: LoopGen, n: Node) -> None:
    o, y = n.inputs
    g.alloc(n)
    opened = g.lead_loops(n)
    _log_sum_exp(g, o, o.shape[0])
    g.emit("acc = 0.0")
    g.open(f"for r0 in range({o.shape[0]}):")
    g.emit(f"acc -= {g.ref(y, ['r0'])} * ({g.ref(o, ['r0'])} - lse)")
    g.close()
    _write(g, n, [], "acc")
    g.close(opened)


def lower_mse(g: LoopGen, n: Node) -> None:
    o, y = n.inputs
    g.alloc(n)
    opened = g.lead_loops(n)
    g.emit("acc = 0.0")
    g.open(f"for r0 in range({o.shape[0]}):")
    g.emit(f"d = {g.ref(o, ['r0'])} - {g.ref(y, ['r0'])}")
    g.emit("acc += d * d")
    g.close()
    _write(g, n, [], f"acc / {float(o.shape[0])}")
    g.close(opened)


# ---- axes and batch ----------------------------------------------------------------------
def lower_delay(g: LoopGen, n: Node) -> None:
    v, init = n.inputs
    axis, offset = n.attrs["axis"], n.attrs["offset"]
    g.alloc(n)
    opened, elems = _nest(g, n)
    g.emit(f"src = {g.axis_var(axis)} + {offset}")
    g.open(f"if 0 <= src < S_{axis}:")
    _write(g, n, elems, g.ref(v, elems, {axis: "src"}))
    g.close()
    g.open("else:")
    _write(g, n, elems, g.ref(init, elems))
    g.close()
    g.close(opened)


def _boundary(axis: str, offset: int) -> tuple[str, str]:
    k = abs(offset)
    if offset < 0:
        return "0", f"min({k}, S_{axis})"
    return f"max(S_{axis} - {k}, 0)", f"S_{axis}"


def lower_edge_sum(g: LoopGen, n: Node) -> None:
    (x,) = n.inputs
    axis = n.attrs["axis"]
    lo, hi = _boundary(axis, n.attrs["offset"])
    g.alloc(n)
    opened, elems = _nest(g, n)
    g.emit("acc = 0.0")
    if axis in x.axes:
        g.open(f"for r_{axis} in range({lo}, {hi}):")
        g.emit(f"acc += {g.ref(x, elems, {axis: f'r_{axis}'})}")
        g.close()
    else:
        g.emit(f"acc = ({hi} - {lo}) * {g.ref(x, elems)}")
    _write(g, n, elems, "acc")
    g.close(opened)


def _conditional_copy(g: LoopGen, n: Node, condition: str) -> None:
    (x,) = n.inputs
    g.alloc(n)
    opened, elems = _nest(g, n)
    _write(g, n, elems, f"{g.ref(x, elems)} if {condition} else 0.0")
    g.close(opened)


def lower_edge_fill(g: LoopGen, n: Node) -> None:
    axis = n.attrs["axis"]
    lo, hi = _boundary(axis, n.attrs["offset"])
    _conditional_copy(g, n, f"{lo} <= {g.axis_var(axis)} < {hi}")


def _position(axis: str, index: int) -> str:
    return f"S_{axis} - {-index}" if index < 0 else str(index - 1)


def lower_place(g: LoopGen, n: Node) -> None:
    axis = n.attrs["axis"]
    _conditional_copy(g, n, f"{g.axis_var(axis)} == {_position(axis, n.attrs['index'])}")


def lower_at(g: LoopGen, n: Node) -> None:
    (x,) = n.inputs
    axis = n.attrs["axis"]
    g.alloc(n)
    opened, elems = _nest(g, n)
    _write(g, n, elems, g.ref(x, elems, {axis: _position(axis, n.attrs["index"])}))
    g.close(opened)


def lower_broadcast(g: LoopGen, n: Node) -> None:
    lower_expand_axis(g, n)


def lower_expand_axis(g: LoopGen, n: Node) -> None:
    (x,) = n.inputs
    g.alloc(n)
    opened, elems = _nest(g, n)
    _write(g, n, elems, g.ref(x, elems))
    g.close(opened)


def lower_reduce_axis(g: LoopGen, n: Node) -> None:
    (x,) = n.inputs
    axis = n.attrs["axis"]
    g.alloc(n)
    opened, elems = _nest(g, n)
    if axis in x.axes:
        g.emit("acc = 0.0")
        g.open(f"for r_{axis} in range(S_{axis}):")
        g.emit(f"acc += {g.ref(x, elems, {axis: f'r_{axis}'})}")
        g.close()
    else:
        g.emit(f"acc = S_{axis} * {g.ref(x, elems)}")
    mean = n.attrs["kind"] == "mean"
    _write(g, n, elems, f"acc / S_{axis}" if mean else "acc")
    g.close(opened)


def lower_batch_mean(g: LoopGen, n: Node) -> None:
    (x,) = n.inputs
    g.alloc(n)
    opened, elems = _nest(g, n)
    g.emit("acc = 0.0")
    inner, override, batch_var = _reduced_loops(g, x, n, axes=set())
    g.emit(f"acc += {g.ref(x, elems, override, batch_var)}")
    g.close(inner)
    _write(g, n, elems, "acc / B" if x.batched else "acc")
    g.close(opened)


def _fill(g: LoopGen, n: Node, value: str) -> None:
    g.alloc(n)
    g.emit(f"{g.buf(n)}[...] = {value}")


def lower_const(g: LoopGen, n: Node) -> None:
    _fill(g, n, repr(n.attrs["value"]))


def lower_batch_size(g: LoopGen, n: Node) -> None:
    _fill(g, n, "B")


def lower_axis_size(g: LoopGen, n: Node) -> None:
    _fill(g, n, f"S_{n.attrs['axis']}")
