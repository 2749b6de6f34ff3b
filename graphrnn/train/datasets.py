"""Built-in tasks as numpy arrays, ready for a compiled recurrent model.

Layout conventions, shared by every task:

* sequence inputs and per-step targets are time-major, ``[T, B, features]``;
* per-sequence targets (many-to-one) are ``[B, features]``;
* class targets are one-hot float arrays;
* arrays are float64 (cast with ``astype`` for a float32 backend).

So an array with 3 dimensions has its batch on axis 1, otherwise on axis 0; ``minibatches``
relies on this.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from graphrnn.errors import DataError, GraphRNNError

Seed = int | np.random.SeedSequence | None


def check_finite(name: str, array: np.ndarray) -> None:
    """Raise DataError naming the array and the first NaN/inf, so bad data fails early."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.number):
        return
    bad = ~np.isfinite(array)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"array {name!r} (shape {array.shape}) has {int(bad.sum())} non-finite values; "
            f"the first is {array[index]} at index {index}; clean or drop those samples"
        )


def check_arrays(**arrays: np.ndarray) -> None:
    """``check_finite`` for each keyword argument, named by its keyword."""
    for name, array in arrays.items():
        check_finite(name, array)


def batch_axis(array: np.ndarray) -> int:
    """Axis holding the batch: 1 for time-major ``[T, B, F]`` sequences, else 0."""
    return 1 if np.ndim(array) == 3 else 0


def one_hot(ids: np.ndarray, size: int) -> np.ndarray:
    """Float64 one-hot encoding along a new last axis."""
    return np.eye(size, dtype=np.float64)[np.asarray(ids)]


@dataclass(frozen=True, eq=False)
class Split:
    """Train and test arrays of one task, in the module's layout."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def check(self) -> Split:
        check_arrays(
            x_train=self.x_train, y_train=self.y_train, x_test=self.x_test, y_test=self.y_test
        )
        return self


def minibatches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    seed: int | None = None,
    epoch: int = 0,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x, y)`` batches split along each array's batch axis.

    With a ``seed`` the order is shuffled by a generator seeded from ``(seed, epoch)``, so
    epoch ``e`` always sees the same order: a resumed run replays it exactly.
    """
    n = x.shape[batch_axis(x)]
    if y.shape[batch_axis(y)] != n:
        raise DataError(
            f"x has {n} samples (shape {x.shape}) but y has {y.shape[batch_axis(y)]} "
            f"(shape {y.shape}); inputs and targets must pair up"
        )
    if batch_size < 1:
        raise GraphRNNError(f"batch_size must be at least 1, got {batch_size}")
    order = np.arange(n)
    if seed is not None:
        order = np.random.default_rng([seed, epoch]).permutation(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield np.take(x, idx, axis=batch_axis(x)), np.take(y, idx, axis=batch_axis(y))


def adding_problem(n: int, T: int, seed: Seed = None) -> tuple[np.ndarray, np.ndarray]:
    """The adding problem (Hochreiter & Schmidhuber 1997): x ``[T, n, 2]``, y ``[n, 1]``.

    Feature 0 is uniform in [0, 1]; feature 1 is a marker. Exactly two markers per
    sequence: one at a uniform step of the first half ``[0, T//2)``, one in the second half
    ``[T//2, T)``, so the model must remember across at least part of the sequence. The
    target is the sum of the two marked numbers (in [0, 2]).
    """
    if T < 2 or n < 1:
        raise GraphRNNError(f"adding problem needs T >= 2 and n >= 1, got T={T}, n={n}")
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, size=(T, n))
    half = T // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, T, size=n)
    markers = np.zeros((T, n))
    cols = np.arange(n)
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    x = np.stack([values, markers], axis=-1)
    y = (values[first, cols] + values[second, cols])[:, None]
    return x, y


def adding_task(n_train: int = 2000, n_test: int = 500, T: int = 50, seed: int = 0) -> Split:
    """Train/test sets of the adding problem from independent streams of one seed."""
    train_seed, test_seed = np.random.SeedSequence(seed).spawn(2)
    x_train, y_train = adding_problem(n_train, T, train_seed)
    x_test, y_test = adding_problem(n_test, T, test_seed)
    return Split(x_train, y_train, x_test, y_test).check()


