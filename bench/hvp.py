#!/usr/bin/env python
"""One Hessian-vector product against one gradient, float32: graphrnn's Numba backend
(`Compiled.hvp`, reverse over reverse; `Compiled.gnvp`, the Gauss-Newton product) beside
PyTorch's double backward (torch.nn.LSTM/GRU: grad with create_graph, then the gradient of
<g, v>) and JAX's forward over reverse (jvp of grad, lax.scan cells), timed alternately in one
process. Gradients and products are of the parameters only (no input gradient).

    python bench/hvp.py [--quick] [--models lstm,gru] [--sizes S2] [--json F]

Same work as bench/rnn_step.py (its sizes, weights, cells and loss: mean softmax
cross-entropy of o(t) = V h(t) + c); the direction v is standard normal in graphrnn's layout,
mapped to torch's. Before timing, the script checks that the three agree on the loss and on
the V block of H v. docs/second_order.md holds the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rnn_step import (  # noqa: E402  (its import also sets the BLAS and JAX environment)
    DTYPE,
    MODELS,
    ROOT,
    SIZES,
    Impl,
    jax_loss_fn,
    make_data,
    np,
    time_alternating,
)


class GraphRNN(Impl):
    def __init__(self, model, x, y, v, kind: str):
        self.name = f"graphrnn {kind}"
        self.fn = model.compile("numba", "float32", input_grads=False)
        self.params = {k: np.ascontiguousarray(a, DTYPE) for k, a in model.params.items()}
        self.kind, self.inputs, self.targets, self.v = kind, {"x": x}, {"y": y}, v

    def step(self):
        if self.kind == "grad":
            return self.fn.loss_and_grad(self.params, self.inputs, self.targets)
        return getattr(self.fn, self.kind)(self.params, self.inputs, self.targets, self.v)

    def check(self):
        return self.fn.loss(self.params, self.inputs, self.targets), self.step()


class Torch(Impl):
    def __init__(self, spec, canon: dict, vcanon: dict, x, y_index, kind: str):
        import torch

        self.torch, self.name, self.kind = torch, f"torch {kind}", kind
        H, n_out = canon["W_hh"].shape[1], canon["V"].shape[0]
        extra = {"nonlinearity": "tanh"} if spec.torch_cls == "RNN" else {}
        rnn = getattr(torch.nn, spec.torch_cls)(x.shape[2], H, **extra)
        self.rnn, self.n_out = rnn, n_out
        names = {"W_ih": "weight_ih_l0", "W_hh": "weight_hh_l0", "b_ih": "bias_ih_l0"}
        names["b_hh"] = "bias_hh_l0"
        with torch.no_grad():
            for key, attr in names.items():
                getattr(rnn, attr).copy_(torch.from_numpy(np.asarray(canon[key], DTYPE)))
        self.V = torch.tensor(np.asarray(canon["V"], DTYPE), requires_grad=True)
        self.c = torch.tensor(np.asarray(canon["c"], DTYPE), requires_grad=True)
        self.params = [getattr(rnn, names[k]) for k in names] + [self.V, self.c]
        self.v = [torch.from_numpy(np.asarray(vcanon[k], DTYPE)) for k in (*names, "V", "c")]
        self.x = torch.from_numpy(x.copy())
        self.y = torch.from_numpy(y_index.reshape(-1).astype(np.int64))

    def loss(self):
        out, _ = self.rnn(self.x)
        logits = out @ self.V.T + self.c
        return self.torch.nn.functional.cross_entropy(logits.reshape(-1, self.n_out), self.y)

    def step(self):
        loss = self.loss()
        if self.kind == "grad":
            return self.torch.autograd.grad(loss, self.params)
        grads = self.torch.autograd.grad(loss, self.params, create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(grads, self.v))
        return self.torch.autograd.grad(dot, self.params)

    def check(self):
        return self.loss().item(), self.step()


class Jax(Impl):
    def __init__(self, model_kind: str, canon: dict, vcanon: dict, x, y, kind: str):
        import jax
        import jax.numpy as jnp

        self.jax, self.name, self.kind = jax, f"jax {kind}", kind
        loss = jax_loss_fn(model_kind)
        grad = jax.grad(loss)
        self.loss = jax.jit(loss)
        if kind == "grad":
            self.f = jax.jit(lambda p, v, x, y: grad(p, x, y))
        else:
            self.f = jax.jit(lambda p, v, x, y: jax.jvp(lambda q: grad(q, x, y), (p,), (v,))[1])
        self.p = {k: jnp.asarray(np.asarray(a, DTYPE)) for k, a in canon.items()}
        self.v = {k: jnp.asarray(np.asarray(a, DTYPE)) for k, a in vcanon.items()}
        self.x, self.y = jnp.asarray(x), jnp.asarray(y)

    def step(self):
        return self.jax.block_until_ready(self.f(self.p, self.v, self.x, self.y))

    def check(self):
        return float(self.loss(self.p, self.x, self.y)), self.step()


def v_block(name: str, result) -> np.ndarray:
    """The V block of a product (or gradient), whatever the implementation returns."""
    if name.startswith("graphrnn"):
        return np.asarray(result[1]["V"] if name.endswith("grad") else result["V"])
    if name.startswith("torch"):
        return result[-2].detach().numpy()
    return np.asarray(result["V"])


def run_case(model_kind: str, size: str, budget: float) -> dict:
    import graphrnn as gr

    spec, s = MODELS[model_kind], SIZES[size]
    x, y_index, y = make_data(s)
    model = gr.load(ROOT / spec.file, I=s.I, H=s.H, O=s.O)
    rng = np.random.default_rng(2)
    v = {k: rng.standard_normal(a.shape).astype(DTYPE) for k, a in model.params.items()}
    canon, vcanon = spec.to_canon(model.params, s.H), spec.to_canon(v, s.H)
    impls = {}
    for kind in ("grad", "hvp", "gnvp"):
        impls[f"graphrnn {kind}"] = GraphRNN(model, x, y, v, kind)
    for kind in ("grad", "hvp"):
        impls[f"torch {kind}"] = Torch(spec, canon, vcanon, x, y_index, kind)
        impls[f"jax {kind}"] = Jax(model_kind, canon, vcanon, x, y, kind)
    checks = {name: impl.check() for name, impl in impls.items()}  # also compiles
    ref = checks["graphrnn hvp"][1]
    errors = {}
    for name in ("torch hvp", "jax hvp"):
        ours, theirs = v_block("graphrnn hvp", ref), v_block(name, checks[name][1])
        errors[name] = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    losses = {n: float(c[0]) for n, c in checks.items()}
    times = time_alternating(impls, budget, min_reps=3, max_reps=200)
    medians = {n: t["median_ms"] for n, t in times.items()}
    ratios = {
        f"{impl} {kind}/grad": medians[f"{impl} {kind}"] / medians[f"{impl} grad"]
        for impl, kind in (("graphrnn", "hvp"), ("graphrnn", "gnvp"), ("torch", "hvp"))
        + (("jax", "hvp"),)
    }
    return {
        "model": model_kind,
        "size": size,
        "loss": losses,
        "hvp_V_error_vs_graphrnn": errors,
        "median_ms": medians,
        "ratio": ratios,
        "loadavg": os.getloadavg(),
    }


def print_case(case: dict) -> None:
    print(f"\n{case['model']} {case['size']} (load {case['loadavg'][0]:.2f})")
    for name, ms in case["median_ms"].items():
        print(f"  {name:14s} {ms:10.2f} ms")
    for name, r in case["ratio"].items():
        print(f"  {name:20s} {r:6.2f}")
    for name, e in case["hvp_V_error_vs_graphrnn"].items():
        print(f"  H v (V block) graphrnn vs {name}: {e:.1e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--models", default="lstm,gru")
    ap.add_argument("--sizes", default=None, help="default S2 (Q1 with --quick)")
    ap.add_argument("--budget", type=float, default=None, help="seconds of timing per case")
    ap.add_argument("--json", default=None)
    ap.add_argument("--torch-threads", type=int, default=os.cpu_count(), help="as rnn_step.py")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.torch_threads)
    sizes = (args.sizes or ("Q1" if args.quick else "S2")).split(",")
    budget = args.budget if args.budget is not None else (0.5 if args.quick else 20.0)
    cases = []
    for model_kind in args.models.split(","):
        for size in sizes:
            cases.append(run_case(model_kind, size, budget))
            print_case(cases[-1])
    bad = [c for c in cases for e in c["hvp_V_error_vs_graphrnn"].values() if not e < 2e-3]
    if args.json:
        Path(args.json).write_text(json.dumps(cases, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
