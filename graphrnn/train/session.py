"""`graphrnn train`: a model file, a built-in task and the training loop, glued together.

Each task says how to size the model (I and O from the data), how to batch the data, and how
to validate: the test loss, plus accuracy for classification (argmax of the output `o`
against the one-hot target). A run directory holds the checkpoint, the metrics log
(JSON lines) and a PNG of the curves.

With `tbptt=K` (`--tbptt K`) a sequence task trains by truncated BPTT over chunks of K
steps, the recurrent state carried from chunk to chunk (graphrnn/train/tbptt.py): adding and
digits differentiate the last chunk of each sequence; chars always trains chunk by chunk
(K, or `seq_len`, steps), resetting the state at the start of each epoch.

A model with batch norm trains with batch statistics and keeps running averages of them
(updated after every step, saved in the checkpoint); validation runs the evaluation graph,
which normalises with the running averages, so each example is scored on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from graphrnn.compiled import Compiled
from graphrnn.errors import GraphRNNError
from graphrnn.model import load
from graphrnn.running_stats import update_state
from graphrnn.train import datasets, tbptt
from graphrnn.train.hessian_free import HessianFree, curvature_step
from graphrnn.train.loop import History, train
from graphrnn.train.metrics import plot_curves
from graphrnn.train.optim import make_optimizer


@dataclass
class TrainConfig:
    model: str
    task: str
    sizes: dict[str, int] = field(default_factory=dict)
    epochs: int = 10
    batch: int = 32
    optimizer: str = "adam"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip: float | None = 1.0
    backend: str = "numba"
    dtype: str = "float32"
    out: str = "runs/run"
    resume: bool = False
    overwrite: bool = False  # start over in a run directory that already holds a run
    seed: int = 0
    steps: int | None = None
    n_train: int | None = None
    text: str | None = None
    seq_len: int = 50
    progress: bool = True
    data: str | None = None  # faces task: a UTKFace-style folder or a CSV of path,label
    bptt_checkpoint: int | str | None = None  # segments of k steps ("auto": sqrt(T)); None: off
    tbptt: int | None = None  # truncated BPTT: chunks of K steps, the state carried; None: off
    damping: float = 1.0  # hessian-free: initial Levenberg-Marquardt lambda
    cg_iters: int = 50  # hessian-free: most CG steps per update
    curvature_batch: int | None = None  # hessian-free: examples of a batch for G v (None: all)


@dataclass
class Prepared:
    sizes: dict[str, int]
    batches: object
    loss_and_grad: object
    validate: object
    meta: dict
    unpack: object = None  # batch -> (inputs, targets), for hessian-free


def run(config: TrainConfig) -> tuple[History, dict]:
    """Train as configured; returns the history and the last validation metrics."""
    out = Path(config.out)
    _claim_run_directory(out, config.resume, config.overwrite)
    prepare = _TASKS.get(config.task)
    if prepare is None:
        datasets.get_task(config.task)
        raise GraphRNNError(f"task {config.task!r} cannot be trained from the command line")
    prepared = prepare(config)
    model = load(config.model, seed=config.seed, **prepared.sizes)
    fn = model.compile(
        config.backend,
        dtype=config.dtype,
        input_grads=False,
        bptt_checkpoint=config.bptt_checkpoint,
    )
    if config.tbptt is not None:
        tbptt.check_carries(fn)
    evaluation = fn
    if model.state:  # batch norm: validate with the running statistics
        evaluation = model.compile(config.backend, config.dtype, input_grads=False, mode="eval")
    optimizer = _optimizer(config)
    step, clip = prepared.loss_and_grad(fn), config.clip
    if isinstance(optimizer, HessianFree):  # damping bounds its steps: no clipping
        step, clip = _hessian_free_step(model, fn, optimizer, prepared, config), None
    history = train(
        step,
        model.params,
        prepared.batches,
        optimizer=optimizer,
        epochs=config.epochs,
        clip=clip,
        validate=prepared.validate(evaluation),
        checkpoint_path=out / "checkpoint.npz",
        resume=config.resume,
        log_path=out / "metrics.jsonl",
        progress=config.progress,
        meta={
            "model": str(Path(config.model).resolve()),
            "model_name": model.name,
            "model_text": model.text,
            "sizes": model.sizes,
            "task": config.task,
            **({"tbptt": config.tbptt} if config.tbptt else {}),
            **prepared.meta,
        },
        state=model.state,
    )
    plot_curves(out / "metrics.jsonl", out / "curves.png")
    last = history.epochs[-1] if history.epochs else {}
    return history, last


RUN_FILES = ("checkpoint.npz", "metrics.jsonl", "curves.png")


def _claim_run_directory(out: Path, resume: bool, overwrite: bool) -> None:
    """A run directory that already holds a run is continued (--resume) or deliberately
    started over (--overwrite), never overwritten by accident; it must be writable."""
    if resume and overwrite:
        raise GraphRNNError(
            "--resume continues the run in --out and --overwrite deletes it: give one"
        )
    existing = [p for p in (out / n for n in RUN_FILES[:2]) if p.exists() and p.stat().st_size]
    if existing and not resume and not overwrite:
        raise GraphRNNError(
            f"{out} already holds a run ({', '.join(p.name for p in existing)}); continue it "
            "with --resume, start it over with --overwrite (deletes them), or choose another "
            "directory with --out"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
        probe = out / ".graphrnn-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise GraphRNNError(
            f"cannot write to the run directory {out}: {exc.strerror}; choose a writable "
            "directory with --out"
        ) from None


def _optimizer(config: TrainConfig):
    name = config.optimizer.lower()
    if name == HessianFree.name:
        return HessianFree(
            lr=config.lr or 1.0,
            damping=config.damping,
            cg_iters=config.cg_iters,
            weight_decay=config.weight_decay,
        )
    hyper: dict[str, float] = {}
    if config.lr is not None:
        hyper["lr"] = config.lr
    elif name == "adam":
        hyper["lr"] = 1e-2
    if name == "momentum":
        hyper["momentum"] = config.momentum
    if config.weight_decay or name == "momentum":
        hyper["weight_decay"] = config.weight_decay
    return make_optimizer(name, **hyper)


def _hessian_free_step(model, fn, optimizer: HessianFree, prepared: Prepared, config):
    if config.tbptt:
        raise GraphRNNError("hessian-free takes whole sequences; leave out --tbptt")
    if prepared.unpack is None or model.state:
        why = "keeps batch-norm running statistics" if model.state else "carries state"
        raise GraphRNNError(f"hessian-free cannot train the {config.task} task: it {why}")
    return curvature_step(fn, optimizer, prepared.unpack, config.curvature_batch)


def _train_step(fn, params, inputs: dict, targets: dict):
    """loss_and_grad on one batch; with batch norm also the update of the running statistics
    from this batch's statistics, which the training loop applies after the step."""
    if not fn.graph.batchnorms:
        return fn.loss_and_grad(params, inputs, targets)
    if not isinstance(fn, Compiled):
        raise GraphRNNError(
            "this model has batch norm, whose running statistics segmented BPTT does not "
            "keep; train it without bptt_checkpoint"
        )
    loss, grads, stats = fn.loss_and_grad(params, inputs, targets, batch_stats=True)
    return loss, grads, partial(update_state, stats=stats)


