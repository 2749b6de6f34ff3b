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
from graphrnn.errors import DataError
from graphrnn.ir.graph import Graph
from graphrnn.ir.node import Node
from graphrnn.ir.registry import EvalEnv
from graphrnn.layout import check_array, from_aligned, to_aligned
from graphrnn.passes.pipeline import check_disable, optimize
from graphrnn.running_stats import STAT_PREFIX, BatchStats, pooled, stat_outputs

Executor = Callable[[Graph, EvalEnv, dict[int, np.ndarray]], dict[int, np.ndarray]]


class Compiled:
    """`forward(params, inputs)` and `loss_and_grad(params, inputs, targets)` for one backend.

    The loss is the model's declared loss averaged over the batch; gradients are of that mean,
    keyed by parameter and input name. `input_grads` is True (every input), False (none) or
    the names of the inputs to differentiate (segmented BPTT needs only its carried states).
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
        self._second: dict[str, Graph] = {}
        self.forward_graph = replace(graph, loss=None)

    @property
    def adjoint(self) -> Graph:
        if self._adjoint is None:
            inputs = self.graph.inputs if self.input_grads is True else self.input_grads or []
            wrt = list(self.graph.params) + list(inputs)
            wrt = [n for n in wrt if n not in self.graph.state_names]  # running statistics
            self._adjoint = grad(self.graph, wrt)
            self._adjoint.outputs.update(stat_outputs(self.graph))
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

    def forward(self, params: Mapping, inputs: Mapping) -> dict[str, np.ndarray]:
        graph = self.prepared(self.forward_graph)
        values = self._evaluate(graph, params, inputs, None)
        return {name: self._out(values, node) for name, node in graph.outputs.items()}

    def loss_and_grad(self, params: Mapping, inputs: Mapping, targets: Mapping, batch_stats=False):
        """`(loss, grads)`; with `batch_stats=True`, `(loss, grads, stats)` where stats maps
        each batch norm to the BatchStats of this batch (running_stats.update_state)."""
        g = self.prepared(self.adjoint)
        values = self._evaluate(g, params, inputs, targets)
        loss = float(values[g.outputs["loss"].id].reshape(()))
        grads = {}
        for key, node in g.outputs.items():
            if key.startswith("grad:"):
                name = key[5:]
                leaf = g.params.get(name) or g.inputs[name]
                grads[name] = self._out(values, node, like=leaf)
        if batch_stats:
            return loss, grads, self._batch_stats(g, values)
        return loss, grads

    def _batch_stats(self, g: Graph, values) -> dict[str, BatchStats]:
        stats = {}
        for name, bn in self.graph.batchnorms.items():
            key = f"{STAT_PREFIX}{name}"
            if f"{key}.mean" in g.outputs:
                mean, var = (values[g.outputs[f"{key}.{s}"].id] for s in ("mean", "var"))
                stats[name] = pooled(bn, mean, var, self._env.sizes, self._env.batch)
        return stats

    def loss(self, params: Mapping, inputs: Mapping, targets: Mapping) -> float:
        """The batch-mean loss alone, without the backward pass (finite differences call this
        twice per checked element)."""
        if self._loss_graph is None:
            self._loss_graph = grad(self.graph, [])
        g = self.prepared(self._loss_graph)
        values = self._evaluate(g, params, inputs, targets)
        return float(values[g.outputs["loss"].id].reshape(()))

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
            array = np.asarray(params[name], dtype=self.dtype)
            if array.shape != node.shape:
                raise DataError(
                    f"parameter '{name}' has shape {list(array.shape)}; expected {list(node.shape)}"
                )
            leaves[node.id] = to_aligned(array, node, graph.axes)
        return self.executor(graph, self._env, leaves)

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
