"""Truncated BPTT with the recurrent state carried across chunks, for any model.

A compiled model's stateful calls (`loss_and_grad(..., initial=state, final=True)`,
graphrnn/states.py) let a long sequence be trained chunk by chunk: each chunk of K steps
starts from the state the previous chunk of the same sequences ended in, and its gradient
is cut there. Two kinds of task:

- a target at every step (`target y[V] over t`, next-character prediction): `CarriedState`
  makes each chunk one training step; `chunked` cuts batches of whole sequences into chunks,
  marking the first chunk of each batch, where the state goes back to the model's own
  initial value (`h(0) = ...`): a new batch holds new sequences;
- one target per sequence (many-to-one: the adding problem, digits): `last_chunk_grad` runs
  the chunks before the last forward only, handing the state on, and differentiates the
  loss of the last chunk: the gradient flows back at most K steps from the loss
  (Williams and Peng's BPTT(h) with h = K). One training step per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np

from graphrnn.errors import GraphRNNError

Arrays = Mapping[str, np.ndarray]


def chunks(steps: int, k: int) -> list[slice]:
    """The step ranges of consecutive chunks of k steps (the last may be shorter)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise GraphRNNError(
            f"the truncated BPTT chunk length must be a positive integer, not {k!r}"
        )
    return [slice(s, min(s + k, steps)) for s in range(0, steps, k)]


def check_carries(fn) -> str:
    """The one sequence axis along which `fn` can carry states, or an error saying why not."""
    graph = fn.graph
    if len(graph.axes) != 1:
        raise GraphRNNError(
            f"truncated BPTT cuts one sequence axis; model '{graph.name}' has the axes "
            f"({', '.join(graph.axes) or 'none'})"
        )
    if graph.batchnorms:
        raise GraphRNNError("truncated BPTT does not keep batch norms' running statistics")
    backward = [
        n.inputs[0].label() for n in graph.nodes() if n.op == "delay" and n.attrs["offset"] > 0
    ]
    if backward:
        raise GraphRNNError(
            f"'{backward[0]}' runs backwards in time ({backward[0]}(t+1)), so a chunk would see "
            "only its own future; truncated BPTT carries states forwards: train without --tbptt"
        )
    return graph.axes[0]


def cut(fn, arrays: Arrays, part: slice) -> dict[str, np.ndarray]:
    """The arrays that run along the sequence axis cut to `part`; the others as they are."""
    axis = fn.graph.axes[0]
    leaves = fn.graph.leaves
    return {
        k: np.asarray(v)[part] if k in leaves and axis in leaves[k].axes else v
        for k, v in arrays.items()
    }


class CarriedState:
    """`loss_and_grad` of one chunk, starting from the state the previous call ended in.

    `reset=True` (or a batch of another size) starts from the model's own initial values.
    `state` holds the final states of the last call, by state name, each [B, *shape]."""

    def __init__(self, fn):
        check_carries(fn)
        self.fn = fn
        self.state: dict[str, np.ndarray] | None = None

    def __call__(self, params: Arrays, inputs: Arrays, targets: Arrays, reset: bool = False):
        if reset or not self._fits(inputs):
            self.state = None
        loss, grads, self.state = self.fn.loss_and_grad(
            params, inputs, targets, initial=self.state, final=True
        )
        return loss, grads

    def _fits(self, inputs: Arrays) -> bool:
        if not self.state:
            return False
        batch = next(iter(self.state.values())).shape[0]
        axis = self.fn.graph.axes[0]
        for name, node in self.fn.graph.inputs.items():
            if name in inputs:
                return np.shape(inputs[name])[1 if axis in node.axes else 0] == batch
        return True


def chunked(
    batches: Iterable[tuple[Arrays, Arrays]], fn, k: int
) -> Iterator[tuple[bool, dict, dict]]:
    """`(first, inputs, targets)` per chunk of k steps of each `(inputs, targets)` batch of
    whole sequences; `first` marks a batch's first chunk (reset the state there)."""
    check_carries(fn)
    for inputs, targets in batches:
        steps = _steps(fn, inputs)
        for i, part in enumerate(chunks(steps, k)):
            yield i == 0, cut(fn, inputs, part), cut(fn, targets, part)


def zero_init_inputs(fn, batch: int) -> dict[str, np.ndarray]:
    """Zeros for static inputs named `*_init` (models/char_lstm.grnn's `h(0) = h_init`): the
    state a sequence starts from, before a carried state replaces it."""
    return {
        name: np.zeros((batch, *node.shape))
        for name, node in fn.graph.inputs.items()
        if name.endswith("_init") and not node.axes
    }


def _steps(fn, inputs: Arrays) -> int:
    axis = fn.graph.axes[0]
    for name, node in fn.graph.inputs.items():
        if axis in node.axes and name in inputs:
            return int(np.shape(inputs[name])[0])
    raise GraphRNNError(f"no input of model '{fn.graph.name}' runs along '{axis}'")


def last_chunk_grad(fn, k: int) -> Callable[[Arrays, Arrays, Arrays], tuple]:
    """`(params, inputs, targets) -> (loss, grads)` for a loss read at the end of the
    sequence: the chunks before the last run forward only, handing their state on; the
    loss and its gradient are the last chunk's, truncated K steps back."""
    check_carries(fn)
    if any(fn.graph.axes[0] in t.axes for t in fn.graph.targets.values()):
        raise GraphRNNError(
            f"model '{fn.graph.name}' has a target at every step; train it chunk by chunk "
            "(CarriedState), not from the last chunk alone"
        )

    def loss_and_grad(params: Arrays, inputs: Arrays, targets: Arrays):
        parts = chunks(_steps(fn, inputs), k)
        state = None
        for part in parts[:-1]:
            _, state = fn.forward(params, cut(fn, inputs, part), initial=state, final=True)
        return fn.loss_and_grad(params, cut(fn, inputs, parts[-1]), targets, initial=state)

    return loss_and_grad
