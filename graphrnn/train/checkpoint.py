"""Checkpoints: parameters, optimizer state and a JSON meta record in one ``.npz`` file.

Layout inside the archive: ``param/<name>`` arrays, ``opt/<key>`` optimizer state (arrays
and scalars), ``state/<name>`` non-trainable model state (batch norms' running statistics;
absent from checkpoints written before they were kept, and from models without batch norm),
and ``__meta__``, a JSON string holding the caller's meta (model path, sizes,
step, epoch, ...) plus ``format``, ``format_version`` and ``graphrnn_version``. Nothing is
pickled, so loading a checkpoint never runs code.

Saving is atomic (temp file in the same directory, fsync, ``os.replace``): a crash while
saving leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from graphrnn.errors import DataError, GraphRNNError
from graphrnn.version import __version__

FORMAT = "graphrnn-checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"
_ZIP_MAGIC = b"PK\x03\x04"
_WRITABLE = "free some disk space or choose a writable run directory (--out)"
_START_OVER = "delete it and resume from an earlier checkpoint, or train without resume"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _encode_meta(meta: Mapping[str, Any]) -> str:
    record = {**meta, "format": FORMAT, "format_version": FORMAT_VERSION}
    record.setdefault("graphrnn_version", __version__)
    try:
        return json.dumps(record, default=_json_default, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise GraphRNNError(
            f"checkpoint meta must be JSON data with finite numbers: {exc}"
        ) from None


def _first_nonfinite(array: np.ndarray) -> str | None:
    if not np.issubdtype(array.dtype, np.number):
        return None
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    return f"{array[index]} at index {index} ({int(bad.sum())} non-finite values in all)"


def _archive_entries(
    params: Mapping[str, np.ndarray],
    opt_state: Mapping[str, Any],
    meta: Mapping[str, Any],
    state: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    entries = {f"param/{k}": np.asarray(v) for k, v in params.items()}
    entries.update({f"opt/{k}": np.asarray(v) for k, v in opt_state.items()})
    entries.update({f"state/{k}": np.asarray(v) for k, v in state.items()})
    entries[META_KEY] = np.array(_encode_meta(meta))
    return entries


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; not every platform can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | os.PathLike[str],
    params: Mapping[str, np.ndarray],
    opt_state: Mapping[str, Any],
    meta: Mapping[str, Any],
    state: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write a checkpoint atomically; refuses non-finite parameters or state (they could not
    resume). `state`: non-trainable arrays such as batch norms' running statistics."""
    path = Path(path)
    state = state or {}
    arrays = {f"parameter {k!r}": v for k, v in params.items()}
    arrays.update({f"running statistic {k!r}": v for k, v in state.items()})
    for what, array in arrays.items():
        where = _first_nonfinite(np.asarray(array))
        if where:
            raise DataError(
                f"refusing to save checkpoint {path}: {what} has {where}; "
                "the previous checkpoint is kept; lower the learning rate or clip gradients"
            )
    entries = _archive_entries(params, opt_state, meta, state)
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise DataError(
            f"cannot write checkpoint {path}: {exc.strerror or exc}; {_WRITABLE}"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **entries)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise DataError(
            f"cannot write checkpoint {path}: {exc.strerror or exc}; the previous checkpoint "
            f"is kept; {_WRITABLE}"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(directory)


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files that saves of `path` killed mid-write left behind (a kill -9
    runs no cleanup); returns what was removed. Call it only while no save is running."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DataError(
            f"checkpoint {path} does not exist; check the path, or train without resume "
            "to start a fresh run"
        )
    if not path.is_file():
        raise DataError(f"checkpoint {path} is not a file; give the path of a .npz checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise DataError(f"checkpoint {path} is empty (an interrupted copy?); {_START_OVER}")
    if head != _ZIP_MAGIC:
        raise DataError(
            f"{path} is not a graphrnn checkpoint (not an .npz archive); "
            "give a file written by save_checkpoint"
        )


def _read_entries(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (
        OSError,
        ValueError,
        EOFError,
        KeyError,
        NotImplementedError,  # a flipped byte can name an unknown compression method
        RuntimeError,
        struct.error,
        zipfile.BadZipFile,
        zlib.error,
    ) as exc:
        raise DataError(
            f"checkpoint {path} is truncated or corrupt ({exc}); {_START_OVER}"
        ) from None


def _decode_meta(path: Path, entries: Mapping[str, np.ndarray]) -> dict[str, Any]:
    raw = entries.get(META_KEY)
    if raw is None or raw.dtype.kind != "U" or raw.ndim != 0:
        raise DataError(
            f"{path} is an .npz archive but not a graphrnn checkpoint (no {META_KEY} record); "
            "give a file written by save_checkpoint"
        )
    try:
        meta = json.loads(str(raw))
    except ValueError as exc:
        raise DataError(
            f"checkpoint {path} has a corrupt meta record ({exc}); {_START_OVER}"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path} is not a graphrnn checkpoint (format {meta.get('format')!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise DataError(
            f"checkpoint {path} has format version {meta['format_version']}, newer than this "
            f"graphrnn understands ({FORMAT_VERSION}); upgrade graphrnn to load it"
        )
    return meta


def _opt_value(key: str, value: np.ndarray) -> Any:
    """Scalars (keys without '/') come back as Python values; slot arrays stay arrays."""
    if "/" not in key and value.ndim == 0:
        return value.item()
    return value


def load_checkpoint(path: str | os.PathLike[str], with_state: bool = False) -> tuple:
    """Read ``(params, opt_state, meta)``, or ``(params, opt_state, meta, state)`` with
    ``with_state=True`` (state empty when the checkpoint holds none); every problem becomes
    a DataError naming the file."""
    path = Path(path)
    _check_readable(path)
    entries = _read_entries(path)
    meta = _decode_meta(path, entries)
    params: dict[str, np.ndarray] = {}
    opt_state: dict[str, Any] = {}
    state: dict[str, np.ndarray] = {}
    for key, value in entries.items():
        group, _, name = key.partition("/")
        if group == "param":
            params[name] = value
        elif group == "opt":
            opt_state[name] = _opt_value(name, value)
        elif group == "state":
            state[name] = value
    _check_loaded_finite(path, params, opt_state, state)
    return (params, opt_state, meta, state) if with_state else (params, opt_state, meta)


def _check_loaded_finite(
    path: Path,
    params: Mapping[str, np.ndarray],
    opt_state: Mapping[str, Any],
    state: Mapping[str, np.ndarray],
) -> None:
    arrays = {f"parameter {k!r}": v for k, v in params.items()}
    arrays.update({f"running statistic {k!r}": v for k, v in state.items()})
    arrays.update(
        {f"optimizer state {k!r}": v for k, v in opt_state.items() if isinstance(v, np.ndarray)}
    )
    for what, array in arrays.items():
        where = _first_nonfinite(array)
        if where:
            raise DataError(
                f"checkpoint {path}: {what} has {where}; the run had diverged when it was "
                "saved; resume from an earlier checkpoint with a lower learning rate or clipping"
            )
