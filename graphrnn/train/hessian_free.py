"""Hessian-free optimisation (Martens 2010): each step solves (G + lambda I) d = -g by conjugate
gradient on Gauss-Newton-vector products, then adapts lambda (Levenberg-Marquardt).

Per batch: the gradient g and the loss f on the whole batch; Gauss-Newton products G v
(`Compiled.gnvp`, graphrnn/second_order.py) on its first `curvature_batch` examples. CG
starts from `decay` times the previous solution and stops on Martens' relative-progress
test (or after `cg_iters`); of the iterates kept at steps ceil(1.3^j), the one with the lowest
loss is taken, going back from the last while the loss decreases. With the reduction ratio
rho = (f(theta + d) - f(theta)) / q(d) of the undamped quadratic model q(d) = g.d + d.G d / 2,
lambda is multiplied by 2/3 when rho > 3/4 and by 3/2 when rho < 1/4. A step that does not
lower the loss is shortened (Armijo backtracking, factor 0.8), or not taken.

Weight decay adds wd/2 |theta|^2 to the loss, so wd theta to g and wd v to G v. Structural
damping (Martens & Sutskever 2011) is not implemented.

From Python: `optimizer = HessianFree(); step = curvature_step(fn, optimizer)`, then
`train(step, params, batches, optimizer=optimizer, ...)` with batches of (inputs, targets).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from graphrnn.errors import GraphRNNError
from graphrnn.train.optim import (
    Optimizer,
    Params,
    State,
    _check_fraction,
    _check_grads,
    _check_positive,
)

Batch = tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]
Unpack = Callable[[object], Batch]
Product = Callable[[Params, Params], Mapping[str, np.ndarray]]

CG_EPS = 5e-4  # Martens' relative-progress tolerance
ARMIJO = 1e-2
BACKTRACKS = 20
SOLVED = 1e-10  # CG stops when the residual is this small relative to the gradient


class HessianFree(Optimizer):
    """Truncated Newton with Gauss-Newton curvature; `attach` gives it the current batch's
    loss and product before each `step` (curvature_step does this)."""

    name = "hessian-free"
    hyper = ("lr", "damping", "cg_iters", "decay", "weight_decay")
    slots = ("d",)

    def __init__(
        self,
        lr: float = 1.0,
        damping: float = 1.0,
        cg_iters: int = 50,
        decay: float = 0.95,
        weight_decay: float = 0.0,
    ):
        super().__init__(lr, weight_decay)
        self.damping = _check_positive("damping", damping)
        if not (isinstance(cg_iters, int) and cg_iters >= 1):
            raise GraphRNNError(
                f"optimizer option cg_iters must be an integer >= 1, got {cg_iters!r}"
            )
        self.cg_iters = cg_iters
        self.decay = _check_fraction("decay", decay)
        self.lam = self.damping
        self._loss: Callable[[Params], float] | None = None
        self._product: Product | None = None
        self.last: dict[str, float] = {}

    def attach(self, loss: Callable[[Params], float], product: Product) -> None:
        """The current batch's loss f(params) and Gauss-Newton product G(params, v)."""
        self._loss, self._product = loss, product

    def step(self, params: Params, grads: Mapping[str, np.ndarray]) -> None:
        if self._loss is None or self._product is None:
            raise GraphRNNError(
                "hessian-free needs the batch's loss and Gauss-Newton product before each step: "
                "build the training step with graphrnn.train.hessian_free.curvature_step"
            )
        _check_grads(params, grads)
        names = [n for n in params if n in grads]
        flat = _Flat(params, names)
        wd = self.weight_decay
        theta = flat.pack(params)
        g = flat.pack(grads) + wd * theta

        def f(x: np.ndarray) -> float:
            return self._loss(flat.unpack(theta + x, params)) + 0.5 * wd * float(
                x @ x + 2 * x @ theta
            )

        def gv(v: np.ndarray) -> np.ndarray:
            return flat.pack(self._product(params, flat.unpack(v))) + wd * v

        previous = self.state["d"]
        x0 = flat.pack(previous) * self.decay if previous else np.zeros_like(theta)
        iterates, final, steps = conjugate_gradient(gv, g, self.lam, x0, self.cg_iters)
        self.state["d"] = flat.unpack(final)
        f0 = f(np.zeros_like(theta))
        d, q, f1 = _backtrack(f, iterates, self.lam)
        rho = (f1 - f0) / q if q < 0 else -math.inf
        if rho > 0.75:
            self.lam *= 2 / 3
        elif rho < 0.25:
            self.lam *= 1.5
        alpha = _line_search(f, d, f0, f1, float(g @ d)) * self.lr
        self.t += 1
        if alpha > 0:
            new = flat.unpack(theta + alpha * d)
            for n in names:
                params[n][...] = new[n]
        self.last = {"rho": rho, "damping": self.lam, "alpha": alpha, "cg_steps": steps}

    def state_dict(self) -> State:
        return {**super().state_dict(), "lambda": self.lam}

    def load_state_dict(self, state: Mapping) -> None:
        super().load_state_dict(state)
        self.lam = float(state.get("lambda", self.damping))


