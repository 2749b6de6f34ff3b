"""The public model object: a folded graph with bound sizes and initialised parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from graphrnn.autodiff import grad
from graphrnn.compiled import Compiled
from graphrnn.dsl import parse, parse_file
from graphrnn.dsl.lower import lower_model
from graphrnn.errors import GraphRNNError
from graphrnn.initializers import initialize
from graphrnn.ir.graph import Graph
from graphrnn.schedule import schedule
from graphrnn.unroll import unroll

BACKENDS = ("reference", "numba", "cupy")


class Model:
    """A model file lowered for given sizes: `graph`, initial `params`, `compile`, `unroll`."""

    def __init__(self, graph: Graph, sizes: dict[str, int], seed: int, path: str | None = None):
        self.graph = graph
        self.sizes = dict(sizes)
        self.seed = seed
        self.path = path
        schedule(graph.roots())
        self.params = self.init_params(seed)

    @property
    def name(self) -> str:
        return self.graph.name

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        """Fresh parameters drawn from each parameter's declared initialiser."""
        return {
            name: initialize(name, node.shape, node.attrs["init"], seed)
            for name, node in self.graph.params.items()
        }

    def compile(self, backend: str = "reference", dtype: str = "float64", **options) -> Compiled:
        """Forward and loss_and_grad functions for one backend and dtype."""
        if dtype not in ("float32", "float64"):
            raise GraphRNNError(f"dtype must be float32 or float64, not {dtype!r}")
        if backend == "reference":
            from graphrnn.backends import reference

            return Compiled(self.graph, dtype, reference.run, backend, **options)
        if backend in BACKENDS:
            from importlib import import_module

            module = import_module(f"graphrnn.backends.{_MODULES[backend]}")
            return module.compile(self.graph, dtype, **options)
        raise GraphRNNError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")

    def unroll(self, tau: int | dict[str, int]) -> Graph:
        """The explicit acyclic graph for `tau` steps (or a length per axis)."""
        sizes = tau if isinstance(tau, dict) else {a: tau for a in self.graph.axes}
        if any(not isinstance(v, int) or v < 1 for v in sizes.values()):
            raise GraphRNNError(f"unroll lengths must be positive integers, got {sizes}")
        return unroll(self.graph, sizes)

    def grad_graph(self) -> Graph:
        """The folded adjoint graph (BPTT as a graph whose recurrences run backwards)."""
        return grad(self.graph)


_MODULES = {"numba": "numba_cpu", "cupy": "cupy_gpu"}


def load(path: str | Path, seed: int = 0, model: str | None = None, **sizes: int) -> Model:
    """Parse a model file, bind its sizes, check it, and initialise its parameters."""
    module = parse_file(str(path))
    return Model(lower_model(module, sizes, model), sizes, seed, str(path))


def loads(
    text: str, seed: int = 0, model: str | None = None, path: str = "<string>", **sizes
) -> Model:
    """`load` from a string, for models written inline (tests, notebooks)."""
    module = parse(text, path)
    return Model(lower_model(module, sizes, model), sizes, seed, None)
