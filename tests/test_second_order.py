"""Hessian- and Gauss-Newton-vector products (graphrnn/second_order.py) in float64.

- H v against finite differences of the gradient along v (a five-point stencil: H v =
  (8 g(+e) - 8 g(-e) - g(+2e) + g(-2e)) / 12e + O(e^4)) for every model of the zoo at small
  sizes (the SpatialRNN classifier at the zoo test's reduced widths), on the reference backend,
  and on Numba for two models;
- H v against torch.autograd.functional.hvp (double backward) through torch.nn.LSTM;
- G v against J^T H_L J built explicitly: J by central differences of the outputs, H_L the
  closed-form Hessian of softmax cross-entropy (sum(y) (diag p - p p^T)) or of mse (2/O I).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_model_zoo import MODELS, ROOT, load_small

import graphrnn as gr
from graphrnn.check import random_data
from graphrnn.cli import main
from graphrnn.schedule import Loop, schedule

RTOL = 1e-6


def rel_error(a: dict, b: dict) -> float:
    x = np.concatenate([np.ravel(a[k]) for k in sorted(b)])
    y = np.concatenate([np.ravel(b[k]) for k in sorted(b)])
    return float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-300))


def direction(params: dict, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=v.shape) for k, v in params.items()}


def trainable(model: gr.Model) -> dict:
    return {k: v for k, v in model.params.items() if k not in model.graph.state_names}


def numeric_hvp(fn, params, inputs, targets, v, eps: float) -> dict:
    def g(s):
        moved = {**params, **{k: params[k] + s * v[k] for k in v}}
        return fn.loss_and_grad(moved, inputs, targets)[1]

    g2, g1, m1, m2 = g(2 * eps), g(eps), g(-eps), g(-2 * eps)
    return {k: (8 * g1[k] - 8 * m1[k] - g2[k] + m2[k]) / (12 * eps) for k in v}


def problem(model: gr.Model, tau: int = 4, batch: int = 2):
    inputs, targets = random_data(model, tau=tau, batch=batch, seed=0)
    params = {**model.params, **model.state}
    return params, inputs, targets, direction(trainable(model))


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_hvp_matches_finite_differences_of_gradients(path):
    model = load_small(path)
    # batch norm over few values is strongly curved: a smaller step (as `graphrnn check`)
    eps = 1e-6 if model.graph.batchnorms else 1e-4
    params, inputs, targets, v = problem(model)
    fn = model.compile("reference", "float64")
    hv = fn.hvp(params, inputs, targets, v)
    assert set(hv) == set(v)
    assert all(hv[k].shape == v[k].shape for k in v)
    expected = numeric_hvp(fn, params, inputs, targets, v, eps)
    assert rel_error(hv, expected) < RTOL
    assert rel_error(hv, {k: 0 * x for k, x in hv.items()}) > 0  # not vacuous


@pytest.mark.parametrize("stem", ["lstm", "gru_regressor"])
def test_numba_products_match_reference_and_differences(stem):
    model = load_small(ROOT / "models" / f"{stem}.grnn")
    params, inputs, targets, v = problem(model, tau=3)
    ref = model.compile("reference", "float64")
    fast = model.compile("numba", "float64")
    hv = fast.hvp(params, inputs, targets, v)
    assert rel_error(hv, numeric_hvp(ref, params, inputs, targets, v, 1e-4)) < RTOL
    assert rel_error(hv, ref.hvp(params, inputs, targets, v)) < 1e-12
    gv = fast.gnvp(params, inputs, targets, v)
    assert rel_error(gv, ref.gnvp(params, inputs, targets, v)) < 1e-12


def test_emulated_cuda_products_match_reference():
    """The CuPy backend compiles the product graphs like any other (its kernels run here on
    the CPU through the emulated device of tests/backends/test_cupy_gpu.py)."""
    from tests.backends.test_cupy_gpu import emulated

    model = load_small(ROOT / "models" / "elman.grnn")
    params, inputs, targets, v = problem(model, tau=3)
    ref = model.compile("reference", "float64")
    gpu = emulated(model.graph, "float64")
    assert (
        rel_error(gpu.hvp(params, inputs, targets, v), ref.hvp(params, inputs, targets, v)) < 1e-12
    )
    gv, expected = gpu.gnvp(params, inputs, targets, v), ref.gnvp(params, inputs, targets, v)
    assert rel_error(gv, expected) < 1e-12


# ---- against torch's double backward --------------------------------------------------
def test_hvp_matches_torch_double_backward():
    torch = pytest.importorskip("torch")
    from torch.func import functional_call

    n_in, h, n_out, steps, batch = 3, 4, 2, 5, 3
    model = gr.load(ROOT / "models" / "lstm.grnn", I=n_in, H=h, O=n_out)
    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    rng = np.random.default_rng(3)
    params = {k: p + 0.3 * rng.normal(size=p.shape) for k, p in params.items()}
    x = rng.normal(size=(steps, batch, n_in))
    y = np.exp(rng.normal(size=(steps, batch, n_out)))
    y /= y.sum(-1, keepdims=True)
    v = direction(params, seed=4)
    ours = model.compile("reference", "float64").hvp(params, {"x": x}, {"y": y}, v)

    lstm = torch.nn.LSTM(n_in, h).double()
    names = sorted(params)
    xt, yt = torch.tensor(x), torch.tensor(y)

    def loss(*tensors):
        p = dict(zip(names, tensors))
        # the model file's gates (f, i, c, o) on [h, x] -> torch's stacked (i, f, g, o)
        gates = [p[f"h.W{g}"] for g in "ifco"]
        weights = {
            "weight_ih_l0": torch.cat([w[:, h:] for w in gates]),
            "weight_hh_l0": torch.cat([w[:, :h] for w in gates]),
            "bias_ih_l0": torch.cat([p[f"h.b{g}"] for g in "ifco"]),
            "bias_hh_l0": torch.zeros(4 * h, dtype=torch.float64),
        }
        out, _ = functional_call(lstm, weights, (xt,))
        o = out @ p["V"].T + p["c"]
        return (-(yt * torch.log_softmax(o, -1)).sum(-1)).mean()

    point = tuple(torch.tensor(params[k]) for k in names)
    along = tuple(torch.tensor(v[k]) for k in names)
    _, theirs = torch.autograd.functional.hvp(loss, point, along)
    theirs = {k: t.numpy() for k, t in zip(names, theirs)}
    assert rel_error(ours, theirs) < 1e-10


# ---- Gauss-Newton against J^T H_L J ---------------------------------------------------
def jacobian(fn, params: dict, inputs: dict, output: str, eps: float = 1e-6) -> np.ndarray:
    """d output / d params by central differences: [output elements, parameter elements]."""
    names = sorted(params)
    columns = []
    for k in names:
        flat = params[k].reshape(-1)
        for i in range(flat.size):
            saved = flat[i]
            flat[i] = saved + eps
            plus = fn.forward(params, inputs)[output]
            flat[i] = saved - eps
            minus = fn.forward(params, inputs)[output]
            flat[i] = saved
            columns.append(((plus - minus) / (2 * eps)).ravel())
    return np.stack(columns, axis=1)


def loss_hessian(o: np.ndarray, y: np.ndarray, kind: str, batch: int) -> np.ndarray:
    """The Hessian of the batch-mean loss in the outputs o ([..., K]; per-step terms averaged
    over the steps), block diagonal over steps and examples."""
    rows = o.reshape(-1, o.shape[-1])
    weight = 1.0 / rows.shape[0]  # mean over steps, then over the batch
    blocks = []
    for z, t in zip(rows, y.reshape(rows.shape)):
        if kind == "ce":
            p = np.exp(z - z.max())
            p /= p.sum()
            blocks.append(weight * t.sum() * (np.diag(p) - np.outer(p, p)))
        else:
            blocks.append(weight * 2.0 / z.size * np.eye(z.size))
    size = sum(b.shape[0] for b in blocks)
    full = np.zeros((size, size))
    at = 0
    for b in blocks:
        full[at : at + b.shape[0], at : at + b.shape[0]] = b
        at += b.shape[0]
    return full


@pytest.mark.parametrize("stem, kind", [("elman", "ce"), ("gru_regressor", "mse")])
def test_gauss_newton_matches_explicit_product(stem, kind):
    model = gr.load(ROOT / "models" / f"{stem}.grnn", I=2, H=3, O=2)
    params, inputs, targets, v = problem(model, tau=3)
    fn = model.compile("reference", "float64")
    gv = fn.gnvp(params, inputs, targets, v)
    o = fn.forward(params, inputs)["o"]
    J = jacobian(fn, {k: p.copy() for k, p in params.items()}, inputs, "o")
    H = loss_hessian(o, targets["y"], kind, batch=2)
    flat_v = np.concatenate([v[k].ravel() for k in sorted(v)])
    explicit = J.T @ H @ J @ flat_v
    ours = np.concatenate([gv[k].ravel() for k in sorted(v)])
    assert np.linalg.norm(ours - explicit) / np.linalg.norm(explicit) < 1e-7
    assert flat_v @ ours > 0  # positive semi-definite, and not the (indefinite) Hessian
    hv = fn.hvp(params, inputs, targets, v)
    assert rel_error(gv, hv) > 1e-3


def inline(text: str, **sizes: int):
    """A model written here, compiled for the reference backend, with a problem for it."""
    model = gr.loads(text, **sizes)
    return (model.compile("reference", "float64"), *problem(model))


def test_gauss_newton_equals_hessian_for_a_linear_model():
    """Where the predictions are linear in the parameters, H = J^T H_L J exactly."""
    fn, params, inputs, targets, v = inline(
        """
