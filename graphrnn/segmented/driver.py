"""The runtime driver of segmented BPTT: the sweeps over the segments of a sequence.

A forward sweep runs the segment graph (segmented/rewrite.py) segment after segment and keeps
only the carried states entering each one; a backward sweep then goes over the segments from
the last to the first, recomputes each segment's forward pass and back-propagates through it,
feeding it the adjoint of the state it hands on (the seed) from the segment after it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from graphrnn.compiled import Compiled
from graphrnn.errors import DataError, GraphRNNError
from graphrnn.ir.graph import Graph
from graphrnn.segmented.rewrite import FIRST, INV_STEPS, SEGMENT_LOSS, Carry, build_segment_graph
from graphrnn.states import INITIAL, carried_graph, check_states


def segment_length(steps: int) -> int:
    """The k that balances T/k stored states against k steps of recomputed intermediates:
    ceil(sqrt(T))."""
    if steps < 1:
        raise GraphRNNError(f"a sequence needs at least one step, got {steps}")
    return math.isqrt(steps - 1) + 1


def segments(steps: int, k: int) -> list[tuple[int, int]]:
    """The [start, stop) step ranges of consecutive segments of k steps (the last may be
    shorter)."""
    return [(s, min(s + k, steps)) for s in range(0, steps, k)]


Builder = Callable[..., Compiled]


class SegmentedBPTT:
    """`forward`, `loss` and `loss_and_grad` like `Compiled`, with BPTT memory bounded by
    segments of `k` steps (`"auto"`: ceil(sqrt(T)) per call). Loss and gradients equal plain
    BPTT's up to rounding; the cost is one extra forward pass over the sequence. `build`
    compiles a graph for the chosen backend and dtype (`model.compile_graph`); `input_grads`
    as for `Compiled` (True, False or names of inputs)."""

    def __init__(
        self, graph: Graph, k: int | str, build: Builder, input_grads: bool = True
    ) -> None:
        if k != "auto" and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise GraphRNNError(f"bptt_checkpoint must be a positive integer or 'auto', not {k!r}")
        self.graph = graph
        self.k = k
        self.input_grads = input_grads
        self.segment = build_segment_graph(graph)
        self._build = build
        user = list(graph.inputs) if input_grads is True else list(input_grads or [])
        self._user_grads = [n for n in user if n in graph.inputs]
        wrt = self._user_grads + [c.input for c in self.segment.carries]
        self.sweep = build(self.segment.graph, input_grads=wrt)
        self.dtype = self.sweep.dtype
        self.backend = self.sweep.backend
        self._plain: Compiled | None = None
        self._loss_fn: Compiled | None = None
        self._carried: dict[frozenset, SegmentedBPTT] = {}

    # ---- the Compiled interface ---------------------------------------------------------
    @property
    def plain(self) -> Compiled:
        """The model compiled without segments (forward passes keep nothing for BPTT)."""
        if self._plain is None:
            self._plain = self._build(self.graph, input_grads=False)
        return self._plain

    @property
    def states(self) -> dict[str, tuple[int, ...]]:
        return self.plain.states

    def forward(self, params: Mapping, inputs: Mapping, **stateful) -> dict[str, np.ndarray]:
        """Every named value over the whole sequence: the plain forward pass (its outputs are
        O(T) anyway, and it keeps nothing for a backward pass); `initial`, `final` as for
        Compiled."""
        return self.plain.forward(params, inputs, **stateful)

    def loss(self, params: Mapping, inputs: Mapping, targets: Mapping, **stateful) -> float:
        """The loss from a forward sweep over the segments: no gradients, O(k) memory.
        With `initial` or `final` (as for Compiled), the plain forward pass's loss."""
        if stateful:
            return self.plain.loss(params, inputs, targets, **stateful)
        if self._loss_fn is None:
            self._loss_fn = self._build(self.segment.loss_graph, input_grads=False)
        steps, batch = self._extent(inputs, targets)
        k = self._k(steps)
        states = self._zero_states(batch)
        total = 0.0
        for start, stop in segments(steps, k):
            feed = self._feed(inputs, states, start, stop, steps, batch)
            feed.update(self._slice(targets, start, stop))
            out = self._loss_fn.forward(params, feed)
            total += float(np.mean(out[SEGMENT_LOSS], dtype=np.float64))
            states = [out[c.output] for c in self.segment.carries]
        return total

    def loss_and_grad(
        self,
        params: Mapping,
        inputs: Mapping,
        targets: Mapping,
        *,
        initial: Mapping | None = None,
        final: bool = False,
    ):
        """`(loss, grads)`, or `(loss, grads, final)` with `final=True`; `initial` as for
        Compiled: the segments run the model whose initial values are those states (the
        final states come from a plain forward pass, one more pass over the chunk)."""
        if initial is not None:
            given = check_states(self.graph, initial)
            feed = {**inputs, **{INITIAL + k: v for k, v in given.items()}}
            result = self._starting_from(frozenset(given)).loss_and_grad(params, feed, targets)
        else:
            result = self._loss_and_grad(params, inputs, targets)
        if not final:
            return result
        _, finals = self.plain.forward(params, inputs, initial=initial, final=True)
        return (*result, finals)

    def _starting_from(self, names: frozenset) -> SegmentedBPTT:
        """Segmented BPTT of the model whose states `names` start from inputs."""
        if names not in self._carried:
            graph = carried_graph(self.graph, names, False)
            self._carried[names] = SegmentedBPTT(graph, self.k, self._build, self._user_grads)
        return self._carried[names]

    def _loss_and_grad(self, params, inputs, targets) -> tuple[float, dict[str, np.ndarray]]:
        steps, batch = self._extent(inputs, targets)
        bounds = segments(steps, self._k(steps))
        entering = self._boundary_states(params, inputs, bounds, steps, batch)
        seeds = [np.zeros_like(s) for s in entering[0]]
        total = 0.0
        out: dict[str, np.ndarray] = {}
        for s in reversed(range(len(bounds))):
            start, stop = bounds[s]
            feed = self._feed(inputs, entering[s], start, stop, steps, batch, seeds)
            loss, grads = self.sweep.loss_and_grad(params, feed, self._slice(targets, start, stop))
            total += loss - self._seed_value(seeds, entering, s)
            for name in self.graph.params:
                out[name] = grads[name] + out[name] if name in out else grads[name]
            for name in self._user_grads:
                self._add_input_grad(out, name, grads[name], start, stop, steps)
            seeds = [self._next_seed(grads, c, batch) for c in self.segment.carries]
        return total, out

    # ---- the sweeps -----------------------------------------------------------------------
    def _boundary_states(self, params, inputs, bounds, steps: int, batch: int) -> list[list]:
        """The carried states entering each segment: the only values kept for all of T."""
        states = self._zero_states(batch)
        entering = [states]
        for start, stop in bounds[:-1]:
            out = self.sweep.forward(params, self._feed(inputs, states, start, stop, steps, batch))
            states = [out[c.output] for c in self.segment.carries]
            entering.append(states)
        return entering

    def _next_seed(self, grads: dict, carry: Carry, batch: int) -> np.ndarray:
        """The previous segment's seed: the gradient of the mean loss with respect to the
        state entering this one. Compiled averages the loss over the batch, so the seed term
        of one example must be B times the adjoint of its state."""
        return grads[carry.input] * batch

    def _seed_value(self, seeds: list, entering: list, s: int) -> float:
        """What the seed terms added to segment s's loss: mean over the batch of
        sum(seed * state leaving s); subtracted so the loss is the model's."""
        if s + 1 >= len(entering):
            return 0.0
        total = 0.0
        for seed, state in zip(seeds, entering[s + 1]):
            per_example = np.sum(seed * state, axis=tuple(range(1, seed.ndim)), dtype=np.float64)
            total += float(np.mean(per_example))
        return total

    # ---- feeding one segment --------------------------------------------------------------
    def _k(self, steps: int) -> int:
        return segment_length(steps) if self.k == "auto" else int(self.k)

    def _zero_states(self, batch: int) -> list[np.ndarray]:
        shapes = [self.segment.graph.inputs[c.seed].shape for c in self.segment.carries]
        return [np.zeros((batch, *shape), dtype=self.dtype) for shape in shapes]

    def _feed(self, inputs, states, start, stop, steps, batch, seeds=None) -> dict:
        declared = self.segment.graph.inputs
        feed = self._slice({k: v for k, v in inputs.items() if k in self.graph.inputs}, start, stop)
        flags = {FIRST: 1.0 if start == 0 else 0.0, INV_STEPS: 1.0 / steps}
        for name, value in flags.items():
            if name in declared:
                feed[name] = np.full(batch, value, dtype=self.dtype)
        for c, state in zip(self.segment.carries, states):
            if c.input in declared:
                feed[c.input] = state
        if seeds is None:
            seeds = [np.zeros_like(s) for s in states]
        for c, seed in zip(self.segment.carries, seeds):
            if c.seed in declared:
                feed[c.seed] = seed
        return feed

    def _slice(self, arrays: Mapping, start: int, stop: int) -> dict:
        """Sequences cut to [start, stop); static data as it is."""
        leaves = self.graph.leaves
        out = {}
        for name, value in arrays.items():
            node = leaves.get(name)
            over = node is not None and self.segment.axis in node.axes
            out[name] = np.asarray(value)[start:stop] if over else value
        return out

    def _add_input_grad(self, out: dict, name: str, grad, start: int, stop: int, steps: int):
        """A sequence's gradient is written into its steps of one array allocated once (no
        list of parts to concatenate: that would hold it twice); a static input's is summed."""
        if self.segment.axis not in self.graph.inputs[name].axes:
            out[name] = grad + out[name] if name in out else grad
            return
        if name not in out:
            out[name] = np.empty((steps, *grad.shape[1:]), dtype=grad.dtype)
        out[name][start:stop] = grad

    def _extent(self, inputs: Mapping, targets: Mapping | None) -> tuple[int, int]:
        """(T, B) from the sequences given, checked to agree before anything is cut."""
        lengths: dict[str, tuple[int, int]] = {}
        for name, value in {**inputs, **(targets or {})}.items():
            node = self.graph.leaves.get(name)
            if node is None or self.segment.axis not in node.axes:
                continue
            shape = np.shape(value)
            if len(shape) < 2:
                raise DataError(f"'{name}' has shape {list(shape)}; expected [t, batch, ...]")
            lengths[name] = (shape[0], shape[1])
        if not lengths:
            raise DataError(f"no input gives the length of axis '{self.segment.axis}'")
        (first, extent), *rest = lengths.items()
        for name, other in rest:
            if other[0] != extent[0]:
                raise DataError(
                    f"'{name}' has {other[0]} steps along '{self.segment.axis}', "
                    f"'{first}' has {extent[0]}"
                )
        if extent[0] < 1:
            raise DataError(f"axis '{self.segment.axis}' has length 0; give at least one step")
        return extent
