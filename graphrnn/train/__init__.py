"""Training infrastructure independent of the model compiler: optimizers, checkpoints,
built-in datasets, metrics logging and a generic training loop."""

from graphrnn.train.checkpoint import load_checkpoint, save_checkpoint
from graphrnn.train.datasets import (
    TASKS,
    CharCorpus,
    Split,
    Task,
    adding_problem,
    adding_task,
    char_batches,
    char_corpus,
    check_arrays,
    check_finite,
    get_task,
    minibatches,
    one_hot,
    sequential_digits,
)
from graphrnn.train.loop import History, train
from graphrnn.train.metrics import MetricsLogger, plot_curves, read_jsonl
from graphrnn.train.optim import (
    OPTIMIZERS,
    SGD,
    Adam,
    Momentum,
    Optimizer,
    clip_grad_norm,
    global_norm,
    make_optimizer,
)

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "TASKS",
    "Adam",
    "CharCorpus",
    "History",
    "MetricsLogger",
    "Momentum",
    "Optimizer",
    "Split",
    "Task",
    "adding_problem",
    "adding_task",
    "char_batches",
    "char_corpus",
    "check_arrays",
    "check_finite",
    "clip_grad_norm",
    "get_task",
    "global_norm",
    "load_checkpoint",
    "make_optimizer",
    "minibatches",
    "one_hot",
    "plot_curves",
    "read_jsonl",
    "save_checkpoint",
    "sequential_digits",
    "train",
]