def _cast(config: TrainConfig, *arrays):
    return [a.astype(config.dtype) for a in arrays]


def _supervised(config: TrainConfig, split, sizes: dict, classify: bool) -> Prepared:
    x_train, y_train, x_test, y_test = _cast(
        config, split.x_train, split.y_train, split.x_test, split.y_test
    )

    def batches(epoch: int):
        return datasets.minibatches(x_train, y_train, config.batch, seed=config.seed, epoch=epoch)

    def unpack(batch):
        return {"x": batch[0]}, {"y": batch[1]}

    def loss_and_grad(fn):
        if config.tbptt:
            step = tbptt.last_chunk_grad(fn, config.tbptt)
            return lambda params, batch: step(params, *unpack(batch))
        return lambda params, batch: _train_step(fn, params, *unpack(batch))

    def validate(fn):
        def metrics(params):
            result = {"val_loss": fn.loss(params, {"x": x_test}, {"y": y_test})}
            if classify:
                logits = fn.forward(params, {"x": x_test})["o"]
                hits = np.argmax(logits, axis=-1) == np.argmax(y_test, axis=-1)
                result["val_acc"] = float(np.mean(hits))
            return result

        return metrics

    return Prepared({**sizes, **config.sizes}, batches, loss_and_grad, validate, {}, unpack)


def _adding(config: TrainConfig) -> Prepared:
    split = datasets.adding_task(
        n_train=config.n_train or 10000, n_test=1000, T=config.steps or 100, seed=config.seed
    )
    return _supervised(config, split, {"I": 2, "O": 1}, classify=False)


def _digits(config: TrainConfig) -> Prepared:
    split = datasets.sequential_digits(seed=config.seed)
    return _supervised(config, split, {"I": 8, "O": 10}, classify=True)


