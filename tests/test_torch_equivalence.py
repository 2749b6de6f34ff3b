"""The zoo's recurrent layers against PyTorch's (torch.nn.RNN / LSTM / GRU), in float64.

The torch module's weights are copied into the graphrnn model; both sides then compute the
same output layer o = V h + c and loss, and must agree on every hidden state, the outputs,
the loss and the gradient of every weight (and of the input) to relative error 1e-8.

Mapping from torch's layout onto the model files' (see the files' header comments):
- torch stacks the gates' rows in weight_ih_l{k} [G*H, in] and weight_hh_l{k} [G*H, H], in the
  order (i, f, g, o) for LSTM and (r, z, n) for GRU, and has two biases b_ih and b_hh;
- the LSTM file has one matrix per gate on [h(t-1), x(t)] (h first):
  Wf = [W_hf | W_if], bf = b_if + b_hf, and Wi, Wc (torch's g), Wo alike;
- the GRU file (torch variant) has Wr = [W_hr | W_ir], br = b_ir + b_hr, Wz alike, and keeps
  the candidate's two matrices and biases: Wnx = W_in, bnx = b_in, Wnh = W_hn, bnh = b_hn;
- the Elman-type files have U = W_ih, W = W_hh, b = b_ih + b_hh per layer and direction.
A summed bias b = b_ih + b_hh has the gradient of each of b_ih and b_hh (they are equal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import graphrnn as gr  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_IN, H, N_OUT, T, B = 3, 4, 2, 5, 3  # sizes I, H, O; steps; batch
TOL = 1e-8


def rel_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    denom = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


# ---- torch weights -> the model files' parameters ---------------------------------------
def add(a, b):
    return a + b


def same(a, b):
    """For gradients: b_ih and b_hh of one summed bias have the same gradient."""
    assert rel_error(a, b) < TOL
    return a


def rnn_map(prefix: str, w: dict, combine) -> dict:
    return {
        f"{prefix}U": w["w_ih"],
        f"{prefix}W": w["w_hh"],
        f"{prefix}b": combine(w["b_ih"], w["b_hh"]),
    }


def lstm_map(prefix: str, w: dict, combine) -> dict:
    out = {}
    for ours, theirs in (("f", "f"), ("i", "i"), ("c", "g"), ("o", "o")):
        k = "ifgo".index(theirs)
        rows = slice(k * H, (k + 1) * H)
        out[f"{prefix}W{ours}"] = np.concatenate([w["w_hh"][rows], w["w_ih"][rows]], axis=1)
        out[f"{prefix}b{ours}"] = combine(w["b_ih"][rows], w["b_hh"][rows])
    return out


def torch_layout_map(prefix: str, w: dict, combine) -> dict:
    """Model files that store the weights as torch does (lstm_torch.grnn): as they are."""
    names = {"W_ih": "w_ih", "W_hh": "w_hh", "b_ih": "b_ih", "b_hh": "b_hh"}
    return {f"{prefix}{ours}": w[theirs] for ours, theirs in names.items()}


def gru_map(prefix: str, w: dict, combine) -> dict:
    r, z, n = (slice(k * H, (k + 1) * H) for k in range(3))
    return {
        f"{prefix}Wr": np.concatenate([w["w_hh"][r], w["w_ih"][r]], axis=1),
        f"{prefix}br": combine(w["b_ih"][r], w["b_hh"][r]),
        f"{prefix}Wz": np.concatenate([w["w_hh"][z], w["w_ih"][z]], axis=1),
        f"{prefix}bz": combine(w["b_ih"][z], w["b_hh"][z]),
        f"{prefix}Wnx": w["w_ih"][n],
        f"{prefix}bnx": w["b_ih"][n],
        f"{prefix}Wnh": w["w_hh"][n],
        f"{prefix}bnh": w["b_hh"][n],
    }


def torch_tensors(module, layer: int, reverse: bool, grad: bool) -> dict:
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    names = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}
    out = {key: getattr(module, name + suffix) for key, name in names.items()}
    return {k: (v.grad if grad else v).detach().numpy().copy() for k, v in out.items()}


# ---- the cases ----------------------------------------------------------------------------
@dataclass
class Case:
    file: str
    make: Callable  # () -> torch module
    cell: Callable  # rnn_map / lstm_map / gru_map
    prefix: Callable  # (layer, reverse) -> parameter prefix in the model file
    state: Callable  # (layer, reverse) -> name of that layer's hidden state in forward()
    output: str  # name of the last layer's (concatenated) hidden state in forward()
    loss: str = "step_ce"  # step_ce | last_ce | last_mse
    zero: tuple = ()  # graphrnn-only parameters set to 0 (and not compared)


def single(prefix: str) -> dict:
    return dict(prefix=lambda layer, rev: prefix, state=lambda layer, rev: "h", output="h")


def stacked(layer, rev):
    return f"h[{layer + 1}]."


def bidir(layer, rev):
    return "h.bw." if rev else "h.fw."


def deep_bidir(layer, rev):
    return f"h[{layer + 1}]." + ("bw." if rev else "fw.")


nn = torch.nn
CASES = {
    "elman": Case("elman.grnn", lambda: nn.RNN(N_IN, H), rnn_map, **single("")),
    "elman_relu": Case(
        "elman_relu.grnn", lambda: nn.RNN(N_IN, H, nonlinearity="relu"), rnn_map, **single("h.")
    ),
    "lstm": Case("lstm.grnn", lambda: nn.LSTM(N_IN, H), lstm_map, **single("h.")),
    "lstm_torch": Case(
        "lstm_torch.grnn", lambda: nn.LSTM(N_IN, H), torch_layout_map, **single("h.")
    ),
    "lstm_peephole(p=0)": Case(
        "lstm_peephole.grnn",
        lambda: nn.LSTM(N_IN, H),
        lstm_map,
        **single("h."),
        zero=("h.p_i", "h.p_f", "h.p_o"),
    ),
    "gru_torch": Case("gru_torch.grnn", lambda: nn.GRU(N_IN, H), gru_map, **single("h.")),
    "stacked_rnn": Case(
        "stacked_rnn.grnn",
        lambda: nn.RNN(N_IN, H, num_layers=2),
        rnn_map,
        prefix=stacked,
        state=lambda layer, rev: f"h[{layer + 1}]",
        output="h[2]",
    ),
    "birnn": Case(
        "birnn.grnn",
        lambda: nn.RNN(N_IN, H, bidirectional=True),
        rnn_map,
        prefix=bidir,
        state=lambda layer, rev: bidir(layer, rev) + "h",
        output="h",
    ),
    "deep_birnn": Case(
        "deep_birnn.grnn",
        lambda: nn.RNN(N_IN, H, num_layers=2, bidirectional=True),
        rnn_map,
        prefix=deep_bidir,
        state=lambda layer, rev: deep_bidir(layer, rev) + "h",
        output="h[2]",
    ),
    "many_to_one": Case(
        "many_to_one.grnn", lambda: nn.RNN(N_IN, H), rnn_map, **single("h."), loss="last_ce"
    ),
    "lstm_classifier": Case(
        "lstm_classifier.grnn", lambda: nn.LSTM(N_IN, H), lstm_map, **single("h."), loss="last_ce"
    ),
    "lstm_regressor": Case(
        "lstm_regressor.grnn", lambda: nn.LSTM(N_IN, H), lstm_map, **single("h."), loss="last_mse"
    ),
    "gru_classifier": Case(
        "gru_classifier.grnn", lambda: nn.GRU(N_IN, H), gru_map, **single("h."), loss="last_ce"
    ),
    "gru_regressor": Case(
        "gru_regressor.grnn", lambda: nn.GRU(N_IN, H), gru_map, **single("h."), loss="last_mse"
    ),
}


def mapped(case: Case, module, grad: bool) -> dict:
    out = {}
    for layer in range(module.num_layers):
        for reverse in (False, True) if module.bidirectional else (False,):
            w = torch_tensors(module, layer, reverse, grad)
            out.update(case.cell(case.prefix(layer, reverse), w, same if grad else add))
    return out


def torch_loss(case: Case, o, y):
    if case.loss == "last_mse":
        return ((o - y) ** 2).mean(-1).mean()
    return (-(y * torch.log_softmax(o, -1)).sum(-1)).mean()  # mean over (t,) b


@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name):
    case = CASES[name]
    torch.manual_seed(0)
    module = case.make().double()
    model = gr.load(ROOT / "models" / case.file, I=N_IN, H=H, O=N_OUT)

    rng = np.random.default_rng(1)
    params = {k: v.copy() for k, v in model.params.items()}
    params.update(mapped(case, module, grad=False))
    for k in case.zero:
        params[k] = np.zeros_like(params[k])
    params["V"] = rng.normal(size=params["V"].shape)
    params["c"] = rng.normal(size=params["c"].shape)
    assert set(params) == set(model.params)
    for k, v in params.items():
        assert v.shape == model.params[k].shape, k

    x = rng.normal(size=(T, B, N_IN))
    static = case.loss.startswith("last")
    logits = rng.normal(size=(B, N_OUT) if static else (T, B, N_OUT))
    y = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    if case.loss == "last_mse":
        y = rng.normal(size=(B, N_OUT))

    # graphrnn
    fn = model.compile(backend="reference", dtype="float64")
    ours = fn.forward(params, {"x": x})
    loss, grads = fn.loss_and_grad(params, {"x": x}, {"y": y})

    # torch, through the same output layer and loss
    xt = torch.tensor(x, requires_grad=True)
    V = torch.tensor(params["V"], requires_grad=True)
    c = torch.tensor(params["c"], requires_grad=True)
    out, final = module(xt)
    h_n = final[0] if isinstance(final, tuple) else final
    o = (out[-1] if static else out) @ V.T + c
    expected_loss = torch_loss(case, o, torch.tensor(y))
    expected_loss.backward()

    # hidden states at every step, the final state of every layer and direction, the output
    assert rel_error(ours[case.output], out.detach().numpy()) < TOL
    for layer in range(module.num_layers):
        for k, reverse in enumerate((False, True) if module.bidirectional else (False,)):
            state = ours[case.state(layer, reverse)]
            last = state[0] if reverse else state[-1]
            index = layer * (2 if module.bidirectional else 1) + k
            assert rel_error(last, h_n[index].detach().numpy()) < TOL, (layer, reverse)
    if isinstance(final, tuple):  # LSTM: the cell
        assert rel_error(ours["h.C"][-1], final[1][0].detach().numpy()) < TOL
    assert rel_error(ours["o"], o.detach().numpy()) < TOL
    assert rel_error(loss, expected_loss.item()) < TOL

    # gradients of every weight and of the input
    expected = mapped(case, module, grad=True)
    expected["V"] = V.grad.numpy()
    expected["c"] = c.grad.numpy()
    expected["x"] = xt.grad.numpy()
    assert set(expected) | set(case.zero) == set(model.params) | {"x"}
    for k, g in expected.items():
        assert np.linalg.norm(g) > 0, k
        assert rel_error(grads[k], g) < TOL, f"{k}: {rel_error(grads[k], g):.3e}"
