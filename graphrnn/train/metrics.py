"""Training metrics as JSON lines, and plots of them.

One JSON object per line, flushed at once, so a crashed or running job can be inspected
(``tail -f``) and plotted. Fields: ``event`` (``"train"`` for step events, ``"epoch"`` for
end-of-epoch events with validation metrics), ``step``, ``epoch``, ``loss``, ``val_loss``,
``val_acc`` (or any ``val_*``), ``steps_per_s`` and ``time`` (Unix seconds). Non-finite
numbers are written as ``null`` so that every line stays strict JSON.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from graphrnn.errors import DataError


def _clean(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLogger:
    """Append-only JSON-lines writer; use as a context manager or call ``close``."""

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = open(self.path, "a" if append else "w", encoding="utf-8")

    def log(self, **fields: Any) -> dict[str, Any]:
        """Write one event (``time`` is added unless given) and flush it."""
        if self._file is None:
            raise ValueError(f"metrics logger for {self.path} is closed")
        record = {k: _clean(v) for k, v in fields.items()}
        record.setdefault("time", time.time())
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        return record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All events of a metrics file; a torn last line (a crash mid-write) is skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"metrics file {path} does not exist; give the log_path of a run")
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise DataError(f"{path}:{number}: not a JSON object ({exc})") from None
    return records


def drop_after(path: str | os.PathLike[str], step: int) -> None:
    """Forget events past ``step``: a run resumed from there will log those steps again."""
    path = Path(path)
    if not path.is_file():
        return
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


def _series(records: list[dict[str, Any]], key: str, event: str | None = None):
    points = [
        (r["step"], r[key])
        for r in records
        if r.get(key) is not None and "step" in r and (event is None or r.get("event") == event)
    ]
    return [p[0] for p in points], [p[1] for p in points]


def plot_curves(jsonl_path: str | os.PathLike[str], png_path: str | os.PathLike[str]) -> None:
    """Draw training and validation loss (and validation accuracy if logged) against step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = read_jsonl(jsonl_path)
    if not records:
        raise DataError(f"metrics file {jsonl_path} has no events to plot")
    train = _series(records, "loss", "train")
    if not train[0]:
        train = _series(records, "loss")
    acc_keys = sorted({k for r in records for k in r if k.startswith("val_") and "acc" in k})
    fig = Figure(figsize=(10 if acc_keys else 6, 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if acc_keys else 1, squeeze=False)[0]
    axes[0].plot(*train, label="train loss", alpha=0.8)
    val = _series(records, "val_loss")
    if val[0]:
        axes[0].plot(*val, "o-", label="validation loss")
    axes[0].set(xlabel="step", ylabel="loss", title="loss")
    if min(train[1] + val[1], default=0) > 0:
        axes[0].set_yscale("log")
    axes[0].legend()
    for key in acc_keys:
        axes[1].plot(*_series(records, key), "o-", label=key)
    if acc_keys:
        axes[1].set(xlabel="step", ylabel="accuracy", title="validation accuracy")
        axes[1].legend()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
