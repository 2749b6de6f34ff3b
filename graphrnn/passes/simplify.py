"""Algebraic simplification and constant folding.

Rewrites (x, y any value; 0, 1, c constants of any shape; Z a zero constant of the
node's per-example shape):

  zeros     x * 0, 0 * x, 0 / x, x @ 0, 0 @ v, outer(0, y), outer(x, 0)    -> Z
            (and a zero operand of conv2d and its two gradient ops)
            neg, transpose, slice, pad, sum, mean, expand, reduce_to, reduce_axis,
            expand_axis, edge_sum, edge_fill, at, place, batch_mean, broadcast of 0,
            and of the linear convolution-family ops (avgpool2d, channel_sum, ...) -> Z
            maxpool2d_grad(x, 0), maxpool2d_gather(x, 0)                   -> Z
            concat(0, ..., 0), delay(0, 0)                                  -> Z
  identity  x + 0, 0 + x, x - 0, x * 1, 1 * x, x / 1                        -> x
            0 - x, -1 * x, x * -1                                           -> neg(x)
            neg(neg(x)), transpose(transpose(x))                            -> x
            neg(L(neg(x))) for L one of the linear ops above                -> L(x)
            slice(x, 0, n) of the whole of x, pad(x, 0, 0), concat(x),
            expand(x) to x's own shape, reduce_to(x) where x varies over no more than
            the target, broadcast(x) to the context x already has           -> x
  signs     x + neg(y), neg(y) + x -> x - y;  x - neg(y) -> x + y
  slices    slice(slice(x)) -> one slice; slice(concat(..)) within one operand -> that
            operand (or a slice of it); slice(pad(x)) inside x -> x or a slice of x,
            inside the padding -> Z; concat(slice(x, 0, a), slice(x, a, b), ...) that
            covers x in order -> x
  folding   an op whose operands are all STATIC constants (elementwise, transpose,
            slice, pad, concat, sum, mean, expand, reduce_to, matmul, outer, softmax, ...)
            -> a constant, evaluated with NumPy in float64. `1 / batch_size()` is not
            constant and stays.

Zeros propagate: autodiff starts every adjoint as a sum whose terms may be zero, and a zero
made by one rule feeds the next (a zero adjoint through a delay, a product, a reduction).
A replaced value keeps its per-example shape, its stored context and its actual context
(passes/_common.py); the one exception is a zero, which becomes a STATIC constant (consumers
broadcast). A consumer whose actual context would shrink through such a zero keeps its old
operand, so `reduce_to` still sums over the same steps and batch; so does a delay whose
context would (a batched delay that stays, e.g. as an output, keeps reading x * 0).

Not preserved: IEEE special cases (x * 0 is 0 even if x is inf or NaN; signed zeros).
A replacement created here for a user-named value takes its name and source location.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from graphrnn.ir.graph import Graph, reachable
from graphrnn.ir.node import STATIC, Node
from graphrnn.ir.ops.leaf import const
from graphrnn.ir.registry import OPS, EvalEnv, Op, apply
from graphrnn.passes._common import (
    Actual,
    copy_graph,
    inherit,
    is_leaf,
    is_one,
    is_zero,
    node_count,
    resolve,
    same_value_kind,
    substitute,
    zero,
)

MAX_SWEEPS = 50
FOLD_MAX_ELEMENTS = 1 << 16

# Labels of the zero rules for which "op(0) -> 0" / "op with 0 -> 0" would read badly.
_ZERO_RULES = {"mul": "x*0 -> 0", "div": "0/x -> 0"}


def simplify(graph: Graph, *, inplace: bool = False) -> tuple[Graph, list[str]]:
    """Apply the rewrites above to a fixpoint; returns the graph and one report line."""
    g = graph if inplace else copy_graph(graph)
    before = node_count(g)
    rewriter = _Rewriter(g.axes)
    repl: dict[int, Node] = {}
    for _ in range(MAX_SWEEPS):
        progress = False
        actual = Actual(g)
        for node in reachable(g.roots()):
            if node.id in repl or is_leaf(node):
                continue
            found = rewriter.rewrite(node, [resolve(repl, i) for i in node.inputs], repl)
            if found is None:
                continue
            rule, new = found
            if not (same_value_kind(new, node, actual) or _zero_for(new, node)):
                continue
            if new.id in rewriter.fresh:
                inherit(new, node)
            repl[node.id] = new
            rewriter.stats[rule] += 1
            progress = True
        if substitute(g, repl, actual):
            progress = True
        if not progress:
            break
    after = node_count(g)
    total = sum(rewriter.stats.values())
    detail = ", ".join(f"{rule}: {k}" for rule, k in rewriter.stats.most_common())
    line = f"simplify: {total} rewrites, {before} -> {after} nodes"
    return g, [line + (f" ({detail})" if detail else "")]


def _zero_for(new: Node, old: Node) -> bool:
    """A zero constant may stand for a zero of any context (see passes/_common.py)."""
    return is_zero(new) and new.shape == old.shape and new.context <= old.context


class _Rewriter:
    def __init__(self, axes: tuple[str, ...]):
        self.axes = axes
        self.fresh: set[int] = set()
        self.stats: Counter[str] = Counter()

    # New nodes go through `make` so that they can take the user's name of what they replace.
    def make(self, op: str, *inputs: Node, **attrs) -> Node:
        node = apply(op, *inputs, **attrs)
        self.fresh.add(node.id)
        return node

    def zero(self, shape) -> Node:
        node = zero(shape)
        self.fresh.add(node.id)
        return node

    def fit(self, x: Node, shape) -> Node | None:
        """x as a value of per-example `shape`: itself, or a scalar expanded."""
        if x.shape == shape:
            return x
        if x.shape == ():
            return self.make("expand", x, shape=tuple(shape))
        return None

    def rewrite(self, node: Node, xs: list[Node], repl) -> tuple[str, Node] | None:
        op = node.op

        def arg(n: Node, k: int = 0) -> Node:
            return resolve(repl, n.inputs[k])

        # ---- zeros -------------------------------------------------------------------
        facts = OPS[op]
        if any(is_zero(xs[k]) for k in facts.linear_in):
            return _zero_rule(op, len(xs)), self.zero(node.shape)
        if op == "concat" and all(is_zero(x) for x in xs):
            return "concat(0..) -> 0", self.zero(node.shape)
        if op == "delay" and is_zero(xs[0]) and is_zero(xs[1]):
            return "delay(0,0) -> 0", self.zero(node.shape)

        # ---- constant folding --------------------------------------------------------
        if xs and _foldable(facts) and all(x.op == "const" for x in xs):
            folded = self.fold(node, xs)
            if folded is not None:
                return "const fold", folded

        # ---- identities --------------------------------------------------------------
        if op == "add":
            a, b = xs
            if is_zero(b):
                return _maybe("x+0 -> x", self.fit(a, node.shape))
            if is_zero(a):
                return _maybe("0+x -> x", self.fit(b, node.shape))
            if b.op == "neg":
                return "x+(-y) -> x-y", self.make("sub", a, arg(b))
            if a.op == "neg":
                return "(-x)+y -> y-x", self.make("sub", b, arg(a))
        elif op == "sub":
            a, b = xs
            if is_zero(b):
                return _maybe("x-0 -> x", self.fit(a, node.shape))
            if is_zero(a):
                neg = self.make("neg", b)
                return _maybe("0-x -> -x", self.fit(neg, node.shape))
            if b.op == "neg":
                return "x-(-y) -> x+y", self.make("add", a, arg(b))
        elif op == "mul":
            a, b = xs
            if is_one(b):
                return _maybe("x*1 -> x", self.fit(a, node.shape))
            if is_one(a):
                return _maybe("1*x -> x", self.fit(b, node.shape))
            if b.op == "const" and b.attrs["value"] == -1.0:
                return _maybe("x*-1 -> -x", self.fit(self.make("neg", a), node.shape))
            if a.op == "const" and a.attrs["value"] == -1.0:
                return _maybe("-1*x -> -x", self.fit(self.make("neg", b), node.shape))
        elif op == "div":
            if is_one(xs[1]):
                return _maybe("x/1 -> x", self.fit(xs[0], node.shape))
        elif op == "neg":
            y = xs[0]
            if y.op == "neg":
                return "neg(neg(x)) -> x", arg(y)
            if _linear_unary(OPS[y.op]) and arg(y).op == "neg":
                return f"neg({y.op}(neg(x))) -> {y.op}(x)", self.make(y.op, arg(arg(y)), **y.attrs)
        elif op == "transpose":
            if xs[0].op == "transpose":
                return "transpose(transpose(x)) -> x", arg(xs[0])
        elif op == "slice":
            return self.slice_rules(node, xs[0], repl)
        elif op == "pad":
            if node.attrs["before"] == 0 and node.attrs["after"] == 0:
                return "pad(x,0,0) -> x", xs[0]
        elif op == "concat":
            if len(xs) == 1:
                return "concat(x) -> x", xs[0]
            whole = _covering_slices(xs, repl)
            if whole is not None and whole.shape == node.shape:
                return "concat(slices of x) -> x", whole
        elif op == "expand":
            if xs[0].shape == node.shape:
                return "expand(x) -> x", xs[0]
        elif op == "reduce_to":
            x = xs[0]
            if x.shape == node.shape and x.context <= node.attrs["context"]:
                return "reduce_to(x) -> x", x
        elif op == "broadcast":
            if xs[0].context == node.context:
                return "broadcast(x) -> x", xs[0]
        return None

    def slice_rules(self, node: Node, x: Node, repl) -> tuple[str, Node] | None:
        start, stop = node.attrs["start"], node.attrs["stop"]
        if start == 0 and stop == x.shape[-1]:
            return "slice(whole x) -> x", x
        if x.op == "slice":
            inner = resolve(repl, x.inputs[0])
            s = x.attrs["start"]
            return "slice(slice(x)) -> slice(x)", self._slice(inner, s + start, s + stop)
        if x.op == "concat":
            offset = 0
            for part in x.inputs:
                part = resolve(repl, part)
                width = part.shape[-1]
                if offset <= start and stop <= offset + width:
                    piece = self._slice(part, start - offset, stop - offset)
                    return "slice(concat(..)) -> operand", piece
                offset += width
            return None
        if x.op == "pad":
            inner = resolve(repl, x.inputs[0])
            before, width = x.attrs["before"], inner.shape[-1]
            if before <= start and stop <= before + width:
                return "slice(pad(x)) -> x", self._slice(inner, start - before, stop - before)
            if stop <= before or start >= before + width:
                return "slice(padding) -> 0", self.zero(node.shape)
        return None

    def _slice(self, x: Node, start: int, stop: int) -> Node:
        if start == 0 and stop == x.shape[-1]:
            return x
        return self.make("slice", x, start=start, stop=stop)

    def fold(self, node: Node, xs: list[Node]) -> Node | None:
        """Evaluate an op on constant operands; a constant if the result is uniform."""
        if node.context != STATIC or any(x.context != STATIC for x in xs):
            return None
        sizes = [int(np.prod(s)) for s in [node.shape, *(x.shape for x in xs)]]
        if max(sizes) > FOLD_MAX_ELEMENTS:
            return None
        env = EvalEnv(self.axes, {a: 1 for a in self.axes}, 1, np.dtype(np.float64))
        arrays = [
            np.full(env.aligned_shape(STATIC, x.shape), x.attrs["value"], np.float64) for x in xs
        ]
        try:
            with np.errstate(all="ignore"):
                result = np.asarray(OPS[node.op].evaluate(env, node, *arrays), np.float64)
        except Exception:
            return None
        if result.size == 0 or result.shape != env.aligned_shape(STATIC, node.shape):
            return None
        first = result.flat[0]
        if not np.isfinite(first) or not np.all(result == first):
            return None
        folded = const(float(first), node.shape)
        self.fresh.add(folded.id)
        return folded


def _zero_rule(op: str, arity: int) -> str:
    return _ZERO_RULES.get(op) or (f"{op}(0) -> 0" if arity == 1 else f"{op} with 0 -> 0")


def _linear_unary(facts: Op) -> bool:
    return facts.linear and facts.arity == 1


def _foldable(facts: Op) -> bool:
    """Leaves, whole-array values (constants, sizes bound at run time) and ops along the index
    axes are never folded."""
    return not (facts.leaf or facts.whole_array or facts.along_axes)


def _maybe(rule: str, node: Node | None) -> tuple[str, Node] | None:
    return (rule, node) if node is not None else None


def _covering_slices(xs: list[Node], repl) -> Node | None:
    """The x that concat(slice(x, 0, a), slice(x, a, b), ..., slice(x, .., n)) rebuilds."""
    if any(x.op != "slice" for x in xs):
        return None
    source = resolve(repl, xs[0].inputs[0])
    expected = 0
    for x in xs:
        if resolve(repl, x.inputs[0]) is not source or x.attrs["start"] != expected:
            return None
        expected = x.attrs["stop"]
    return source if expected == source.shape[-1] else None
