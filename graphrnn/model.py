"""The public model object: a folded graph with bound sizes and initialised parameters."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from graphrnn.autodiff import grad
from graphrnn.compiled import Compiled
from graphrnn.dsl import parse, parse_file
from graphrnn.dsl.lower import MODES, lower_model
from graphrnn.errors import GraphRNNError
from graphrnn.initializers import initialize
from graphrnn.ir.graph import Graph
from graphrnn.running_stats import initial_state
from graphrnn.schedule import schedule
from graphrnn.second_order import gnvp_graph, hvp_graph
from graphrnn.unroll import unroll

BACKENDS = ("reference", "numba", "cupy")


class Model:
    """A model file lowered for given sizes: `graph`, initial `params`, `compile`, `unroll`.

    `state` holds the batch norms' running statistics (mean 0, variance 1 to start; empty
    without batch norm): not trained, but passed with the parameters to the evaluation graph
    (`eval_graph`, `compile(..., mode="eval")`). `lower(mode)` lowers the model file again."""

    def __init__(
        self,
        graph: Graph,
        sizes: dict[str, int],
        seed: int,
        path: str | None = None,
        lower: Callable[[str], Graph] | None = None,
    ):
        self.graph = graph
        self.sizes = dict(sizes)
        self.seed = seed
        self.path = path
        schedule(graph.roots())
        self.params = self.init_params(seed)
        self.state = initial_state(graph)
        self._lower = lower
        self._eval_graph: Graph | None = None

    @property
    def name(self) -> str:
        return self.graph.name

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        """Fresh parameters drawn from each parameter's declared initialiser."""
        return {
            name: initialize(name, node.shape, node.attrs["init"], seed)
            for name, node in self.graph.params.items()
        }

    def compile(
        self,
        backend: str = "reference",
        dtype: str = "float64",
        bptt_checkpoint: int | str | None = None,
        mode: str = "train",
        **options,
    ):
        """Forward and loss_and_grad functions for one backend and dtype.

        `bptt_checkpoint=k` (or "auto" for k ~ sqrt(T)) bounds BPTT memory by keeping only the
        states at every k-th step and recomputing the rest (graphrnn/segmented.py).
        `mode="eval"` compiles `eval_graph()`: batch norms use the running statistics."""
        graph = self.graph if mode == "train" else self.eval_graph(mode)
        if bptt_checkpoint is not None:
            from graphrnn.segmented import SegmentedBPTT

            def build(graph: Graph, **extra) -> Compiled:
                return compile_graph(graph, backend, dtype, **{**options, **extra})

            grads = options.get("input_grads", True)
            return SegmentedBPTT(graph, bptt_checkpoint, build, input_grads=grads)
        return compile_graph(graph, backend, dtype, **options)

    def unroll(self, tau: int | dict[str, int]) -> Graph:
        """The explicit acyclic graph for `tau` steps (or a length per axis)."""
        sizes = tau if isinstance(tau, dict) else {a: tau for a in self.graph.axes}
        if any(not isinstance(v, int) or v < 1 for v in sizes.values()):
            raise GraphRNNError(f"unroll lengths must be positive integers, got {sizes}")
        return unroll(self.graph, sizes)

    def grad_graph(self) -> Graph:
        """The folded adjoint graph (BPTT as a graph whose recurrences run backwards)."""
        return grad(self.graph)

    def hvp_graph(self) -> Graph:
        """The folded graph of the Hessian-vector product (graphrnn/second_order.py)."""
        return hvp_graph(self.graph)

    def gnvp_graph(self) -> Graph:
        """The folded graph of the Gauss-Newton-vector product (graphrnn/second_order.py)."""
        return gnvp_graph(self.graph)

    def eval_graph(self, mode: str = "eval") -> Graph:
        """The model lowered for evaluation: each batch norm normalises with its running
        statistics (leaves `<bn>.running_mean`, `<bn>.running_var` among the graph's params,
        listed in `graph.state_names`, never differentiated), so every example is computed
        on its own. The same graph as `graph` when the model has no batch norm."""
        if mode not in MODES:
            raise GraphRNNError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == "train" or not self.graph.batchnorms:
            return self.graph
        if self._eval_graph is None:
            if self._lower is None:
                raise GraphRNNError(
                    "this Model was built from a graph alone, so it cannot be lowered again "
                    "for evaluation; make it with gr.load or gr.loads"
                )
            graph = self._lower("eval")
            schedule(graph.roots())
            self._eval_graph = graph
        return self._eval_graph


_MODULES = {"numba": "numba_cpu", "cupy": "cupy_gpu"}


def compile_graph(graph: Graph, backend: str, dtype: str, **options) -> Compiled:
    """Forward and loss_and_grad of any graph (a model's, or one derived from it)."""
    if dtype not in ("float32", "float64"):
        raise GraphRNNError(f"dtype must be float32 or float64, not {dtype!r}")
    if backend == "reference":
        from graphrnn.backends import reference

        return Compiled(graph, dtype, reference.run, backend, **options)
    if backend in BACKENDS:
        from importlib import import_module

        module = import_module(f"graphrnn.backends.{_MODULES[backend]}")
        return module.compile(graph, dtype, **options)
    raise GraphRNNError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def load(path: str | Path, seed: int = 0, model: str | None = None, **sizes: int) -> Model:
    """Parse a model file, bind its sizes, check it, and initialise its parameters."""
    module = parse_file(str(path))
    lower = partial(lower_model, module, sizes, model)
    return Model(lower("train"), sizes, seed, str(path), lower)


def loads(
    text: str, seed: int = 0, model: str | None = None, path: str = "<string>", **sizes
) -> Model:
    """`load` from a string, for models written inline (tests, notebooks)."""
    module = parse(text, path)
    lower = partial(lower_model, module, sizes, model)
    return Model(lower("train"), sizes, seed, None, lower)