def conjugate_gradient(
    gv: Callable[[np.ndarray], np.ndarray], g: np.ndarray, lam: float, x0: np.ndarray, iters: int
) -> tuple[list[tuple[int, np.ndarray, float]], np.ndarray, int]:
    """Minimise phi(x) = g.x + x.(G + lam I) x / 2 from x0: the iterates kept (step, x,
    phi(x)) at steps ceil(1.3^j) and the last, the last x, and the number of steps."""
    x = x0.copy()
    r = -g - (gv(x) + lam * x)
    p = r.copy()
    rr, gg = float(r @ r), float(g @ g)
    keep = {math.ceil(1.3**j) for j in range(int(math.log(max(iters, 2), 1.3)) + 2)}
    phis: list[float] = []
    kept: list[tuple[int, np.ndarray, float]] = []
    for i in range(1, iters + 1):
        bp = gv(p) + lam * p
        curvature = float(p @ bp)
        if curvature <= 0 or rr == 0:
            break
        alpha = rr / curvature
        x += alpha * p
        r -= alpha * bp
        rr, previous = float(r @ r), rr
        p = r + (rr / previous) * p
        phi = -0.5 * float(x @ (r - g))
        phis.append(phi)
        if i in keep:
            kept.append((i, x.copy(), phi))
        k = max(10, i // 10)
        if i > k and phi < 0 and (phi - phis[-k - 1]) / phi < k * CG_EPS:
            break
        if rr <= SOLVED**2 * gg:  # solved to rounding: further steps only add noise
            break
    if not phis:
        return [(0, x.copy(), -0.5 * float(x @ (r - g)))], x, 0
    if not kept or kept[-1][0] != len(phis):
        kept.append((len(phis), x.copy(), phis[-1]))
    return kept, x, len(phis)


def _backtrack(f, iterates, lam: float) -> tuple[np.ndarray, float, float]:
    """The kept CG iterate with the lowest loss, going back from the last while the loss
    decreases: (d, q(d) of the undamped model, f(d))."""
    best = len(iterates) - 1
    loss = f(iterates[best][1])
    while best > 0:
        earlier = f(iterates[best - 1][1])
        if earlier >= loss:
            break
        best, loss = best - 1, earlier
    _, d, phi = iterates[best]
    return d, phi - 0.5 * lam * float(d @ d), loss


def _line_search(f, d: np.ndarray, f0: float, f1: float, slope: float) -> float:
    """The step length: 1 when the loss decreases enough, else shortened; 0 if nothing helps."""
    alpha, loss = 1.0, f1
    for _ in range(BACKTRACKS):
        if math.isfinite(loss) and loss <= f0 + ARMIJO * alpha * min(slope, 0.0):
            return alpha
        alpha *= 0.8
        loss = f(alpha * d)
    return 0.0


class _Flat:
    """Parameter dicts as one float64 vector, in a fixed order of names."""

    def __init__(self, like: Mapping[str, np.ndarray], names: list[str]):
        self.names = names
        self.shapes = [np.shape(like[n]) for n in names]
        self.sizes = [int(np.prod(s)) for s in self.shapes]

    def pack(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(arrays[n], np.float64).ravel() for n in self.names])

    def unpack(self, vector: np.ndarray, base: Mapping | None = None) -> Params:
        out = dict(base or {})
        at = 0
        for n, shape, size in zip(self.names, self.shapes, self.sizes):
            out[n] = vector[at : at + size].reshape(shape)
            at += size
        return out


def curvature_step(fn, optimizer: HessianFree, unpack: Unpack | None = None, curvature_batch=None):
    """A `loss_and_grad(params, batch)` for `train` that also attaches the batch's loss and
    Gauss-Newton product to `optimizer`. A batch is (inputs, targets), or what `unpack` turns
    into that; the product uses its first `curvature_batch` examples (default: all)."""
    if curvature_batch is not None and not (
        isinstance(curvature_batch, int) and curvature_batch >= 1
    ):
        raise GraphRNNError(f"curvature_batch must be an integer >= 1, got {curvature_batch!r}")
    if not hasattr(fn, "gnvp"):
        raise GraphRNNError(
            "hessian-free needs Gauss-Newton products, which segmented BPTT does not compile: "
            "train without bptt_checkpoint"
        )
    split = unpack or (lambda batch: batch)

    def step(params: Params, batch):
        inputs, targets = split(batch)
        sub_in, sub_tg = _first(fn, inputs, curvature_batch), _first(fn, targets, curvature_batch)
        optimizer.attach(
            lambda p: fn.loss(p, inputs, targets),
            lambda p, v: fn.gnvp(p, sub_in, sub_tg, v),
        )
        return fn.loss_and_grad(params, inputs, targets)

    return step


def _first(fn, arrays: Mapping[str, np.ndarray], n: int | None) -> dict[str, np.ndarray]:
    """The first n examples of each array (the batch dimension follows the axes it varies over)."""
    if n is None:
        return dict(arrays)
    graph = fn.graph
    leaves = graph.leaves
    out = {}
    for name, array in arrays.items():
        lead = sum(a in leaves[name].axes for a in graph.axes) if name in leaves else 0
        index = (slice(None),) * lead + (slice(0, n),)
        out[name] = np.asarray(array)[index]
    return out