model Linear(I, O):
    input  x[I] over t
    target y[O] over t
    param  V[O, I] ~ glorot_uniform
    param  c[O]    ~ zeros
    o(t) = V @ x(t) + c
    loss = mean over t of softmax_cross_entropy(o(t), y(t))
""",
        I=3,
        O=4,
    )
    gv, hv = fn.gnvp(params, inputs, targets, v), fn.hvp(params, inputs, targets, v)
    assert rel_error(gv, hv) < 1e-12


# ---- errors ---------------------------------------------------------------------------
def test_vector_errors_name_the_parameter():
    model = gr.load(ROOT / "models" / "elman.grnn", I=2, H=3, O=2)
    params, inputs, targets, v = problem(model)
    fn = model.compile("reference", "float64")
    missing = {k: a for k, a in v.items() if k != "W"}
    with pytest.raises(gr.DataError, match="no entry for parameter 'W'"):
        fn.hvp(params, inputs, targets, missing)
    with pytest.raises(gr.DataError, match=r"parameter 'U' has shape \[2, 3\]; expected \[3, 2\]"):
        fn.hvp(params, inputs, targets, {**v, "U": np.zeros((2, 3))})
    with pytest.raises(gr.DataError, match="unknown parameters \\['Q'\\]"):
        fn.gnvp(params, inputs, targets, {**v, "Q": np.zeros(3)})


def test_gauss_newton_needs_a_convex_output_loss():
    fn, params, inputs, targets, v = inline(
        """
