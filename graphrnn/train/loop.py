"""A training loop that knows nothing of the model compiler.

The model is a function ``loss_and_grad(params, batch) -> (loss, grads)``; parameters and
gradients are ``dict[str, np.ndarray]``. The loop adds what every run needs: optimizer
steps, clipping, validation each epoch, a progress bar, JSON-lines metrics, atomic
checkpoints, exact resumption, and a clear stop when the loss diverges.

Non-trainable ``state`` (batch norms' running statistics) may ride along: the function then
returns ``(loss, grads, update)``, where ``update(state) -> new state`` is applied after the
optimizer step (outside the optimizer: no gradient, no weight decay); the state is saved in
checkpoints, restored on resume and given to ``validate`` together with the parameters.

``step`` counts optimizer updates done so far; ``epoch`` counts completed epochs.
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from graphrnn.errors import DataError, GraphRNNError
from graphrnn.train.checkpoint import load_checkpoint, remove_stale_temps, save_checkpoint
from graphrnn.train.metrics import MetricsLogger, drop_after
from graphrnn.train.optim import Optimizer, clip_grad_norm, global_norm, make_optimizer

Params = dict[str, np.ndarray]
StateUpdate = Callable[[Params], Mapping[str, np.ndarray]]
LossAndGrad = Callable[
    [Params, Any],
    tuple[float, Mapping[str, np.ndarray]] | tuple[float, Mapping[str, np.ndarray], StateUpdate],
]
Batches = Iterable[Any] | Callable[[int], Iterable[Any]]


@dataclass
class History:
    """What a run produced: trained parameters (and state), one record per epoch, per-step
    losses.

    ``epochs`` spans the whole run, resumed parts included; ``losses`` and ``grad_norms``
    cover only the steps taken by this call.
    """

    params: Params
    state: Params = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    step: int = 0
    epoch: int = 0
    resumed_from_step: int | None = None


@dataclass
class _Position:
    """Where the run is, i.e. everything besides params and optimizer that resuming needs."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    epoch_loss_sum: float = 0.0

    def to_meta(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "epoch_loss_sum": self.epoch_loss_sum,
        }


