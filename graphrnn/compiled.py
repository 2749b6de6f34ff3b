"""A model compiled for one backend and dtype: the user-facing forward and loss_and_grad.

This class owns what every backend shares (checking and converting user arrays, the axis
lengths and batch size, naming results); a backend only evaluates a graph on aligned arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from graphrnn import second_order
from graphrnn.autodiff import grad
from graphrnn.errors import DataError, DSLError, GraphRNNError
from graphrnn.ir.graph import Graph, reachable
from graphrnn.ir.node import Node
from graphrnn.ir.registry import EvalEnv
from graphrnn.layout import check_array, from_aligned, to_aligned
from graphrnn.memory import check_fits, elements
from graphrnn.passes.pipeline import check_disable, optimize
from graphrnn.running_stats import STAT_PREFIX, BatchStats, pooled, stat_outputs
from graphrnn.states import (
    FINAL,
    FINAL_ADJOINT,
    INITIAL,
    carried_graph,
    check_states,
    cotangents,
    final_outputs,
    recurrent_states,
)

Executor = Callable[[Graph, EvalEnv, dict[int, np.ndarray]], dict[int, np.ndarray]]


class Compiled:
    """`forward(params, inputs)` and `loss_and_grad(params, inputs, targets)` for one backend.

    The loss is the model's declared loss averaged over the batch; gradients are of that mean,
    keyed by parameter and input name. `input_grads` is True (every input), False (none) or
    the names of the inputs to differentiate (segmented BPTT needs only its carried states).

    Stateful calls (truncated BPTT over chunks of a sequence): `initial={"h": h0, ...}`
    replaces the named states' initial values (`h(0) = ...`) for the call, each `[B, *shape]`
    (`states` lists them), and `final=True` also returns each state at the last step, by
    the same names, to pass as the next chunk's `initial`. Gradients stop at the given
    initial states; with `input_grads=True` their adjoints come back as
    `grads["initial:h"]`. `loss_and_grad(..., final_adjoint={"h": g})` passes the adjoint
    of the final states back in (the gradients are those of loss + sum(g * h(end))): with
    g the next chunk's `grads["initial:h"]`, chunks run from the last to the first give
    full BPTT. graphrnn/states.py builds the graph these calls run.
    """

    def __init__(
        self,
        graph: Graph,
        dtype: str,
        executor: Executor,
        backend: str,
        input_grads: bool | Sequence[str] = True,
        passes: bool = False,
        disable=(),
    ):
        self.graph = graph
        self.input_grads = input_grads
        self.passes = passes
        self.disable = check_disable(disable)
        self._prepared: dict[int, tuple[Graph, list[str]]] = {}
        self.dtype = np.dtype(dtype)
        self.backend = backend
        self.executor = executor
        self._adjoint: Graph | None = None
        self._loss_graph: Graph | None = None
        self.forward_graph = replace(graph, loss=None, outputs=_without_targets(graph))
        self._footprints: dict[tuple, dict[str, int]] = {}
        self._fixed_reads: list[Node] | None = None
        self._siblings: dict[tuple, Compiled] = {}
        self._second: dict[str, Graph] = {}

    @property
    def adjoint(self) -> Graph:
        if self._adjoint is None:
            inputs = self.graph.inputs if self.input_grads is True else self.input_grads or []
            wrt = list(self.graph.params) + list(inputs)
            wrt = [n for n in wrt if n not in self.graph.state_names]  # running statistics
            wrt = [n for n in wrt if not n.startswith(FINAL_ADJOINT)]  # seeds, not leaves
            self._adjoint = grad(self.graph, wrt, cotangents(self.graph))
            self._adjoint.outputs.update(stat_outputs(self.graph))
            self._adjoint.outputs.update(final_outputs(self.graph))
        return self._adjoint

    def prepared(self, graph: Graph) -> Graph:
        """The graph the backend runs: `graph` after the optimisation passes, if enabled."""
        if not self.passes:
            return graph
        if id(graph) not in self._prepared:
            self._prepared[id(graph)] = optimize(graph, self.disable)
        return self._prepared[id(graph)][0]

    def explain(self, graph: Graph) -> list[str]:
        """What each optimisation pass did to `graph`."""
        if not self.passes:
            return ["optimisation passes are off for this backend"]
        self.prepared(graph)
        return self._prepared[id(graph)][1]

    @property
    def states(self) -> dict[str, tuple[int, ...]]:
        """Each recurrent state's name and shape per example: the keys of `initial`."""
        return recurrent_states(self.graph)

    def forward(
        self, params: Mapping, inputs: Mapping, *, initial: Mapping | None = None, final=False
    ):
        """Every named value that reads no target; with `final=True`, `(values, final)`."""
        if initial is not None or final:
            fn, inputs = self._carried(inputs, initial, final, None)
            outs = fn.forward(params, inputs)
            finals = {k: outs.pop(k) for k in list(outs) if k.startswith(FINAL)}
            return (outs, fn._batched(finals)) if final else outs
        graph = self.prepared(self.forward_graph)
        values = self._evaluate(graph, params, inputs, None)
        return {name: self._out(values, node) for name, node in graph.outputs.items()}

    def _carried(self, inputs, initial, final: bool, adjoint) -> tuple[Compiled, dict]:
        """The model compiled with these initial states as inputs (and final states as
        outputs, their adjoints as inputs), built once per set of names; and the inputs with
        the states added."""
        _check_mapping("inputs", inputs, "{'x': x}")
        arrays = check_states(self.graph, initial if initial is not None else {})
        seeds = check_states(self.graph, adjoint, "final_adjoint") if adjoint is not None else {}
        key = (frozenset(arrays), bool(final or seeds), frozenset(seeds))
        if key not in self._siblings:
            graph = carried_graph(self.graph, *key)
            self._siblings[key] = Compiled(
                graph, self.dtype.name, self.executor, self.backend, self.input_grads,
                self.passes, self.disable,
            )  # fmt: skip
        given = {f"{INITIAL}{name}": array for name, array in arrays.items()}
        given.update({f"{FINAL_ADJOINT}{name}": array for name, array in seeds.items()})
        return self._siblings[key], {**inputs, **given}

    def _batched(self, finals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Final states by state name, each [B, *shape] (a state the same for every example
        is repeated), ready to be the next call's `initial`."""
        out = {}
        for key, array in finals.items():
            shape = self.graph.outputs[key].shape
            out[key[len(FINAL) :]] = np.ascontiguousarray(
                np.broadcast_to(array, (self._env.batch, *shape))
            )
        return out

    def loss_and_grad(
        self,
        params: Mapping,
        inputs: Mapping,
        targets: Mapping,
        batch_stats=False,
        *,
        initial: Mapping | None = None,
        final=False,
        final_adjoint: Mapping | None = None,
    ):
        """`(loss, grads)`; with `batch_stats=True`, `(loss, grads, stats)` where stats maps
        each batch norm to the BatchStats of this batch (running_stats.update_state); with
        `final=True` the final states come last, `(loss, grads[, stats], final)`."""
        if initial is not None or final or final_adjoint is not None:
            if batch_stats and self.graph.batchnorms:
                raise GraphRNNError(
                    "batch_stats cannot be combined with initial, final or final_adjoint yet: "
                    "the stateful graph does not keep the batch norms' statistics"
                )
            fn, inputs = self._carried(inputs, initial, final, final_adjoint)
            return fn._loss_and_grad(params, inputs, targets, batch_stats, final)
        return self._loss_and_grad(params, inputs, targets, batch_stats, False)

    def _loss_and_grad(self, params, inputs, targets, batch_stats: bool, final: bool):
        self._need_loss("loss_and_grad", targets)
        g = self.prepared(self.adjoint)
        values = self._evaluate(g, params, inputs, targets)
        loss = float(values[g.outputs["loss"].id].reshape(()))
        grads = {}
        for key, node in g.outputs.items():
            if key.startswith("grad:"):
                name = key[5:]
                leaf = g.params.get(name) or g.inputs[name]
                grads[name] = self._out(values, node, like=leaf)
        result = (loss, grads, self._batch_stats(g, values)) if batch_stats else (loss, grads)
        return result + (self._finals(g, values),) if final else result

    def _finals(self, g: Graph, values) -> dict[str, np.ndarray]:
        finals = {k: self._out(values, g.outputs[k]) for k in final_outputs(self.graph)}
        return self._batched(finals)

    def _batch_stats(self, g: Graph, values) -> dict[str, BatchStats]:
        stats = {}
        for name, bn in self.graph.batchnorms.items():
            key = f"{STAT_PREFIX}{name}"
            if f"{key}.mean" in g.outputs:
                mean, var = (values[g.outputs[f"{key}.{s}"].id] for s in ("mean", "var"))
                stats[name] = pooled(bn, mean, var, self._env.sizes, self._env.batch)
        return stats

    def loss(
        self,
        params: Mapping,
        inputs: Mapping,
        targets: Mapping,
        *,
        initial: Mapping | None = None,
        final=False,
    ):
        """The batch-mean loss alone, without the backward pass (finite differences call this
        twice per checked element); with `final=True`, `(loss, final)`."""
        if initial is not None or final:
            fn, inputs = self._carried(inputs, initial, final, None)
            return fn._loss(params, inputs, targets, final)
        return self._loss(params, inputs, targets, False)

    def _loss(self, params, inputs, targets, final: bool):
        self._need_loss("loss", targets)
        if self._loss_graph is None:
            self._loss_graph = grad(self.graph, [])
            self._loss_graph.outputs.update(final_outputs(self.graph))
        g = self.prepared(self._loss_graph)
        values = self._evaluate(g, params, inputs, targets)
        loss = float(values[g.outputs["loss"].id].reshape(()))
        return (loss, self._finals(g, values)) if final else loss

    def _need_loss(self, call: str, targets) -> None:
        """loss() and loss_and_grad() need a declared loss and a dict of targets."""
        example = ", ".join(f"'{n}': {n}" for n in self.graph.targets)
        _check_mapping("targets", targets, "{" + example + "}")
        if self.graph.loss is None:
            raise DSLError(
                f"model '{self.graph.name}' declares no loss, so {call}() has nothing to compute",
                self.graph.loc,
                "add a line `loss = ...`, e.g. loss = mean over t of mse(o(t), y(t)); "
                "forward() needs no loss",
            )

    def hvp(self, params: Mapping, inputs: Mapping, targets: Mapping, vector: Mapping):
        """The Hessian of the batch-mean loss in the parameters times `vector` (one array per
        parameter, its shape), by parameter name: graphrnn/second_order.py, docs/second_order.md."""
        return self._product("hvp", params, inputs, targets, vector)

    def gnvp(self, params: Mapping, inputs: Mapping, targets: Mapping, vector: Mapping):
        """The Gauss-Newton matrix J^T H_L J times `vector`, by parameter name: positive
        semi-definite, for Hessian-free training (graphrnn/train/hessian_free.py)."""
        return self._product("gnvp", params, inputs, targets, vector)

    def _product(self, kind: str, params, inputs, targets, vector) -> dict[str, np.ndarray]:
        if kind not in self._second:
            build = second_order.hvp_graph if kind == "hvp" else second_order.gnvp_graph
            self._second[kind] = build(self.graph)
        g = self.prepared(self._second[kind])
        given = second_order.check_vector(self.graph, vector)
        values = self._evaluate(g, {**params, **given}, inputs, targets)
        names = second_order.trainable(self.graph)
        return {n: self._out(values, g.outputs[f"{kind}:{n}"], like=g.params[n]) for n in names}

    def _out(self, values, node: Node, like: Node | None = None) -> np.ndarray:
        like = like or node
        array = values[node.id]
        full = self._env.aligned_shape(like.context, like.shape)
        if array.shape != full:
            array = np.broadcast_to(array, full)
        return from_aligned(array, like, self.graph.axes)

    def _evaluate(self, graph: Graph, params, inputs, targets) -> dict[int, np.ndarray]:
        _check_mapping("params", params, "model.params")
        _check_mapping("inputs", inputs, "{'x': x}")
        leaves = {}
        checked = {}
        for role, given, declared in (
            ("input", inputs, graph.inputs),
            ("target", targets or {}, graph.targets if targets is not None else {}),
        ):
            for name, node in declared.items():
                if name not in given:
                    raise DataError(
                        f"missing {role} '{name}'; the model declares {sorted(declared)}"
                    )
                checked[name] = (check_array(name, given[name], node, graph.axes, role), node)
        self._env = self._make_env(checked)
        for array, node in checked.values():
            leaves[node.id] = to_aligned(array.astype(self.dtype, copy=False), node, graph.axes)
        for name, node in graph.params.items():
            if name not in params and name in self.graph.state_names:
                raise DataError(
                    f"missing running statistic '{name}': an evaluation-mode model takes the "
                    "batch norms' running statistics with the parameters, {**params, **state}"
                )
            if name not in params:
                raise DataError(f"missing parameter '{name}'")
            try:
                array = np.asarray(params[name], dtype=self.dtype)
            except (TypeError, ValueError):
                raise DataError(
                    f"parameter '{name}' is not a numeric array (got "
                    f"{type(params[name]).__name__}); give an array of shape {list(node.shape)}"
                ) from None
            if array.shape != node.shape:
                raise DataError(
                    f"parameter '{name}' has shape {list(array.shape)}; expected {list(node.shape)}"
                )
            leaves[node.id] = to_aligned(array, node, graph.axes)
        if self._fixed_reads is None:
            self._fixed_reads = fixed_reads(self.graph)
        check_fixed_steps(self.graph, self._env.sizes, self._fixed_reads)
        self._check_memory(graph)
        return self.executor(graph, self._env, leaves)

    def _check_memory(self, graph: Graph) -> None:
        """Refuse a call whose values cannot all be held, before the backend allocates."""
        env = self._env
        key = (id(graph), tuple(sorted(env.sizes.items())), env.batch)
        if key not in self._footprints:
            item = self.dtype.itemsize
            never = self._never_formed(graph)
            formed = [n for n in graph.nodes() if n.id not in never]
            self._footprints[key] = {
                _buffer_name(n): elements(env.aligned_shape(n.context, n.shape)) * item
                for n in formed
            }
        steps = ", ".join(f"{a} = {n}" for a, n in env.sizes.items())
        check_fits(
            f"this call (batch {env.batch}, {steps or 'no axes'}, {self.dtype})",
            self._footprints[key],
            "use smaller sizes, a smaller batch or shorter sequences "
            "(or bptt_checkpoint for long ones)",
        )

    def _never_formed(self, graph: Graph) -> set[int]:
        """Values a compiled backend never holds: outer products summed into a parameter's
        gradient, which it computes as one GEMM (the reference forms them)."""
        if self.backend == "reference":
            return set()
        from graphrnn.backends.planning import consumers, gemm_gradients
        from graphrnn.schedule import schedule

        items = schedule(graph.roots())
        return gemm_gradients(items, consumers(items), {r.id for r in graph.roots()})

    def _make_env(self, checked) -> EvalEnv:
        sizes: dict[str, int] = dict(self.graph.axis_sizes)
        batch = None
        for name, (array, node) in checked.items():
            lead = [a for a in self.graph.axes if a in node.axes]
            for k, axis in enumerate(lead):
                if sizes.setdefault(axis, array.shape[k]) != array.shape[k]:
                    if axis in self.graph.axis_sizes:
                        raise DataError(
                            f"'{name}' has {array.shape[k]} steps along '{axis}', whose "
                            f"length is fixed by the model at {sizes[axis]}"
                        )
                    raise DataError(
                        f"'{name}' has {array.shape[k]} steps along '{axis}', "
                        f"other data has {sizes[axis]}"
                    )
            b = array.shape[len(lead)]
            if b == 0:
                raise DataError(f"'{name}' has batch size 0; give at least one example")
            if batch is None:
                batch = b
            elif b != batch:
                raise DataError(f"'{name}' has batch size {b}, other data has {batch}")
        for axis in self.graph.axes:
            if axis not in sizes:
                raise DataError(f"no input gives the length of axis '{axis}'")
            if sizes[axis] < 1:
                raise DataError(f"axis '{axis}' has length 0; give at least one step")
        return EvalEnv(self.graph.axes, sizes, batch or 1, self.dtype)


def _without_targets(graph: Graph) -> dict[str, Node]:
    """The outputs forward() computes: those that read no target (forward takes none; a
    named per-step loss such as `ce(t) = mse(o(t), y(t))` is left to loss_and_grad)."""
    reads = {n.id for n in graph.targets.values()}
    order = reachable(list(graph.outputs.values()))
    changed = bool(reads)
    while changed:  # to a fixed point: delays make the graph cyclic
        changed = False
        for node in order:
            if node.id not in reads and any(i.id in reads for i in node.inputs):
                reads.add(node.id)
                changed = True
    return {name: node for name, node in graph.outputs.items() if node.id not in reads}


def _check_mapping(what: str, value, example: str) -> None:
    if not isinstance(value, Mapping):
        raise DataError(
            f"{what} must be a dict of arrays by name, like {example}; got {type(value).__name__}"
        )


def _buffer_name(node: Node) -> str:
    name = node.name or node.op
    return f"'{name}' {list(node.shape)}" + (f" at {node.loc}" if node.loc else "")


def fixed_reads(graph: Graph) -> list[Node]:
    """The graph's reads at a fixed step (`h(9)`, `h(end)`) and their adjoints."""
    return [n for n in graph.nodes() if n.op in ("at", "place")]


def check_fixed_steps(
    graph: Graph, sizes: Mapping[str, int], reads: list[Node] | None = None
) -> None:
    """A read at a fixed step (`h(9)`, `h(end)`) must lie inside its axis: checked here, once
    the lengths are known and before any backend runs, so that every backend refuses it
    alike (compiled code would read outside its buffers)."""
    for node in fixed_reads(graph) if reads is None else reads:
        axis, index = node.attrs["axis"], node.attrs["index"]
        size = sizes.get(axis)
        if size is not None and (index > size or -index > size):
            raise DSLError(
                f"step {index} of '{axis}' is read here, but the sequence has {size} steps",
                node.loc,
                f"give sequences of at least {index} steps, or read the last step with end, "
                "e.g. h(end)",
            )