def sequential_digits(seed: int = 0, test_fraction: float = 0.2) -> Split:
    """scikit-learn's bundled 8x8 digits read one image row per step.

    x ``[8, N, 8]`` in [0, 1] (pixel / 16), y one-hot ``[N, 10]``; the split is stratified
    by class and fixed by ``seed``. No download: the data ships with scikit-learn.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise GraphRNNError(f"test_fraction must be in (0, 1), got {test_fraction}")
    digits = load_digits()
    images = digits.images.astype(np.float64) / 16.0
    labels = digits.target
    im_tr, im_te, lab_tr, lab_te = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return Split(
        im_tr.transpose(1, 0, 2),
        one_hot(lab_tr, 10),
        im_te.transpose(1, 0, 2),
        one_hot(lab_te, 10),
    ).check()


@dataclass(frozen=True, eq=False)
class CharCorpus:
    """A text with its vocabulary (sorted characters) and the text as integer ids."""

    path: str
    text: str
    vocab: tuple[str, ...]
    ids: np.ndarray

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.vocab)}
        missing = sorted(set(text) - set(index))
        if missing:
            raise DataError(f"characters {missing!r} are not in the vocabulary of {self.path}")
        return np.array([index[c] for c in text], dtype=np.int64)

    def decode(self, ids: np.ndarray) -> str:
        return "".join(self.vocab[int(i)] for i in np.ravel(ids))

    def split(self, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """Contiguous train/validation id streams (the tail is validation)."""
        if not 0 < val_fraction < 1:
            raise GraphRNNError(f"val_fraction must be in (0, 1), got {val_fraction}")
        cut = len(self.ids) - max(2, int(len(self.ids) * val_fraction))
        if cut < 2:
            raise DataError(f"{self.path} is too short to split into train and validation")
        return self.ids[:cut], self.ids[cut:]


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError(f"text file {path} does not exist; give the path of a UTF-8 text file")
    if not path.is_file():
        raise DataError(f"{path} is not a file; give the path of a UTF-8 text file")
    data = path.read_bytes()
    if not data:
        raise DataError(f"text file {path} is empty; give a file with some text in it")
    if b"\x00" in data:
        raise DataError(f"{path} contains NUL bytes, so it looks binary; give a UTF-8 text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not UTF-8 text (bad byte at offset {exc.start}); "
            "convert it, e.g. iconv -t UTF-8"
        ) from None


def char_corpus(path: str | Path) -> CharCorpus:
    """Read a UTF-8 text file for character-level language modelling."""
    path = Path(path)
    text = _read_text(path)
    if len(text) < 2:
        raise DataError(f"text file {path} has {len(text)} character; need at least 2")
    vocab = tuple(sorted(set(text)))
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
    return CharCorpus(str(path), text, vocab, ids)


def char_batches(
    ids: np.ndarray,
    vocab_size: int,
    batch_size: int,
    seq_len: int,
    *,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Next-character batches for truncated BPTT: one-hot x and y, each ``[T, B, V]``.

    The stream is cut into ``batch_size`` contiguous rows and walked in chunks of
    ``seq_len`` steps, so row ``b`` of one chunk continues in row ``b`` of the next: carry
    the hidden state across chunks. ``y`` is ``x`` shifted one character ahead. The last
    chunk may be shorter unless ``drop_last``.
    """
    ids = np.asarray(ids)
    if batch_size < 1 or seq_len < 1:
        raise GraphRNNError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
    steps = (len(ids) - 1) // batch_size
    if steps < 1:
        raise DataError(
            f"{len(ids)} characters are too few for batch_size {batch_size}; "
            "use a smaller batch or a longer text"
        )
    rows_x = ids[: steps * batch_size].reshape(batch_size, steps)
    rows_y = ids[1 : steps * batch_size + 1].reshape(batch_size, steps)
    stop = steps - steps % seq_len if drop_last else steps
    for start in range(0, stop, seq_len):
        chunk = slice(start, min(start + seq_len, steps))
        yield one_hot(rows_x[:, chunk].T, vocab_size), one_hot(rows_y[:, chunk].T, vocab_size)


@dataclass(frozen=True)
class Task:
    """A registry entry: what the task is and the function that loads it."""

    name: str
    description: str
    loader: Callable[..., Any]

    def load(self, **options: Any) -> Any:
        return self.loader(**options)


TASKS: dict[str, Task] = {
    "adding": Task(
        "adding",
        "adding problem: sum the two marked numbers of a sequence (many-to-one regression); "
        "x [T, B, 2], y [B, 1]",
        adding_task,
    ),
    "digits": Task(
        "digits",
        "8x8 digits read row by row (many-to-one classification); x [8, B, 8], y [B, 10]",
        sequential_digits,
    ),
    "chars": Task(
        "chars",
        "next-character prediction on a UTF-8 text file you give (path=...); "
        "batch with char_batches",
        char_corpus,
    ),
}


def get_task(name: str) -> Task:
    """Look a task up by name; an unknown name lists the known ones."""
    task = TASKS.get(name)
    if task is None:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise GraphRNNError(f"unknown task {name!r}; {hint}known tasks: {', '.join(TASKS)}")
    return task
