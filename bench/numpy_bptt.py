"""Hand-written BPTT in plain NumPy for the cells bench/rnn_step.py times: the floor any
compiler must beat. Every cell works in torch's layout (the "canonical" dict of
bench/rnn_step.py: W_ih [G*H, I], W_hh [G*H, H], b_ih, b_hh [G*H], and V [O, H], c [O] when
there is an output layer) and in any float dtype.

What is hoisted out of the step loop into single GEMMs over all N = T*B rows: the input
projection X W_ih^T, the output layer and its gradients, the weight gradients dW_ih = dA^T X and
dW_hh = dA^T Hprev, and the input gradient dx = dA W_ih. Only the recurrent products
h W_hh^T (forward) and dA W_hh (backward) stay in the loop, one per step (MGU: two, since its
candidate reads f * h).

    step(cell, p, x, y=None, input_grads=True) -> (loss, grads, dx or None)

x [T, B, I]; y one-hot [T, B, O] for the output layer and
    loss = mean over t and batch of softmax_cross_entropy(V h(t) + c, y(t)),
or y None for the loss on h directly,
    loss = mean over batch of sum over t of sum(h(t) * h(t)).
grads has every key of p. Gate orders: LSTM (i, f, g, o), GRU (r, z, n) with torch's
convention (r scales W_hn h + b_hn), MGU (f, candidate).
"""

from __future__ import annotations

import numpy as np


def _sig(a):
    return 0.5 * np.tanh(0.5 * a) + 0.5


def _loss_head(p, hs, y):
    """(loss, dHs [T, B, H], output-layer grads) from the states hs [T, B, H]."""
    T, B, H = hs.shape
    if y is None:
        return float(np.sum(hs * hs)) / B, (2.0 / B) * hs, {}
    N = T * B
    h2 = hs.reshape(N, H)
    logits = h2 @ p["V"].T + p["c"]
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    s = e.sum(axis=1, keepdims=True)
    y2 = y.reshape(N, -1)
    loss = float(np.sum(y2 * (np.log(s) - logits))) / N
    d_o = (e / s - y2) * (1.0 / N)
    grads = {"V": d_o.T @ h2, "c": d_o.sum(axis=0)}
    return loss, (d_o @ p["V"]).reshape(T, B, H), grads


def _project(p, x, fold_b_hh=True):
    """(T, B, H, xp): the hoisted input projection X W_ih^T + b_ih, plus b_hh where the cell
    adds it to the same pre-activation (every cell but the GRU, whose r scales W_hn h + b_hn)."""
    T, B, _ = x.shape
    b = p["b_ih"] + p["b_hh"] if fold_b_hh else p["b_ih"]
    return T, B, p["W_hh"].shape[1], (x @ p["W_ih"].T + b).astype(x.dtype, copy=False)


def _previous(hs):
    """h(t-1) for every t: [0, h(0), ..., h(T-2)], flattened to [T*B, H]."""
    T, B, H = hs.shape
    return np.concatenate([np.zeros((1, B, H), hs.dtype), hs[:-1]]).reshape(T * B, H)


def _finish(p, x, hs, dA_x, dA_h, loss, grads, input_grads, dW_hh=None):
    """The hoisted weight gradients from the stacked pre-activation adjoints [T, B, G] (dA_x
    for W_ih and b_ih, dA_h for W_hh and b_hh; dW_hh where the cell computed it), and dx;
    the cell's (loss, grads, dx)."""
    T, B, In = x.shape
    N, G = T * B, dA_x.shape[2]
    gx, gh = dA_x.reshape(N, G), dA_h.reshape(N, G)
    grads |= {"W_ih": gx.T @ x.reshape(N, In), "b_ih": gx.sum(axis=0)}
    grads["W_hh"] = gh.T @ _previous(hs) if dW_hh is None else dW_hh
    grads["b_hh"] = gh.sum(axis=0)
    return loss, grads, dA_x @ p["W_ih"] if input_grads else None


def elman(p, x, y=None, input_grads=True):
    T, B, H, xp = _project(p, x)
    dt = x.dtype
    hs = np.empty((T, B, H), dt)
    h = np.zeros((B, H), dt)
    W_hhT = p["W_hh"].T
    for t in range(T):
        h = np.tanh(xp[t] + h @ W_hhT)
        hs[t] = h
    loss, dhs, grads = _loss_head(p, hs, y)
    dA = np.empty_like(hs)
    dh = np.zeros((B, H), dt)
    W_hh = p["W_hh"]
    for t in range(T - 1, -1, -1):
        da = (dhs[t] + dh) * (1.0 - hs[t] * hs[t])
        dA[t] = da
        dh = da @ W_hh
    return _finish(p, x, hs, dA, dA, loss, grads, input_grads)


