"""Optimizers that update a dict of parameter arrays in place from a dict of gradients.

Parameters and gradients are plain ``dict[str, np.ndarray]`` so that any backend can use
them. Every optimizer's state exports to a flat dict of arrays and scalars
(``state_dict``) that a checkpoint stores as-is, so a resumed run continues bit for bit.

Weight decay is classic L2 regularisation: ``wd * p`` is added to the gradient before the
update (for Adam too, i.e. not the decoupled AdamW variant).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping

import numpy as np

from graphrnn.errors import GraphRNNError

Params = dict[str, np.ndarray]
StateValue = np.ndarray | float | int | str
State = dict[str, StateValue]


def _check_positive(name: str, value: float) -> float:
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
        raise GraphRNNError(f"optimizer option {name} must be a positive number, got {value!r}")
    return float(value)


def _check_nonneg(name: str, value: float) -> float:
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
        raise GraphRNNError(f"optimizer option {name} must be >= 0, got {value!r}")
    return float(value)


def _check_fraction(name: str, value: float) -> float:
    if not (isinstance(value, numbers.Real) and 0 <= value < 1):
        raise GraphRNNError(f"optimizer option {name} must be in [0, 1), got {value!r}")
    return float(value)


def _check_grads(params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
    """Catch a gradient that matches no parameter early, where the names still make sense."""
    for name, g in grads.items():
        if name not in params:
            known = ", ".join(sorted(params)) or "none"
            raise GraphRNNError(
                f"gradient for unknown parameter {name!r} (parameters: {known}); "
                "the loss function and the parameter dict disagree on names"
            )
        if np.shape(g) != np.shape(params[name]):
            raise GraphRNNError(
                f"gradient for {name!r} has shape {np.shape(g)} but the parameter has shape "
                f"{np.shape(params[name])}"
            )


class Optimizer:
    """Base class: subclasses define ``name``, ``hyper`` names, slots and ``_update``."""

    name = "optimizer"
    hyper: tuple[str, ...] = ("lr", "weight_decay")
    slots: tuple[str, ...] = ()

    def __init__(self, lr: float, weight_decay: float = 0.0):
        self.lr = _check_positive("lr", lr)
        self.weight_decay = _check_nonneg("weight_decay", weight_decay)
        self.t = 0
        self.state: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.slots}

    def step(self, params: Params, grads: Mapping[str, np.ndarray]) -> None:
        """Apply one update to ``params`` in place; parameters without a gradient stay put."""
        _check_grads(params, grads)
        self.t += 1
        for name, g in grads.items():
            p = params[name]
            g = np.asarray(g, dtype=p.dtype)
            if self.weight_decay:
                g = g + self.weight_decay * p
            self._update(name, p, g)

    def _slot(self, slot: str, name: str, like: np.ndarray) -> np.ndarray:
        table = self.state[slot]
        if name not in table:
            table[name] = np.zeros_like(like)
        return table[name]

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError

    def state_dict(self) -> State:
        """Flat export: ``name``, hyperparameters, step count ``t`` and ``slot/param`` arrays."""
        out: State = {"name": self.name, "t": self.t}
        out.update({h: getattr(self, h) for h in self.hyper})
        for slot, table in self.state.items():
            out.update({f"{slot}/{k}": v.copy() for k, v in table.items()})
        return out

    def load_state_dict(self, state: Mapping[str, StateValue]) -> None:
        """Restore step count and slots.

        Hyperparameters are kept from the constructor, not the state: a resumed run may
        change the learning rate on purpose.
        """
        name = state.get("name", self.name)
        if name != self.name:
            raise GraphRNNError(
                f"optimizer state was saved by {name!r} but this run uses {self.name!r}; "
                f"resume with optimizer {name!r} or start a fresh run"
            )
        self.t = int(state.get("t", 0))
        self.state = {s: {} for s in self.slots}
        for key, value in state.items():
            slot, sep, param = key.partition("/")
            if sep and slot in self.state:
                self.state[slot][param] = np.array(value, copy=True)

    def __repr__(self) -> str:
        opts = ", ".join(f"{h}={getattr(self, h)!r}" for h in self.hyper)
        return f"{type(self).__name__}({opts})"


class SGD(Optimizer):
    """Plain gradient descent: ``p -= lr * (g + wd * p)``."""

    name = "sgd"

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        p -= self.lr * g


class Momentum(Optimizer):
    """Classic heavy-ball momentum (Polyak), with the learning rate inside the velocity.

    ``v = momentum * v - lr * (g + wd * p)``; ``p += v``. Velocities start at zero. Because
    ``lr`` is folded into ``v``, changing ``lr`` mid-run does not rescale past velocity.
    The defaults (lr 0.01, momentum 0.9, weight decay 5e-4) are the project's seed settings.
    """

    name = "momentum"
    hyper = ("lr", "momentum", "weight_decay")
    slots = ("v",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4):
        super().__init__(lr, weight_decay)
        self.momentum = _check_fraction("momentum", momentum)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        v = self._slot("v", name, p)
        v *= self.momentum
        v -= self.lr * g
        p += v


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction, as in Algorithm 1 of the paper.

    ``m = b1 m + (1-b1) g``; ``v = b2 v + (1-b2) g^2``;
    ``p -= lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1-b1^t)``,
    ``v_hat = v / (1-b2^t)``. ``t`` counts optimizer steps, shared by all parameters.
    """

    name = "adam"
    hyper = ("lr", "beta1", "beta2", "eps", "weight_decay")
    slots = ("m", "v")

    def __init__(
        self,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(lr, weight_decay)
        self.beta1 = _check_fraction("beta1", beta1)
        self.beta2 = _check_fraction("beta2", beta2)
        self.eps = _check_positive("eps", eps)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        m = self._slot("m", name, p)
        v = self._slot("v", name, p)
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * g * g
        m_hat = m / (1 - self.beta1**self.t)
        v_hat = v / (1 - self.beta2**self.t)
        p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def make_optimizer(name: str, **hyper: float) -> Optimizer:
    """Build an optimizer by name (as given on a command line or in a config)."""
    cls = OPTIMIZERS.get(str(name).lower())
    if cls is None:
        known = ", ".join(OPTIMIZERS)
        raise GraphRNNError(f"unknown optimizer {name!r}; known optimizers: {known}")
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(hyper) - set(accepted))
    if unknown:
        raise GraphRNNError(
            f"optimizer {cls.name!r} has no option {', '.join(unknown)}; "
            f"its options are: {', '.join(accepted)}"
        )
    return cls(**hyper)


def global_norm(grads: Mapping[str, np.ndarray]) -> float:
    """The L2 norm of all gradients taken together, computed in float64."""
    total = sum(float(np.sum(np.square(np.asarray(g, dtype=np.float64)))) for g in grads.values())
    return math.sqrt(total)


def clip_grad_norm(grads: Mapping[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so their global norm is at most ``max_norm``.

    Returns the norm before clipping, which is worth logging. A non-finite norm is returned
    without scaling so that the caller can report the blow-up instead of hiding it.
    """
    max_norm = _check_positive("max_norm", max_norm)
    norm = global_norm(grads)
    if math.isfinite(norm) and norm > max_norm:
        scale = max_norm / norm
        for g in grads.values():
            g *= scale
    return norm