model Odd(I, H):
    input  x[I] over t
    target y[H] over t
    param  W[H, I] ~ glorot_uniform
    h(t) = tanh(W @ x(t))
    loss = mean over t of sum(h(t) * y(t))
""",
        I=2,
        H=3,
    )
    with pytest.raises(gr.GraphRNNError, match="softmax_cross_entropy or mse term"):
        fn.gnvp(params, inputs, targets, v)


# ---- the documentation's examples -------------------------------------------------------
def test_docs_examples_run(monkeypatch):
    """docs/second_order.md: its python blocks run in order in one namespace."""
    text = (ROOT / "docs" / "second_order.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/second_order.md", "exec"), namespace)


def test_products_are_folded_graphs_of_four_recurrences():
    """Forward, BPTT, the tangents forward, their adjoints backward: loops over t whose
    bodies do not depend on T (the gradient graph has the first two)."""
    model = gr.load(ROOT / "models" / "elman.grnn", I=2, H=3, O=2)
    for graph, expected in ((model.hvp_graph(), 4), (model.gnvp_graph(), 3)):
        loops = [item for item in schedule(graph.roots()) if isinstance(item, Loop)]
        assert len(loops) == expected
        assert sum(loop.forward for loop in loops) == 2


def test_compile_prints_the_product_graphs(capsys):
    for graph in ("hvp", "gnvp"):
        assert (
            main(["compile", str(ROOT / "models/elman.grnn"), "--graph", graph, "--emit", "ir"])
            == 0
        )
        out = capsys.readouterr().out
        assert "'vector:W'" in out and "'W'" in out


@pytest.mark.parametrize("stem", ["lstm", "gru_torch"])
def test_products_multiply_static_matrices(stem):
    """A weight's direction reaches products as one matrix, not a copy per step and example
    (a broadcast matrix made the Numba HVP about 50 times a gradient at S2)."""
    model = gr.load(ROOT / "models" / f"{stem}.grnn", I=2, H=3, O=2)
    for graph in (model.hvp_graph(), model.gnvp_graph()):
        for node in graph.nodes():
            if node.op in ("matmul", "transpose"):
                assert node.inputs[0].op != "broadcast", node