def _chars(config: TrainConfig) -> Prepared:
    if not config.text:
        raise GraphRNNError("the chars task needs a text file: --text PATH")
    corpus = datasets.char_corpus(config.text)
    train_ids, val_ids = corpus.split(0.1)
    sizes = {"V": corpus.vocab_size, **config.sizes}
    k = config.tbptt or config.seq_len

    def batches(epoch: int):
        chunks = datasets.char_batches(
            train_ids, corpus.vocab_size, config.batch, k, drop_last=True
        )
        for i, (x, y) in enumerate(chunks):
            yield i == 0, x.astype(config.dtype), y.astype(config.dtype)

    def loss_and_grad(fn):
        carried = tbptt.CarriedState(fn)

        def step(params, batch):
            first, x, y = batch
            inputs = {"x": x, **tbptt.zero_init_inputs(fn, x.shape[1])}
            return carried(params, inputs, {"y": y}, first)

        return step

    def validate(fn):
        def metrics(params):
            total = count = 0.0
            state = None
            for x, y in datasets.char_batches(val_ids, corpus.vocab_size, 1, k):
                inputs = {"x": x.astype(config.dtype), **tbptt.zero_init_inputs(fn, 1)}
                targets = {"y": y.astype(config.dtype)}
                loss, state = fn.loss(params, inputs, targets, initial=state, final=True)
                total += loss * x.shape[0]
                count += x.shape[0]
            return {
                "val_loss": total / max(count, 1),
                "val_bits_per_char": total / count / np.log(2),
            }

        return metrics

    meta = {"vocab": "".join(corpus.vocab)}
    return Prepared(sizes, batches, loss_and_grad, validate, meta)


def _image_size(config: TrainConfig, default: int) -> tuple[int, int]:
    return config.sizes.get("HI", default), config.sizes.get("WI", default)


def _images(config: TrainConfig, split, classes, size) -> Prepared:
    """Image tasks: models with `input img[3, HI, WI]`, `target y[K]` and an output `o`."""
    x_train, y_train, x_test, y_test = _cast(
        config, split.x_train, split.y_train, split.x_test, split.y_test
    )

    def batches(epoch: int):
        return datasets.minibatches(x_train, y_train, config.batch, seed=config.seed, epoch=epoch)

    def unpack(batch):
        return {"img": batch[0]}, {"y": batch[1]}

    def loss_and_grad(fn):
        return lambda params, batch: _train_step(fn, params, *unpack(batch))

    def validate(fn):
        def metrics(params):
            # fn is the evaluation graph (batch norm with the running statistics, which the
            # loop passes in params), so the batches only bound the memory used
            total, hits = 0.0, 0
            for x, y in datasets.minibatches(x_test, y_test, config.batch):
                total += fn.loss(params, {"img": x}, {"y": y}) * len(x)
                logits = fn.forward(params, {"img": x})["o"]
                hits += int(np.sum(np.argmax(logits, -1) == np.argmax(y, -1)))
            return {"val_loss": total / len(x_test), "val_acc": hits / len(x_test)}

        return metrics

    sizes = {"HI": size[0], "WI": size[1], "K": len(classes), **config.sizes}
    meta = {"classes": list(classes), "image_size": list(size)}
    return Prepared(sizes, batches, loss_and_grad, validate, meta, unpack)


def _faces(config: TrainConfig) -> Prepared:
    from graphrnn.train import images

    if not config.data:
        raise GraphRNNError("the faces task needs --data DIR (UTKFace names) or --data FILE.csv")
    size = _image_size(config, 128)
    found = images.load_faces(config.data, size)
    return _images(config, images.split(found, 0.2, config.seed), found.classes, size)


def _digit_images(config: TrainConfig) -> Prepared:
    from graphrnn.train import images

    size = _image_size(config, 32)
    if size[0] != size[1]:
        raise GraphRNNError("the digit_images task makes square images: give HI = WI")
    split = images.digit_images(size[0], seed=config.seed)
    return _images(config, split, ("3", "8"), size)


# The seeds' settings for the face classifier (SGD with momentum, as ReSeg trained); every
# other task trains with Adam at batch 32. Options given on the command line win.
TASK_DEFAULTS: dict[str, dict] = {
    "faces": {"optimizer": "momentum", "lr": 0.01, "weight_decay": 0.0005, "batch": 128},
}
GENERAL_DEFAULTS = {"optimizer": "adam", "lr": None, "weight_decay": 0.0, "batch": 32}


# Hessian-free wants large batches: a few good curvature estimates rather than many noisy ones.
HESSIAN_FREE_BATCH = 1000


def task_defaults(task: str, optimizer: str | None = None) -> dict:
    """Optimizer, learning rate, weight decay and batch size a task trains with by default
    (with `optimizer` given: the batch size for that optimizer)."""
    defaults = {**GENERAL_DEFAULTS, **TASK_DEFAULTS.get(task, {})}
    if optimizer is not None and optimizer.lower() == HessianFree.name:
        defaults["batch"] = HESSIAN_FREE_BATCH
    return defaults


_TASKS = {
    "adding": _adding,
    "digits": _digits,
    "chars": _chars,
    "faces": _faces,
    "digit_images": _digit_images,
}