def _metric(key: str, value: Any) -> float | None:
    """A validation metric as a float, or None when it is NaN/inf (kept JSON-safe)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise GraphRNNError(
            f"validate returned {value!r} for {key!r}; it must return a dict of numbers"
        ) from None
    return value if math.isfinite(value) else None


def _unpack(result) -> tuple[Any, Mapping[str, np.ndarray], StateUpdate | None]:
    items = tuple(result) if isinstance(result, (tuple, list)) else ()
    if len(items) == 2:
        return items[0], items[1], None
    if len(items) == 3:
        return items
    raise GraphRNNError(
        "loss_and_grad must return (loss, grads) or (loss, grads, state_update), got "
        f"{type(result).__name__} of length {len(items)}"
    )


def _epoch_batches(batches: Batches, epoch: int) -> Iterable[Any]:
    if callable(batches):
        return batches(epoch)
    if iter(batches) is batches:
        raise GraphRNNError(
            "batches is a one-shot iterator, so epochs after the first would be empty; "
            "pass a list, or a function epoch -> iterable of batches"
        )
    return batches


def _copy_params(params: Mapping[str, np.ndarray]) -> Params:
    """Own copies in a float dtype, so that updates in place neither fail nor leak out."""
    out = {}
    for name, value in params.items():
        array = np.asarray(value)
        dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float64
        out[name] = np.array(array, dtype=dtype, copy=True)
    return out


def _check_options(epochs: int, clip: float | None, checkpoint_every: int | None) -> None:
    if not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise GraphRNNError(f"epochs must be a whole number >= 0, got {epochs!r}")
    if clip is not None and not clip > 0:
        raise GraphRNNError(f"clip must be a positive gradient norm, got {clip!r}")
    if checkpoint_every is not None and not (
        isinstance(checkpoint_every, numbers.Integral) and checkpoint_every >= 1
    ):
        raise GraphRNNError(
            f"checkpoint_every must be a number of steps >= 1, got {checkpoint_every!r}"
        )


def _restore_state(path: Path, state: Params, saved: Mapping[str, np.ndarray]) -> Params:
    expected = {k: v.shape for k, v in state.items()}
    found = {k: v.shape for k, v in saved.items()}
    if expected and not found:
        warnings.warn(
            f"checkpoint {path} holds no running statistics (it was written before graphrnn "
            f"kept them); the {len(expected)} given to train (a fresh model's: mean 0, "
            "variance 1) start again from there and follow the batches from here",
            stacklevel=4,
        )
        return state
    if expected != found:
        raise DataError(
            f"checkpoint {path} holds running statistics {found} but the model has {expected}; "
            "it was written for a different model: point checkpoint_path elsewhere or drop resume"
        )
    return {k: v.astype(state[k].dtype, copy=False) for k, v in saved.items()}


def _restore(
    path: Path, params: Params, optimizer: Optimizer, state: Params
) -> tuple[Params, Params, _Position, list[dict[str, Any]]]:
    saved, opt_state, meta, saved_state = load_checkpoint(path, with_state=True)
    expected = {k: v.shape for k, v in params.items()}
    found = {k: v.shape for k, v in saved.items()}
    if expected != found:
        raise DataError(
            f"checkpoint {path} holds parameters {found} but the model has {expected}; it was "
            "written for a different model: point checkpoint_path elsewhere or drop resume"
        )
    if not {"step", "epoch"} <= meta.keys():
        raise DataError(
            f"checkpoint {path} has no training position (step, epoch), so it was not written "
            "by train; resume from a checkpoint that train wrote"
        )
    restored_state = _restore_state(path, state, saved_state)
    optimizer.load_state_dict(opt_state)
    position = _Position(
        step=int(meta["step"]),
        epoch=int(meta["epoch"]),
        batch_in_epoch=int(meta.get("batch_in_epoch", 0)),
        epoch_loss_sum=float(meta.get("epoch_loss_sum", 0.0)),
    )
    restored = {k: v.astype(params[k].dtype, copy=False) for k, v in saved.items()}
    return restored, restored_state, position, list(meta.get("records", []))


class _Run:
    """One call of ``train``: the mutable state shared by the step and epoch phases."""

    def __init__(
        self,
        loss_and_grad: LossAndGrad,
        params: Params,
        optimizer: Optimizer,
        clip: float | None,
        checkpoint_path: Path | None,
        meta: Mapping[str, Any] | None,
        state: Params,
    ):
        self.loss_and_grad = loss_and_grad
        self.params = params
        self.state = state
        self.optimizer = optimizer
        self.clip = clip
        self.checkpoint_path = checkpoint_path
        self.meta = dict(meta or {})
        self.pos = _Position()
        self.records: list[dict[str, Any]] = []
        self.last_saved_step: int | None = None
        self.history = History(params=params, state=state)
        self.growth = _Growth()

    def save(self) -> None:
        if self.checkpoint_path is None:
            return
        meta = {
            **self.meta,
            **self.pos.to_meta(),
            "records": self.records,
            "optimizer": repr(self.optimizer),
            "param_shapes": {k: list(v.shape) for k, v in self.params.items()},
        }
        save_checkpoint(
            self.checkpoint_path, self.params, self.optimizer.state_dict(), meta, self.state
        )
        self.last_saved_step = self.pos.step

    def diverged(self, what: str) -> DataError:
        if self.last_saved_step is not None:
            kept = f"the last good checkpoint {self.checkpoint_path} (step {self.last_saved_step}) "
            kept += "is kept; "
        else:
            kept = ""
        return DataError(
            f"{what} at step {self.pos.step + 1} (epoch {self.pos.epoch + 1}, batch "
            f"{self.pos.batch_in_epoch + 1}); training stopped; {kept}try a lower learning rate "
            f"(now {self.optimizer.lr:g}) or gradient clipping (e.g. clip=1.0)"
        )

    def step(self, batch: Any) -> tuple[float, float]:
        loss, grads, update = _unpack(self.loss_and_grad(self.params, batch))
        loss = float(loss)
        if not math.isfinite(loss):
            raise self.diverged(f"the loss became {loss}")
        grown = self.growth.add(loss)
        if grown:
            raise self.diverged(grown)
        grads = dict(grads)
        norm = clip_grad_norm(grads, self.clip) if self.clip else global_norm(grads)
        if not math.isfinite(norm):
            bad = ", ".join(repr(k) for k, g in grads.items() if not np.all(np.isfinite(g)))
            what = f"the gradient of {bad} became non-finite" if bad else "the gradient overflowed"
            raise self.diverged(what)
        self.optimizer.step(self.params, grads)
        if update is not None:
            self.update_state(update)
        self.pos.step += 1
        self.pos.batch_in_epoch += 1
        self.pos.epoch_loss_sum += loss
        self.history.losses.append(loss)
        self.history.grad_norms.append(norm)
        return loss, norm

    def update_state(self, update: StateUpdate) -> None:
        new = update(dict(self.state))
        for name, value in new.items():
            if name not in self.state:
                raise GraphRNNError(
                    f"the state update returned {name!r}, which is not in the state given to "
                    f"train ({sorted(self.state)})"
                )
            value = np.asarray(value, dtype=self.state[name].dtype)
            if value.shape != self.state[name].shape:
                raise GraphRNNError(
                    f"the state update gave {name!r} shape {value.shape}; it has shape "
                    f"{self.state[name].shape}"
                )
            self.state[name] = value

    def evaluated(self) -> Params:
        """What validate gets: the parameters, and the state when there is one."""
        return {**self.params, **self.state} if self.state else self.params

    def end_epoch(self, validate: Callable[[Params], Mapping[str, float]] | None) -> dict:
        if self.pos.batch_in_epoch == 0:
            raise DataError(
                f"epoch {self.pos.epoch + 1} had no batches; check the batches argument "
                "(a function epoch -> batches must return a non-empty iterable every epoch)"
            )
        record: dict[str, Any] = {
            "epoch": self.pos.epoch + 1,
            "step": self.pos.step,
            "loss": self.pos.epoch_loss_sum / self.pos.batch_in_epoch,
        }
        if validate is not None:
            for key, value in validate(self.evaluated()).items():
                name = key if key.startswith("val_") else f"val_{key}"
                record[name] = _metric(key, value)
        self.records.append(record)
        self.pos = _Position(step=self.pos.step, epoch=self.pos.epoch + 1)
        return record


def train(
    loss_and_grad: LossAndGrad,
    params: Mapping[str, np.ndarray],
    batches: Batches,
    *,
    optimizer: Optimizer | str,
    epochs: int,
    clip: float | None = None,
    validate: Callable[[Params], Mapping[str, float]] | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    log_path: str | os.PathLike[str] | None = None,
    log_every: int = 10,
    progress: bool = True,
    meta: Mapping[str, Any] | None = None,
    state: Mapping[str, np.ndarray] | None = None,
) -> History:
    """Train for ``epochs`` epochs in all (a resumed run counts the epochs already done).

    ``batches`` is a list (same order each epoch) or a function ``epoch -> batches``; a
    deterministic order makes ``resume=True`` reproduce an uninterrupted run exactly.
    Checkpoints are written every ``checkpoint_every`` steps (if given) and after each
    epoch's validation; ``meta`` (model path, sizes, ...) is stored in them. The given
    ``params`` are not modified: the trained ones are ``history.params``. An ``Optimizer``
    instance carries its state, so give each run a fresh one (or a name). ``state``: arrays
    updated by the third value ``loss_and_grad`` returns (see the module docstring), not
    modified either: the final ones are ``history.state``.
    """
    _check_options(epochs, clip, checkpoint_every)
    opt = make_optimizer(optimizer) if isinstance(optimizer, str) else optimizer
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    if ckpt is not None:
        remove_stale_temps(ckpt)
    run = _Run(
        loss_and_grad, _copy_params(params), opt, clip, ckpt, meta, _copy_params(state or {})
    )
    if resume:
        if ckpt is None:
            raise GraphRNNError("resume=True needs a checkpoint_path to resume from")
        run.params, run.state, run.pos, run.records = _restore(ckpt, run.params, opt, run.state)
        run.history.params, run.history.state = run.params, run.state
        run.history.resumed_from_step = run.pos.step
        run.last_saved_step = run.pos.step
        if log_path is not None:
            drop_after(log_path, run.pos.step)
    logger = MetricsLogger(log_path, append=resume) if log_path is not None else None
    bar = tqdm(total=None, initial=run.pos.step, unit="step", disable=not progress, leave=True)
    try:
        step_log = _StepLog(logger, log_every)
        _epochs(run, batches, epochs, validate, checkpoint_every, logger, step_log, bar)
    finally:
        bar.close()
        if logger is not None:
            logger.close()
    run.history.epochs = list(run.records)
    run.history.step, run.history.epoch = run.pos.step, run.pos.epoch
    return run.history


class _Growth:
    """Divergence that stays finite (Adam at a huge learning rate takes the loss from 2.3 to
    3.6e7): the mean loss of a window of WINDOW steps above GROWTH times the first step's
    loss (where this call started), and above it by more than 1, stops the run."""

    WINDOW = 10
    GROWTH = 1000.0

    def __init__(self) -> None:
        self.window: list[float] = []
        self.first: float | None = None

    def add(self, loss: float) -> str | None:
        if self.first is None:
            self.first = loss
        self.window.append(loss)
        if len(self.window) < self.WINDOW:
            return None
        mean = sum(self.window) / len(self.window)
        self.window = []
        if mean > self.GROWTH * self.first and mean > self.first + 1:
            return (
                f"the loss grew from {self.first:.4g} to {mean:.4g} (mean of the last "
                f"{self.WINDOW} steps), over {self.GROWTH:g} times where it started: the run "
                "diverged"
            )
        return None


class _StepLog:
    """Averages the loss over windows of ``every`` steps ending at multiples of ``every``
    (so a resumed run logs at the same steps as an uninterrupted one) and writes one train
    event per window."""

    def __init__(self, logger: MetricsLogger | None, every: int):
        self.logger, self.every = logger, max(1, every)
        self.loss, self.steps, self.start = 0.0, 0, time.perf_counter()

    def add(self, pos: _Position, loss: float, norm: float) -> None:
        if self.logger is None:
            return
        self.loss, self.steps = self.loss + loss, self.steps + 1
        if pos.step % self.every != 0:
            return
        rate = self.steps / max(time.perf_counter() - self.start, 1e-9)
        self.logger.log(
            event="train",
            step=pos.step,
            epoch=pos.epoch + 1,
            loss=self.loss / self.steps,
            grad_norm=norm,
            steps_per_s=rate,
        )
        self.loss, self.steps, self.start = 0.0, 0, time.perf_counter()


def _epochs(
    run: _Run,
    batches: Batches,
    epochs: int,
    validate: Callable[[Params], Mapping[str, float]] | None,
    checkpoint_every: int | None,
    logger: MetricsLogger | None,
    step_log: _StepLog,
    bar: tqdm,
) -> None:
    shown: dict[str, str] = {}
    while run.pos.epoch < epochs:
        epoch_batches = _epoch_batches(batches, run.pos.epoch)
        skip = run.pos.batch_in_epoch
        if hasattr(epoch_batches, "__len__"):
            bar.total = run.pos.step - skip + len(epoch_batches) * (epochs - run.pos.epoch)
        epoch_start = time.perf_counter()
        for batch in itertools.islice(epoch_batches, skip, None):
            loss, norm = run.step(batch)
            bar.update(1)
            shown.update(epoch=str(run.pos.epoch + 1), loss=f"{loss:.4g}")
            bar.set_postfix(shown, refresh=False)
            step_log.add(run.pos, loss, norm)
            if checkpoint_every and run.pos.step % checkpoint_every == 0:
                run.save()
        rate = (run.pos.batch_in_epoch - skip) / max(time.perf_counter() - epoch_start, 1e-9)
        record = run.end_epoch(validate)
        shown.update(
            {k: f"{v:.4g}" for k, v in record.items() if k.startswith("val_") and v is not None}
        )
        bar.set_postfix(shown)  # show this epoch's validation now, not at the next step
        if logger is not None:
            logger.log(event="epoch", **record, steps_per_s=rate)
        run.save()
