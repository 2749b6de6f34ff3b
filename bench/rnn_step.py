#!/usr/bin/env python
"""One training step (forward + loss + full BPTT), float32: graphrnn's Numba backend beside
PyTorch (torch.nn.RNN/LSTM/GRU, or an autograd loop), JAX (lax.scan cells) and a hand-written
NumPy BPTT (bench/numpy_bptt.py), timed alternately in one process, with a GEMM roofline, peak
memory and graphrnn's compile times.

    python bench/rnn_step.py [--quick] [--models elman,lstm,...] [--losses ce,h2]
                             [--sizes S1,S2,S3] [--json F] [--check-only]

docs/benchmarks.md explains how to read the output. Every implementation does the same work:
    a(t) = W_ih x(t) + W_hh h(t-1) + b (per gate), the cell, then
    ce: o(t) = V h(t) + c, loss = mean over t and batch of softmax_cross_entropy(o(t), y(t)),
        gradients of every parameter AND of the input x (graphrnn returns d loss / d x, so the
        peers are asked for it too);
    h2: loss = mean over batch of sum over t of sum(h(t) * h(t)), parameter gradients only.
Rows: the cells as shipped (models/elman, lstm, gru_torch), the LSTM and GRU written the way
torch stores them (stacked matrices, gates cut with slice), and the minimal gated unit (MGU),
which no library ships. All columns start from the same weights (graphrnn's initialisation,
mapped to torch's layout); before timing, the script checks that they agree on the loss and
every gradient (float32 at the case's size; float64 at a tiny size against graphrnn's
reference backend).
"""

from __future__ import annotations

import os
import sys

