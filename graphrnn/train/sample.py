"""Text generation from a character-model checkpoint (`graphrnn sample`).

The prime text is read in one forward pass; then one character at a time is drawn from
softmax(o / temperature) and fed back, the recurrent state carried from call to call
(`forward(..., initial=state, final=True)`), for any character model.
"""

from __future__ import annotations

import math

import numpy as np

from graphrnn.errors import DataError
from graphrnn.model import load_checkpoint
from graphrnn.train.tbptt import zero_init_inputs


def sample_text(path: str, length: int, prime: str, temperature: float, seed: int) -> str:
    """`length` characters after `prime`, from the model stored in the checkpoint."""
    if not math.isfinite(temperature) or temperature <= 0:
        raise DataError(f"--temperature must be a positive number, got {temperature}")
    if length < 0:
        raise DataError(f"--length must be 0 or more characters, got {length}")
    model = load_checkpoint(path)
    params, meta = model.params, model.meta
    if "vocab" not in meta:
        raise DataError(f"{path} is not a character-model checkpoint (no vocabulary in it)")
    vocab = meta["vocab"]
    index = {c: i for i, c in enumerate(vocab)}
    unknown = sorted(set(prime) - set(index))
    if unknown:
        raise DataError(f"the prime text has characters not in the vocabulary: {unknown!r}")
    fn = model.compile("numba", dtype="float64")
    rng = np.random.default_rng(seed)
    inits, state = zero_init_inputs(fn, 1), None
    ids = [index[c] for c in prime] or [int(rng.integers(len(vocab)))]
    out = list(prime) if prime else [vocab[ids[0]]]
    for _ in range(length):
        x = np.eye(len(vocab))[ids][:, None, :]
        values, state = fn.forward(params, {"x": x, **inits}, initial=state, final=True)
        logits = values["o"][-1, 0] / temperature
        p = np.exp(logits - logits.max())
        nxt = int(rng.choice(len(vocab), p=p / p.sum()))
        out.append(vocab[nxt])
        ids = [nxt]
    return "".join(out)