def lstm(p, x, y=None, input_grads=True):
    T, B, H, xp = _project(p, x)
    dt = x.dtype
    gates = np.empty((T, B, 4 * H), dt)  # i, f, g, o after their nonlinearities
    cs = np.empty((T, B, H), dt)
    tcs = np.empty((T, B, H), dt)
    hs = np.empty((T, B, H), dt)
    h = np.zeros((B, H), dt)
    c = np.zeros((B, H), dt)
    W_hhT = p["W_hh"].T
    for t in range(T):
        a = xp[t] + h @ W_hhT
        gt = gates[t]
        gt[:, : 2 * H] = _sig(a[:, : 2 * H])
        gt[:, 2 * H : 3 * H] = np.tanh(a[:, 2 * H : 3 * H])
        gt[:, 3 * H :] = _sig(a[:, 3 * H :])
        i, f, g, o = gt[:, :H], gt[:, H : 2 * H], gt[:, 2 * H : 3 * H], gt[:, 3 * H :]
        c = f * c + i * g
        tc = np.tanh(c)
        h = o * tc
        cs[t], tcs[t], hs[t] = c, tc, h
    loss, dhs, grads = _loss_head(p, hs, y)
    dA = np.empty_like(gates)
    dh = np.zeros((B, H), dt)
    dc = np.zeros((B, H), dt)
    W_hh = p["W_hh"]
    zero = np.zeros((B, H), dt)
    for t in range(T - 1, -1, -1):
        gt = gates[t]
        i, f, g, o = gt[:, :H], gt[:, H : 2 * H], gt[:, 2 * H : 3 * H], gt[:, 3 * H :]
        c_prev = cs[t - 1] if t > 0 else zero
        dh_t = dhs[t] + dh
        tc = tcs[t]
        dc = dc + dh_t * o * (1.0 - tc * tc)
        da = dA[t]
        da[:, :H] = dc * g * i * (1.0 - i)
        da[:, H : 2 * H] = dc * c_prev * f * (1.0 - f)
        da[:, 2 * H : 3 * H] = dc * i * (1.0 - g * g)
        da[:, 3 * H :] = dh_t * tc * o * (1.0 - o)
        dc = dc * f
        dh = da @ W_hh
    return _finish(p, x, hs, dA, dA, loss, grads, input_grads)


def gru(p, x, y=None, input_grads=True):
    T, B, H, xp = _project(p, x, fold_b_hh=False)
    dt = x.dtype
    rz = np.empty((T, B, 2 * H), dt)
    ns = np.empty((T, B, H), dt)
    hns = np.empty((T, B, H), dt)  # W_hn h + b_hn, which r scales
    hs = np.empty((T, B, H), dt)
    h = np.zeros((B, H), dt)
    W_hhT, b_hh = p["W_hh"].T, p["b_hh"]
    for t in range(T):
        gh = h @ W_hhT + b_hh
        rz[t] = _sig(xp[t, :, : 2 * H] + gh[:, : 2 * H])
        r, z = rz[t, :, :H], rz[t, :, H:]
        hn = gh[:, 2 * H :]
        n = np.tanh(xp[t, :, 2 * H :] + r * hn)
        h = n + z * (h - n)
        ns[t], hns[t], hs[t] = n, hn, h
    loss, dhs, grads = _loss_head(p, hs, y)
    dAx = np.empty((T, B, 3 * H), dt)
    dAh = np.empty((T, B, 3 * H), dt)
    dh = np.zeros((B, H), dt)
    W_hh = p["W_hh"]
    zero = np.zeros((B, H), dt)
    for t in range(T - 1, -1, -1):
        r, z, n = rz[t, :, :H], rz[t, :, H:], ns[t]
        h_prev = hs[t - 1] if t > 0 else zero
        dh_t = dhs[t] + dh
        dan = dh_t * (1.0 - z) * (1.0 - n * n)
        dar = dan * hns[t] * r * (1.0 - r)
        daz = dh_t * (h_prev - n) * z * (1.0 - z)
        dAx[t, :, :H], dAx[t, :, H : 2 * H], dAx[t, :, 2 * H :] = dar, daz, dan
        dAh[t, :, : 2 * H] = dAx[t, :, : 2 * H]
        dAh[t, :, 2 * H :] = dan * r
        dh = dh_t * z + dAh[t] @ W_hh
    return _finish(p, x, hs, dAx, dAh, loss, grads, input_grads)


def mgu(p, x, y=None, input_grads=True):
    T, B, H, xp = _project(p, x)
    dt = x.dtype
    W_fhT, W_hhT = p["W_hh"][:H].T, p["W_hh"][H:].T
    fs = np.empty((T, B, H), dt)
    fhs = np.empty((T, B, H), dt)  # f * h(t-1), what the candidate's product reads
    hcs = np.empty((T, B, H), dt)
    hs = np.empty((T, B, H), dt)
    h = np.zeros((B, H), dt)
    for t in range(T):
        f = _sig(xp[t, :, :H] + h @ W_fhT)
        fh = f * h
        hc = np.tanh(xp[t, :, H:] + fh @ W_hhT)
        h = h + f * (hc - h)
        fs[t], fhs[t], hcs[t], hs[t] = f, fh, hc, h
    loss, dhs, grads = _loss_head(p, hs, y)
    dA = np.empty((T, B, 2 * H), dt)
    dh = np.zeros((B, H), dt)
    W_fh, W_hh = p["W_hh"][:H], p["W_hh"][H:]
    zero = np.zeros((B, H), dt)
    for t in range(T - 1, -1, -1):
        f, hc = fs[t], hcs[t]
        h_prev = hs[t - 1] if t > 0 else zero
        dh_t = dhs[t] + dh
        dah = dh_t * f * (1.0 - hc * hc)
        dfh = dah @ W_hh
        daf = (dh_t * (hc - h_prev) + dfh * h_prev) * f * (1.0 - f)
        dA[t, :, :H], dA[t, :, H:] = daf, dah
        dh = dh_t * (1.0 - f) + dfh * f + daf @ W_fh
    # W_hh's f rows read h(t-1), its candidate rows f * h(t-1): two GEMMs
    gA = dA.reshape(T * B, 2 * H)
    dW_hh = np.concatenate([gA[:, :H].T @ _previous(hs), gA[:, H:].T @ fhs.reshape(T * B, H)])
    return _finish(p, x, hs, dA, dA, loss, grads, input_grads, dW_hh)


CELLS = {"elman": elman, "lstm": lstm, "gru": gru, "mgu": mgu}


def step(cell: str, p: dict, x: np.ndarray, y: np.ndarray | None = None, input_grads=True):
    return CELLS[cell](p, x, y, input_grads)