# OpenBLAS reads these when it is loaded, so they go before numpy is imported. The machine's
# environment sets them for the test suite; a benchmark runs with OpenBLAS's own detection.
UNSET_ENV = {
    k: os.environ.pop(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ
}
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DTYPE = np.float32
IMPLS = ("graphrnn", "torch", "jax", "numpy")
PEERS = ("torch", "jax", "numpy")


# ---- the tables: sizes and models ------------------------------------------------------------
@dataclass(frozen=True)
class Size:
    B: int
    I: int  # noqa: E741
    H: int
    T: int

    @property
    def O(self) -> int:  # noqa: E743
        return self.H  # O = H classes


SIZES = {
    "S1": Size(B=1, I=32, H=32, T=1000),
    "S2": Size(B=32, I=128, H=128, T=100),
    "S3": Size(B=64, I=512, H=512, T=50),
    # --quick: tiny, for a smoke test of every code path
    "Q1": Size(B=2, I=8, H=8, T=16),
}
FULL_SIZES = ("S1", "S2", "S3")
QUICK_SIZES = ("Q1",)


def _split_hx(w: np.ndarray, H: int) -> tuple[np.ndarray, np.ndarray]:
    """graphrnn gate matrix [H, H + I] reading concat(h, x): its x part and its h part."""
    return w[:, H:], w[:, :H]


# Each canon_* maps graphrnn's parameters (grad=False) or its gradients (grad=True) to torch's
# layout. Where graphrnn has one bias and torch two (b_ih + b_hh), the parameter goes to b_ih
# with b_hh = 0, and its gradient to both (d loss / d b_ih = d loss / d b_hh).
def _head(p: dict) -> dict:
    return {k: p[k] for k in ("V", "c") if k in p}


def canon_elman(p: dict, H: int, grad: bool = False) -> dict:
    b_hh = p["b"] if grad else np.zeros(H, p["b"].dtype)
    return dict(W_ih=p["U"], W_hh=p["W"], b_ih=p["b"], b_hh=b_hh) | _head(p)


def canon_lstm(p: dict, H: int, grad: bool = False) -> dict:
    # torch stacks (i, f, g, o); graphrnn has one [H, H + I] matrix per gate, h columns first
    parts = [_split_hx(p[f"h.W{g}"], H) for g in ("i", "f", "c", "o")]
    b = np.concatenate([p[f"h.b{g}"] for g in ("i", "f", "c", "o")])
    return dict(
        W_ih=np.concatenate([x for x, _ in parts]),
        W_hh=np.concatenate([h for _, h in parts]),
        b_ih=b,
        b_hh=b if grad else np.zeros_like(b),
    ) | _head(p)


def canon_gru(p: dict, H: int, grad: bool = False) -> dict:
    # torch stacks (r, z, n); graphrnn: Wr, Wz [H, H + I] (h first), Wnx [H, I], Wnh [H, H]
    (rx, rh), (zx, zh) = _split_hx(p["h.Wr"], H), _split_hx(p["h.Wz"], H)
    zero = np.zeros(H, p["h.br"].dtype)
    br, bz = (p["h.br"], p["h.bz"]) if grad else (zero, zero)
    return dict(
        W_ih=np.concatenate([rx, zx, p["h.Wnx"]]),
        W_hh=np.concatenate([rh, zh, p["h.Wnh"]]),
        b_ih=np.concatenate([p["h.br"], p["h.bz"], p["h.bnx"]]),
        b_hh=np.concatenate([br, bz, p["h.bnh"]]),
    ) | _head(p)


def canon_mgu(p: dict, H: int, grad: bool = False) -> dict:
    # canonical MGU: W_ih [2H, I], W_hh [2H, H] stacking (f, candidate); torch's two biases
    (fx, fh), (hx, hh) = _split_hx(p["h.Wf"], H), _split_hx(p["h.Wh"], H)
    b = np.concatenate([p["h.bf"], p["h.bh"]])
    return dict(
        W_ih=np.concatenate([fx, hx]),
        W_hh=np.concatenate([fh, hh]),
        b_ih=b,
        b_hh=b if grad else np.zeros_like(b),
    ) | _head(p)


def canon_stacked(p: dict, H: int, grad: bool = False) -> dict:
    # written the way torch stores it (h.W_ih, h.W_hh, h.b_ih, h.b_hh): only the names change
    return {k.removeprefix("h."): v for k, v in p.items()}


@dataclass(frozen=True)
class ModelSpec:
    file: str  # relative to the repository root
    cell: str  # the cell of the peers (JAX, NumPy; torch's loop): elman, lstm, gru, mgu
    gates: int  # gate blocks per product: W_ih is [gates * H, I]
    torch_cls: str | None  # torch.nn class; None: a torch autograd loop (torch_loop_loss)
    to_canon: Callable[..., dict]  # graphrnn params / grads -> torch layout (see canon_*)
    recurrent_products: int = 1  # separate per-step products h W_hh^T (MGU: 2, f*h and h)


MODELS = {
    "elman": ModelSpec("models/elman.grnn", "elman", 1, "RNN", canon_elman),
    "lstm": ModelSpec("models/lstm.grnn", "lstm", 4, "LSTM", canon_lstm),
    "gru": ModelSpec("models/gru_torch.grnn", "gru", 3, "GRU", canon_gru),
    # the same cells written the way torch stores them: stacked matrices, gates cut by slice
    "lstm_stacked": ModelSpec("models/lstm_torch.grnn", "lstm", 4, "LSTM", canon_stacked),
    "gru_stacked": ModelSpec("bench/models/gru_stacked.grnn", "gru", 3, "GRU", canon_stacked),
    # a cell no library ships
    "mgu": ModelSpec("bench/models/mgu.grnn", "mgu", 2, None, canon_mgu, 2),
}
# ce: the output layer o(t) = V h(t) + c and mean softmax cross-entropy, gradients of every
#     parameter and of x; h2: no output layer, loss = mean over batch of sum over t of
#     sum(h(t) * h(t)), gradients of the parameters only (the issue #11 table)
LOSSES = ("ce", "h2")
H2_LOSS = "loss = sum over t of sum(h(t) * h(t))"


def h2_source(text: str) -> str:
    """A model file's text with the output layer cut off and the loss on h directly: in the
    `model` block, drop `target y`, `param V`, `param c` and `o(t) = ...`, replace `loss`."""
    out, in_model = [], False
    for line in text.splitlines():
        if re.match(r"model\s", line):
            in_model = True
        if in_model:
            if re.match(r"\s+(target\s+y\b|param\s+V\[|param\s+c\[|o\(t\)\s*=)", line):
                continue
            if re.match(r"\s+loss\s*=", line):
                line = "    " + H2_LOSS
        out.append(line)
    return "\n".join(out) + "\n"


def load_model(spec: ModelSpec, loss: str, s: Size, seed: int = 0):
    import graphrnn as gr

    path = ROOT / spec.file
    if loss == "ce":
        return gr.load(path, seed=seed, I=s.I, H=s.H, O=s.O)
    text = h2_source(path.read_text())
    return gr.loads(text, seed=seed, path=f"{spec.file} (h2)", I=s.I, H=s.H, O=s.O)


COMPILE_PROBE_MODEL = ("lstm", "elman")  # the first whose file exists


# ---- measurement helpers ---------------------------------------------------------------------
def _proc_status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else None


def _reset_peak_rss() -> bool:
    """Linux >= 4.0: writing 5 to clear_refs resets VmHWM (the peak RSS) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure_memory(step: Callable[[], object]) -> dict:
    """Peak memory of one call of `step`, two ways (each from its own call):

    rss_peak_delta_mib: the process's peak resident set during the call minus its resident set
        just before (freed heap returned with malloc_trim first, peak reset through clear_refs);
        sees every allocator: numpy, Numba's NRT, torch, XLA. Falls back to the growth of
        ru_maxrss (only non-zero when the call sets a new process high) where clear_refs is not
        writable; `rss_method` says which.
    tracemalloc_peak_mib: the peak of allocations that Python's tracemalloc sees: numpy's
        array buffers, Python objects, and Numba's NRT buffers inside the compiled kernel
        (NRT allocates through Python's raw allocator); NOT torch's or XLA's C++ allocators.
    """
    gc.collect()
    _malloc_trim()
    rss0 = _proc_status_kib("VmRSS")
    if rss0 is not None and _reset_peak_rss():
        step()
        hwm = _proc_status_kib("VmHWM")
        rss_delta, method = (hwm - rss0) / 1024, "VmHWM-VmRSS (clear_refs)"
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss_delta, method = (after - before) / 1024, "ru_maxrss growth"
    gc.collect()
    tracemalloc.start()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "rss_peak_delta_mib": round(rss_delta, 2),
        "rss_method": method,
        "tracemalloc_peak_mib": round(peak / 2**20, 3),
    }


def _median_time(
    fn: Callable[[], object], min_time: float, min_samples: int = 3, stat=statistics.median
) -> float:
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_samples or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        if len(samples) >= 10_000:
            break
    return stat(samples)


# ---- roofline --------------------------------------------------------------------------------
def step_gemms(
    s: Size, gates: int, head: bool = True, dx: bool = True, recurrent_products: int = 1
) -> list[tuple[str, int, int, int, bool, int]]:
    """The GEMMs of one step: (what, m, k, n, A transposed, calls). N = T*B, G = gates*H.

    Forward: the input product (hoisted over all steps), the recurrent product (one per step;
    `recurrent_products` separate ones of G / recurrent_products columns each, as MGU's f*h),
    the output layer (`head`). Backward: the output layer's input and weight gradients
    (`head`), the recurrent product (one per step), the recurrent and input weight gradients,
    the input gradient dx (`dx`).
    """
    N, G, H, In, Out, T, B = s.T * s.B, gates * s.H, s.H, s.I, s.O, s.T, s.B
    R = recurrent_products
    Gr = G // R
    rows = [("fwd input     X[N,I] W_ih^T", N, In, G, False, 1)]
    rows.append(("fwd recurrent h[B,H] W_hh^T", B, H, Gr, False, T * R))
    if head:
        rows.append(("fwd output    Hs[N,H] V^T", N, H, Out, False, 1))
        rows.append(("bwd output    dO[N,O] V", N, Out, H, False, 1))
        rows.append(("bwd dV        dO^T Hs", Out, N, H, True, 1))
    rows.append(("bwd recurrent dG[B,G] W_hh", B, Gr, H, False, T * R))
    rows.append(("bwd dW_hh     dG^T Hprev", Gr, N, H, True, R))
    rows.append(("bwd dW_ih     dG^T X", G, N, In, True, 1))
    if dx:
        rows.append(("bwd dx        dG[N,G] W_ih", N, G, In, False, 1))
    return rows


def measure_roofline(s: Size, gemms: list, min_time: float) -> dict:
    """numpy float32 np.dot time of every GEMM of the step at its shape, summed: the time the
    step's GEMMs alone take through numpy's BLAS (per-step products as separate calls). Each
    is the best of at least 5 samples: a bound, and less sensitive to a busy machine."""
    rng = np.random.default_rng(0)
    rows, total_s, total_flops = [], 0.0, 0
    for what, m, k, n, a_t, calls in gemms:
        a = rng.standard_normal((k, m) if a_t else (m, k), dtype=DTYPE)
        a = a.T if a_t else a
        b = rng.standard_normal((k, n), dtype=DTYPE)
        out = np.empty((m, n), DTYPE)
        reps = min(calls, 1000)

        def run(a=a, b=b, out=out, reps=reps):
            for _ in range(reps):
                np.dot(a, b, out=out)

        per_call = _median_time(run, min_time, 5, min) / reps  # a bound: the best time
        flops = 2 * m * k * n * calls
        seconds = per_call * calls
        total_s += seconds
        total_flops += flops
        rows.append(
            {
                "gemm": what,
                "shape": [m, k, n],
                "a_transposed": a_t,
                "calls": calls,
                "ms": round(seconds * 1e3, 4),
                "gflops": round(flops / seconds / 1e9, 2),
            }
        )
    return {
        "gemms": rows,
        "flops": total_flops,
        "ms": round(total_s * 1e3, 4),
        "gflops": round(total_flops / total_s / 1e9, 2),
    }


def measure_gemm_peak(n: int, min_time: float) -> dict:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=DTYPE)
    b = rng.standard_normal((n, n), dtype=DTYPE)
    out = np.empty((n, n), DTYPE)
    for _ in range(3):  # wake the thread pool
        np.dot(a, b, out=out)
    t = _median_time(lambda: np.dot(a, b, out=out), min_time, 5, min)
    return {"n": n, "ms": round(t * 1e3, 3), "gflops": round(2 * n**3 / t / 1e9, 1)}


# ---- implementations -------------------------------------------------------------------------
class Impl:
    """One implementation of a case: `step()` is one timed training step; `check()` returns
    (loss, gradients in torch's layout (canon_*), dx or None) as numpy arrays for the
    cross-check."""

    name = ""

    def step(self) -> object:
        raise NotImplementedError

    def check(self) -> tuple[float, dict, np.ndarray | None]:
        raise NotImplementedError


class GraphRNNImpl(Impl):
    name = "graphrnn"

    def __init__(
        self, model, spec: ModelSpec, x, y_onehot, input_grads=True, backend="numba", dtype=DTYPE
    ):
        dtype = np.dtype(dtype)
        self.fn = model.compile(backend=backend, dtype=dtype.name, input_grads=input_grads)
        self.params = {k: np.ascontiguousarray(v, dtype) for k, v in model.params.items()}
        self.spec, self.H = spec, model.sizes["H"]
        self.inputs = {"x": np.asarray(x, dtype)}
        self.targets = {} if y_onehot is None else {"y": np.asarray(y_onehot, dtype)}

    def step(self):
        return self.fn.loss_and_grad(self.params, self.inputs, self.targets)

    def canon(self) -> dict:
        return self.spec.to_canon(self.params, self.H)

    def check(self):
        loss, grads = self.step()
        dx = grads.pop("x", None)
        return float(loss), self.spec.to_canon(grads, self.H, grad=True), dx


def torch_loop_hidden(cell: str, p: dict, x):
    """The states h(t) [T, B, H] of a cell torch.nn does not ship, as a torch autograd loop
    (input projection hoisted), in the canonical layout."""
    import torch

    if cell != "mgu":
        raise ValueError(f"no torch loop for {cell!r}; torch.nn has it")
    T, B, _ = x.shape
    H = p["W_hh"].shape[1]
    xp = x @ p["W_ih"].T + (p["b_ih"] + p["b_hh"])
    W_fh, W_hh = p["W_hh"][:H], p["W_hh"][H:]
    h = x.new_zeros((B, H))
    hs = []
    for t in range(T):
        f = torch.sigmoid(xp[t, :, :H] + h @ W_fh.T)
        hc = torch.tanh(xp[t, :, H:] + (f * h) @ W_hh.T)
        h = h + f * (hc - h)
        hs.append(h)
    return torch.stack(hs)


class TorchImpl(Impl):
    name = "torch"

    def __init__(self, spec: ModelSpec, canon: dict, x, y_index, input_grads=True, dtype=DTYPE):
        import torch

        self.torch = torch
        dtype = np.dtype(dtype)
        tdt = torch.float64 if dtype == np.float64 else torch.float32
        In, self.B = x.shape[2], x.shape[1]
        H = canon["W_hh"].shape[1]
        self.head = "V" in canon
        self.cell = spec.cell
        self.rnn = None
        names = ("W_ih", "W_hh", "b_ih", "b_hh")
        if spec.torch_cls is not None:
            kwargs = {"nonlinearity": "tanh"} if spec.torch_cls == "RNN" else {}
            self.rnn = getattr(torch.nn, spec.torch_cls)(In, H, **kwargs).to(tdt)
            self.tensors = {
                k: getattr(self.rnn, t)
                for k, t in zip(names, ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"))
            }
        else:
            self.tensors = {k: torch.zeros(canon[k].shape, dtype=tdt) for k in names}
        if self.head:
            self.n_out = canon["V"].shape[0]
            self.lin = torch.nn.Linear(H, self.n_out).to(tdt)
            self.tensors |= {"V": self.lin.weight, "c": self.lin.bias}
        with torch.no_grad():
            for k, t in self.tensors.items():
                t.copy_(torch.from_numpy(np.asarray(canon[k], dtype)))
        for t in self.tensors.values():
            t.requires_grad_(True)
        self.x = torch.from_numpy(np.asarray(x, dtype).copy()).requires_grad_(bool(input_grads))
        if self.head:
            self.y = torch.from_numpy(y_index.reshape(-1).astype(np.int64))

    def step(self):
        for p in self.tensors.values():
            p.grad = None
        self.x.grad = None
        if self.rnn is not None:
            out, _ = self.rnn(self.x)
        else:
            out = torch_loop_hidden(self.cell, self.tensors, self.x)
        if self.head:
            logits = self.lin(out).reshape(-1, self.n_out)
            loss = self.torch.nn.functional.cross_entropy(logits, self.y)
        else:
            loss = (out * out).sum() / self.B
        loss.backward()
        return loss.item()

    def check(self):
        loss = self.step()
        grads = {k: t.grad.numpy().copy() for k, t in self.tensors.items()}
        dx = self.x.grad.numpy().copy() if self.x.requires_grad else None
        return loss, grads, dx


def jax_loss_fn(kind: str, head: bool = True):
    """The cells written with jax.lax.scan, in torch's layout and gate order; the input
    product hoisted out of the scan (as torch does on the CPU). head=False: no output layer,
    loss = mean over batch of sum over t of sum(h * h)."""
    import jax
    import jax.numpy as jnp

    sig = jax.nn.sigmoid

    def elman(p, carry, xp_t):
        h = jnp.tanh(xp_t + carry @ p["W_hh"].T + p["b_hh"])
        return h, h

    def lstm(p, carry, xp_t):
        h, c = carry
        i, f, g, o = jnp.split(xp_t + h @ p["W_hh"].T + p["b_hh"], 4, axis=-1)
        c = sig(f) * c + sig(i) * jnp.tanh(g)
        h = sig(o) * jnp.tanh(c)
        return (h, c), h

    def gru(p, carry, xp_t):  # torch convention: r scales (W_hn h + b_hn)
        h = carry
        xr, xz, xn = jnp.split(xp_t, 3, axis=-1)
        hr, hz, hn = jnp.split(h @ p["W_hh"].T + p["b_hh"], 3, axis=-1)
        r, z = sig(xr + hr), sig(xz + hz)
        n = jnp.tanh(xn + r * hn)
        h = (1.0 - z) * n + z * h
        return h, h

    def mgu(p, carry, xp_t):  # (f, candidate) stacked; the candidate reads f * h
        h = carry
        H = h.shape[-1]
        xf, xh = jnp.split(xp_t + p["b_hh"], 2, axis=-1)
        f = sig(xf + h @ p["W_hh"][:H].T)
        hc = jnp.tanh(xh + (f * h) @ p["W_hh"][H:].T)
        h = h + f * (hc - h)
        return h, h

    cell = {"elman": elman, "lstm": lstm, "gru": gru, "mgu": mgu}[kind]

    def loss(p, x, y):
        T, B, _ = x.shape
        H = p["W_hh"].shape[1]
        h0 = jnp.zeros((B, H), x.dtype)
        carry = (h0, h0) if kind == "lstm" else h0
        xp = x @ p["W_ih"].T + p["b_ih"]
        _, hs = jax.lax.scan(lambda c, xt: cell(p, c, xt), carry, xp)
        if not head:
            return jnp.sum(hs * hs) / B
        logits = hs @ p["V"].T + p["c"]
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits, axis=-1), axis=-1))

    return loss


class JaxImpl(Impl):
    name = "jax"

    def __init__(self, kind: str, canon: dict, x, y_onehot, input_grads=True):
        import jax
        import jax.numpy as jnp

        self.jax = jax
        self.input_grads = bool(input_grads)
        head = "V" in canon
        argnums = (0, 1) if self.input_grads else 0
        self.f = jax.jit(jax.value_and_grad(jax_loss_fn(kind, head), argnums=argnums))
        self.p = {k: jnp.asarray(np.asarray(v, DTYPE)) for k, v in canon.items()}
        self.x = jnp.asarray(x)
        self.y = jnp.asarray(y_onehot) if head else jnp.zeros(())

    def step(self):
        return self.jax.block_until_ready(self.f(self.p, self.x, self.y))

    def check(self):
        loss, g = self.step()
        gp, gx = g if self.input_grads else (g, None)
        grads = {k: np.asarray(v) for k, v in gp.items()}
        return float(loss), grads, None if gx is None else np.asarray(gx)


class NumpyImpl(Impl):
    """bench/numpy_bptt.py: hand-written BPTT, input projection and weight gradients hoisted
    into single GEMMs."""

    name = "numpy"

    def __init__(self, cell: str, canon: dict, x, y_onehot, input_grads=True, dtype=DTYPE):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import numpy_bptt

        self.fn = numpy_bptt.CELLS[cell]
        self.p = {k: np.ascontiguousarray(v, dtype) for k, v in canon.items()}
        self.x = np.ascontiguousarray(x, dtype)
        self.y = None if y_onehot is None or "V" not in canon else np.asarray(y_onehot, dtype)
        self.input_grads = bool(input_grads)

    def step(self):
        return self.fn(self.p, self.x, self.y, self.input_grads)

    def check(self):
        loss, grads, dx = self.step()
        return float(loss), grads, dx


# ---- one case --------------------------------------------------------------------------------
def make_data(s: Size, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((s.T, s.B, s.I), dtype=DTYPE)
    y_index = rng.integers(0, s.O, size=(s.T, s.B))
    y_onehot = np.eye(s.O, dtype=DTYPE)[y_index]
    return x, y_index, y_onehot


def random_canon(spec: ModelSpec, s: Size, head: bool, seed: int = 1) -> dict:
    """torch-like uniform weights, for the peers when graphrnn's model cannot load."""
    rng = np.random.default_rng(seed)
    G, k = spec.gates * s.H, 1 / np.sqrt(s.H)
    shapes = dict(W_ih=(G, s.I), W_hh=(G, s.H), b_ih=(G,), b_hh=(G,))
    if head:
        shapes |= dict(V=(s.O, s.H), c=(s.O,))
    return {n: rng.uniform(-k, k, sh).astype(DTYPE) for n, sh in shapes.items()}


def build_impls(kind: str, spec: ModelSpec, s: Size, loss: str, x, y_index, y_onehot):
    """(impls that built, status of every column, first-call seconds)."""
    status: dict[str, str] = {}
    impls: dict[str, Impl] = {}
    head = loss == "ce"
    input_grads = head  # ce rows: every gradient and dx; h2 rows: the parameters only
    path = ROOT / spec.file
    canon = None
    if path.exists():
        try:
            model = load_model(spec, loss, s)
            impls["graphrnn"] = GraphRNNImpl(
                model, spec, x, y_onehot if head else None, input_grads
            )
            canon = impls["graphrnn"].canon()
        except Exception as e:  # report it in the table, go on with the peers
            status["graphrnn"] = f"error: {type(e).__name__}: {e}"
            traceback.print_exc()
    else:
        status["graphrnn"] = f"model file missing: {spec.file}"
    if canon is None:  # peers still run, from torch-like uniform weights
        canon = random_canon(spec, s, head)
    for name, build in (
        ("torch", lambda: TorchImpl(spec, canon, x, y_index, input_grads)),
        ("jax", lambda: JaxImpl(spec.cell, canon, x, y_onehot, input_grads)),
        ("numpy", lambda: NumpyImpl(spec.cell, canon, x, y_onehot, input_grads)),
    ):
        try:
            impls[name] = build()
        except ImportError as e:
            status[name] = f"not installed ({e.name or e})"
        except Exception as e:
            status[name] = f"error: {type(e).__name__}: {e}"
            traceback.print_exc()
    first_call = {}
    for name, impl in list(impls.items()):
        try:
            t0 = time.perf_counter()
            impl.step()
            first_call[name] = round(time.perf_counter() - t0, 4)
            impl.step()
            status[name] = "ok"
        except Exception as e:
            status[name] = f"error: {type(e).__name__}: {e}"
            traceback.print_exc()
            del impls[name]
    return impls, status, first_call


def cross_check(impls: dict[str, Impl], tol: float = 2e-3) -> dict:
    """Loss, every parameter gradient (torch's layout) and dx of every implementation against
    the first, each as max|a - b| / max|b|."""
    results = {}
    for name, impl in impls.items():
        loss, grads, dx = impl.check()
        grads = {k: np.asarray(v, np.float64) for k, v in grads.items()}
        if dx is not None:
            grads["dx"] = np.asarray(dx, np.float64)
        results[name] = (np.float64(loss), grads)
    names = list(results)
    out = {"reference": names[0] if names else None, "loss": {}, "errors": {}}
    if not names:
        return out
    ref_loss, ref = results[names[0]]
    for name, (loss, grads) in results.items():
        out["loss"][name] = float(loss)
        if name == names[0]:
            continue
        errs = {"loss": float(abs(loss - ref_loss) / max(abs(ref_loss), 1e-30))}
        for what in sorted(set(ref) | set(grads)):
            if what not in ref or what not in grads:
                errs[what] = f"missing in {names[0] if what not in ref else name}"
                continue
            a, b = grads[what], ref[what]
            if a.shape != b.shape:
                errs[what] = f"shape {a.shape} vs {b.shape}"
                continue
            errs[what] = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
        out["errors"][name] = errs
    worst = [v for e in out["errors"].values() for v in e.values() if isinstance(v, float)]
    out["max_error"] = max(worst, default=0.0)
    out["tolerance"] = tol
    out["agree"] = all(
        isinstance(v, float) and v < tol for e in out["errors"].values() for v in e.values()
    )
    return out


CHECK64_SIZE = Size(B=2, I=3, H=4, T=5)


def check_float64(kind: str, loss: str) -> dict:
    """float64 agreement at a tiny size: graphrnn's reference backend (the reference) against
    the NumPy BPTT and torch, on graphrnn's initial weights; tolerance 1e-9."""
    spec, s = MODELS[kind], CHECK64_SIZE
    head = loss == "ce"
    x, y_index, y_onehot = make_data(s, seed=3)
    x = x.astype(np.float64)
    y = y_onehot.astype(np.float64) if head else None
    impls: dict[str, Impl] = {}
    ref = GraphRNNImpl(load_model(spec, loss, s, seed=5), spec, x, y, head, "reference", np.float64)
    impls["graphrnn"] = ref
    rng = np.random.default_rng(7)  # nonzero biases (the 1-D params), so every bias path counts
    for k, v in ref.params.items():
        if v.ndim == 1:
            ref.params[k] = v + rng.uniform(-0.3, 0.3, v.shape)
    canon = ref.canon()
    impls["numpy"] = NumpyImpl(spec.cell, canon, x, y, head, np.float64)
    try:
        impls["torch"] = TorchImpl(spec, canon, x, y_index, head, np.float64)
    except ImportError:
        pass
    return cross_check(impls, tol=1e-9)


def time_alternating(impls: dict[str, Impl], budget: float, min_reps: int, max_reps: int) -> dict:
    """Rounds in which every implementation runs in turn (the order rotating), each for about
    the same time: a fast one runs several calls a round. Stops when the time budget is spent
    and each has min_reps samples, or each has max_reps."""
    names = list(impls)
    if not names:
        return {}
    est = {n: _median_time(impls[n].step, 0.0, 1) for n in names}
    slice_s = max(est.values())
    per_round = {n: int(min(max(1, slice_s / max(est[n], 1e-9)), 50)) for n in names}
    samples: dict[str, list[float]] = {n: [] for n in names}
    gc.collect()
    gc.disable()
    try:
        start, r = time.perf_counter(), 0
        collected = start
        while True:
            for n in names[r % len(names) :] + names[: r % len(names)]:
                for _ in range(per_round[n]):
                    if len(samples[n]) >= max_reps:
                        break
                    t0 = time.perf_counter()
                    impls[n].step()
                    samples[n].append(time.perf_counter() - t0)
            r += 1
            enough = all(len(v) >= min_reps for v in samples.values())
            if enough and time.perf_counter() - start >= budget:
                break
            if all(len(v) >= max_reps for v in samples.values()):
                break
            if time.perf_counter() - collected > 1.0:  # between rounds, never inside a step
                gc.enable()
                gc.collect()
                gc.disable()
                collected = time.perf_counter()
    finally:
        gc.enable()
    out = {}
    for n, v in samples.items():
        ms = sorted(1e3 * t for t in v)
        q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
        out[n] = {
            "median_ms": round(statistics.median(ms), 4),
            "min_ms": round(ms[0], 4),
            "q1_ms": round(q[0], 4),
            "q3_ms": round(q[2], 4),
            "reps": len(ms),
            "samples_ms": [round(1e3 * t, 4) for t in v],
        }
    return out


def run_case(kind: str, size_name: str, loss: str, args) -> dict:
    spec, s = MODELS[kind], SIZES[size_name]
    print(f"[{kind} {loss} {size_name}] B={s.B} I={s.I} H={s.H} T={s.T} O={s.O}", file=sys.stderr)
    case: dict = {"model": kind, "loss": loss, "size": size_name, "dims": asdict(s) | {"O": s.O}}
    case["loadavg_before"] = os.getloadavg()
    if (ROOT / spec.file).exists():
        try:
            case["check_float64"] = check_float64(kind, loss)
        except Exception as e:
            traceback.print_exc()
            case["check_float64"] = {"error": f"{type(e).__name__}: {e}", "agree": False}
        if not case["check_float64"].get("agree"):
            print(f"  WARNING: float64 check failed: {case['check_float64']}", file=sys.stderr)
    x, y_index, y_onehot = make_data(s)
    impls, status, first_call = build_impls(kind, spec, s, loss, x, y_index, y_onehot)
    case["first_call_s"] = first_call
    try:
        case["check"] = cross_check(impls)
    except Exception as e:
        traceback.print_exc()
        case["check"] = {"error": f"{type(e).__name__}: {e}", "agree": False, "errors": {}}
    if not case["check"].get("agree", True):
        print(f"  WARNING: implementations disagree: {case['check']['errors']}", file=sys.stderr)
    head = loss == "ce"
    gemms = step_gemms(s, spec.gates, head, head, spec.recurrent_products)
    case["roofline"] = measure_roofline(s, gemms, args.gemm_time)
    timings = time_alternating(impls, args.budget, args.min_reps, args.max_reps)
    roof_ms, flops = case["roofline"]["ms"], case["roofline"]["flops"]
    peers = {p: timings[p]["median_ms"] for p in PEERS if p in timings}
    fastest_peer = min(peers.values()) if peers else None
    case["fastest_peer"] = min(peers, key=peers.get) if peers else None
    case["impls"] = {}
    for name in IMPLS:
        entry: dict = {"status": status.get(name, "not run")}
        if name in timings:
            t = timings[name]
            entry.update(t)
            entry["ratio_to_fastest_peer"] = (
                round(t["median_ms"] / fastest_peer, 3) if fastest_peer else None
            )
            entry["roofline_fraction"] = round(roof_ms / t["median_ms"], 4)
            entry["gemm_gflops"] = round(flops / (t["median_ms"] * 1e-3) / 1e9, 2)
            entry["memory"] = measure_memory(impls[name].step)
        case["impls"][name] = entry
    case["loadavg_after"] = os.getloadavg()
    del impls
    gc.collect()
    return case


# ---- compile times (subprocesses) ------------------------------------------------------------
def compile_probe(model_file: str, T: int, size: int) -> dict:
    """Run in a child: import graphrnn, compile and run the forward and loss_and_grad kernels
    twice; compile = first call - steady call. Prints one JSON line."""

    def cache_files() -> int:
        dirs = [os.environ.get("GRAPHRNN_CACHE_DIR"), os.environ.get("NUMBA_CACHE_DIR")]
        return sum(1 for d in dirs if d and Path(d).exists() for f in Path(d).rglob("*"))

    files_before = cache_files()
    t0 = time.perf_counter()
    import graphrnn as gr

    out = {"import_s": time.perf_counter() - t0, "T": T}
    t0 = time.perf_counter()
    model = gr.load(ROOT / model_file, I=size, H=size, O=size)
    fn = model.compile(backend="numba", dtype="float32")
    out["load_s"] = time.perf_counter() - t0
    params = {k: np.ascontiguousarray(v, DTYPE) for k, v in model.params.items()}
    x, _, y = make_data(Size(B=4, I=size, H=size, T=T))
    for what, call in (
        ("forward", lambda: fn.forward(params, {"x": x})),
        ("loss_and_grad", lambda: fn.loss_and_grad(params, {"x": x}, {"y": y})),
    ):
        t0 = time.perf_counter()
        call()
        first = time.perf_counter() - t0
        steady = min(_median_time(call, 0.0, 1) for _ in range(3))
        out[what] = {
            "first_call_s": round(first, 4),
            "steady_s": round(steady, 5),
            "compile_s": round(first - steady, 4),
        }
    out["compile_s"] = round(out["forward"]["compile_s"] + out["loss_and_grad"]["compile_s"], 4)
    out["cache_files_added"] = cache_files() - files_before  # 0: nothing was compiled
    try:  # how much of it is graphrnn's own Python (autodiff, loop generation), run again warm
        from dataclasses import replace

        from graphrnn.autodiff import grad
        from graphrnn.backends.numba_cpu import generate_source

        t0 = time.perf_counter()
        adjoint = grad(model.graph)
        out["autodiff_s"] = round(time.perf_counter() - t0, 4)
        t0 = time.perf_counter()
        generate_source(replace(model.graph, loss=None), "float32")
        generate_source(adjoint, "float32")
        out["codegen_s"] = round(time.perf_counter() - t0, 4)
    except Exception as e:  # internals moved: the breakdown is optional
        out["breakdown_error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))
    return out


def run_probe(model_file: str, T: int, size: int, cache: Path, timeout: float) -> dict:
    env = dict(os.environ)
    env["GRAPHRNN_CACHE_DIR"] = str(cache / "graphrnn")
    env["NUMBA_CACHE_DIR"] = str(cache / "numba")  # nothing from another cache may leak in
    cmd = [sys.executable, str(Path(__file__).resolve()), "--compile-probe", model_file]
    cmd += ["--probe-T", str(T), "--probe-size", str(size)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:], "process_s": round(wall, 3)}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = round(wall, 3)
    return result


def measure_compile(quick: bool, timeout: float = 900) -> dict:
    order = ("elman",) if quick else COMPILE_PROBE_MODEL  # --quick: the cheapest compile
    kind = next(k for k in order if (ROOT / MODELS[k].file).exists())
    model_file, size = MODELS[kind].file, 8 if quick else 32
    out = {"model": kind, "size": {"I": size, "H": size, "O": size, "B": 4}}
    runs = [("cold", "A", 10), ("warm", "A", 10)]
    if not quick:
        # T=10000 reuses T=10's kernels (the source does not depend on T), and compiling
        # afresh at T=10000 costs what it costs at T=10
        runs += [("warm_T10000_from_T10_cache", "A", 10000), ("cold_T10000", "B", 10000)]
    with tempfile.TemporaryDirectory(prefix="grnn_bench_") as tmp:
        for label, cache, T in runs:
            print(f"[compile] {label}: {kind} T={T}", file=sys.stderr)
            out[label] = run_probe(model_file, T, size, Path(tmp) / cache, timeout)
    return out


# ---- machine info ----------------------------------------------------------------------------
def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def machine_info() -> dict:
    info = {
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
        "unset_env": UNSET_ENV,
        "env": {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("OPENBLAS", "OMP_", "MKL_", "NUMBA_", "GRAPHRNN", "XLA_", "JAX_"))
        },
        "versions": {
            m: _version(m)
            for m in ("graphrnn", "numpy", "numba", "llvmlite", "scipy", "torch", "jax", "jaxlib")
        },
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        info["cpu_model"] = match.group(1) if match else None
    except OSError:
        info["cpu_model"] = None
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = threadpool_info()
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
    except ImportError:
        pass
    return info


def blas_summary(info: dict) -> str:
    pools = info.get("threadpools")
    if not isinstance(pools, list):
        return str(pools)
    parts = []
    for p in pools:
        lib = Path(p.get("filepath", "?")).name
        detail = p.get("internal_api", "?")
        if p.get("architecture"):
            detail += f" {p.get('version', '')} {p['architecture']}"
        parts.append(f"{lib} ({detail}, {p.get('num_threads')} threads)")
    return "; ".join(parts)


# ---- report ----------------------------------------------------------------------------------
def _fmt_ms(entry: dict) -> str:
    if "median_ms" not in entry:
        return entry["status"]
    return f"{entry['median_ms']:.3g} ({entry['reps']})"


def print_report(result: dict) -> None:
    print()
    print(
        f"machine: {result['machine'].get('cpu_model')}, cpu_count={result['machine']['cpu_count']}"
    )
    print(f"BLAS: {blas_summary(result['machine'])}")
    print(f"torch threads: {result['machine'].get('torch_threads')}")
    peak = result["gemm_peak"]
    print(f"numpy float32 GEMM peak: {peak['gflops']} GFLOP/s at {peak['n']}^3")
    print(f"load average at start / end: {result['loadavg_start']} / {result['loadavg_end']}")
    print()
    print("Step time: median ms (repetitions); ratio = graphrnn / fastest of torch, jax, numpy;")
    print("roofline = numpy time of the step's GEMMs at their shapes; fraction = roofline /")
    print("median; loss ce = output layer + cross-entropy, every gradient and dx; h2 = loss on")
    print("h directly (sum of h*h), parameter gradients only; agree = float32 cross-check /")
    print("float64 check (graphrnn reference backend vs numpy and torch at B2 I3 H4 T5).")
    print()
    head = "| model | loss | size | graphrnn ms | torch ms | jax ms | numpy ms | ratio "
    head += "| roofline ms | GFLOP | fraction graphrnn / torch / jax / numpy | agree |"
    print(head)
    print("|" + "---|" * 12)

    def agree(chk: dict | None) -> str:
        if chk is None:
            return "-"
        if "error" in chk:
            return "check failed"
        return "yes" if chk.get("agree") else f"NO ({chk.get('max_error', 0):.1e})"

    for c in result["cases"]:
        im = c["impls"]
        frac = " / ".join(
            f"{im[n]['roofline_fraction']:.2f}" if "roofline_fraction" in im[n] else "-"
            for n in IMPLS
        )
        ratio = im["graphrnn"].get("ratio_to_fastest_peer")
        times = " | ".join(_fmt_ms(im[n]) for n in IMPLS)
        print(
            f"| {c['model']} | {c.get('loss', 'ce')} | {c['size']} | {times} "
            f"| {ratio if ratio is not None else '-'} "
            f"| {c['roofline']['ms']:.3g} | {c['roofline']['flops'] / 1e9:.3g} | {frac} "
            f"| {agree(c['check'])} / {agree(c.get('check_float64'))} |"
        )
    print()
    print("Peak memory of one step, MiB: RSS peak delta (every allocator) / tracemalloc peak")
    print("(numpy, Numba's runtime and Python objects; not torch's or XLA's allocators).")
    print()
    print("| model | loss | size | " + " | ".join(IMPLS) + " |")
    print("|" + "---|" * (3 + len(IMPLS)))
    for c in result["cases"]:
        cells = []
        for n in IMPLS:
            mem = c["impls"][n].get("memory")
            cells.append(
                f"{mem['rss_peak_delta_mib']:.1f} / {mem['tracemalloc_peak_mib']:.2f}"
                if mem
                else c["impls"][n]["status"]
            )
        print(f"| {c['model']} | {c.get('loss', 'ce')} | {c['size']} | " + " | ".join(cells) + " |")
    comp = result.get("compile")
    if comp:
        print()
        print(f"graphrnn compile time, {comp['model']} forward + loss_and_grad kernels, seconds")
        print("(first call - steady call, in a fresh subprocess):")
        print()
        print(
            "| run | T | forward | loss_and_grad | total | of it autodiff + codegen "
            "| process | cache files added |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for label, r in comp.items():
            if not isinstance(r, dict) or label == "size":
                continue
            if "error" in r:
                print(f"| {label} | - | error | | | | {r['process_s']} | |")
                continue
            print(
                f"| {label} | {r['T']} | {r['forward']['compile_s']:.2f} "
                f"| {r['loss_and_grad']['compile_s']:.2f} | {r['compile_s']:.2f} "
                f"| {r.get('autodiff_s', 0) + r.get('codegen_s', 0):.2f} | {r['process_s']:.1f} "
                f"| {r.get('cache_files_added', '-')} |"
            )
    print()


# ---- main ------------------------------------------------------------------------------------
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, short budgets (smoke test)")
    ap.add_argument(
        "--models", default=",".join(MODELS), help="comma list from " + ",".join(MODELS)
    )
    ap.add_argument(
        "--losses",
        default=",".join(LOSSES),
        help="comma list: ce (output layer, cross-entropy, every gradient and dx), "
        "h2 (loss = sum of h*h over t, no output layer, parameter gradients only)",
    )
    ap.add_argument("--sizes", default=None, help="comma list from " + ",".join(SIZES))
    ap.add_argument("--json", default=None, help="write every figure and the machine info here")
    ap.add_argument("--budget", type=float, default=None, help="seconds of timing per case")
    ap.add_argument("--min-reps", type=int, default=3)
    ap.add_argument("--max-reps", type=int, default=2000)
    ap.add_argument("--gemm-time", type=float, default=None, help="seconds per roofline GEMM")
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=os.cpu_count(),
        help="torch.set_num_threads (default os.cpu_count(); see docs/benchmarks.md)",
    )
    ap.add_argument(
        "--blas-threads",
        type=int,
        default=None,
        help="limit every BLAS pool (numpy's and the one Numba calls) through threadpoolctl; "
        "default: leave the libraries' own setting",
    )
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time probes")
    ap.add_argument(
        "--check-only",
        action="store_true",
        help="only the float64 check (graphrnn's reference backend against the NumPy BPTT and "
        "torch at B2 I3 H4 T5) of every --models x --losses; exit status 1 on disagreement",
    )
    ap.add_argument("--compile-probe", metavar="MODEL_FILE", help=argparse.SUPPRESS)
    ap.add_argument("--probe-T", type=int, default=10, help=argparse.SUPPRESS)
    ap.add_argument("--probe-size", type=int, default=32, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sizes is None:
        args.sizes = ",".join(QUICK_SIZES if args.quick else FULL_SIZES)
    if args.budget is None:
        args.budget = 0.5 if args.quick else 10.0
    if args.gemm_time is None:
        args.gemm_time = 0.01 if args.quick else 0.1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compile_probe:
        compile_probe(args.compile_probe, args.probe_T, args.probe_size)
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    losses = [lo.strip() for lo in args.losses.split(",") if lo.strip()]
    for lo in losses:
        if lo not in LOSSES:
            sys.exit(f"unknown loss {lo!r}; choose from {', '.join(LOSSES)}")
    for m in models:
        if m not in MODELS:
            sys.exit(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    for s in sizes:
        if s not in SIZES:
            sys.exit(f"unknown size {s!r}; choose from {', '.join(SIZES)}")
    if args.check_only:
        failed = 0
        for m in models:
            for lo in losses:
                chk = check_float64(m, lo)
                print(
                    f"{m} {lo}: {'agree' if chk['agree'] else 'DISAGREE'} "
                    f"(max relative error {chk['max_error']:.1e}, vs {', '.join(chk['errors'])})"
                )
                failed += not chk["agree"]
        return 1 if failed else 0
    try:
        import torch

        torch.set_num_threads(args.torch_threads)
    except ImportError:
        pass
    limits = None
    if args.blas_threads is not None:
        # Numba's np.dot calls scipy's OpenBLAS (a second copy beside numpy's): load it first
        # so that the limit reaches it too
        import scipy.linalg.cython_blas  # noqa: F401
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=args.blas_threads, user_api="blas")
    started = time.perf_counter()
    result: dict = {"args": vars(args), "loadavg_start": os.getloadavg()}
    result["gemm_peak"] = measure_gemm_peak(512 if args.quick else 2048, args.gemm_time)
    result["cases"] = [run_case(m, s, lo, args) for s in sizes for lo in losses for m in models]
    if not args.no_compile:
        result["compile"] = measure_compile(args.quick)
    result["loadavg_end"] = os.getloadavg()
    result["machine"] = machine_info()  # after every library is loaded: all BLAS pools show
    result["wall_s"] = round(time.perf_counter() - started, 1)
    if limits is not None:
        limits.restore_original_limits()
    print_report(result)
    print(f"total {result['wall_s']} s", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
