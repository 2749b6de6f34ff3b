"""Image classification data: face photos (UTKFace names or a CSV) and upscaled digits.

Arrays follow datasets.py: images are ``[B, 3, H, W]`` float64 pixel values in 0..255 (the
model scales them), targets one-hot ``[B, K]``. Decoding and resizing use Pillow.

* ``utkface_folder(DIR)``: every ``*.jpg``/``*.png`` named ``age_gender_race_date.jpg``
  (UTKFace's convention; gender 0 = male, 1 = female) is one example of class ``gender``.
* ``csv_file(FILE)``: lines ``path,label`` (a header line is allowed; paths relative to the
  CSV's folder; label an integer class).
* Unreadable images and names or labels that do not parse are skipped, and one warning lists
  them all; an empty result is an error.
* ``split``: a seeded train/validation split.
* ``digit_images``: scikit-learn's bundled 8x8 digits, two classes, upscaled.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graphrnn.errors import DataError
from graphrnn.train.datasets import Split, one_hot

SEXES = ("male", "female")
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp"}


@dataclass
class ImageSet:
    x: np.ndarray  # [N, 3, H, W], 0..255
    labels: np.ndarray  # [N] ints
    classes: tuple[str, ...]
    paths: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def read_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """One image as [3, H, W] float64 in 0..255, resized to size = (H, W)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(im, dtype=np.float64).transpose(2, 0, 1).copy()


def utkface_label(name: str) -> int:
    """The gender field of an UTKFace file name, or ValueError."""
    parts = Path(name).stem.split("_")
    if len(parts) < 3:
        raise ValueError("name is not age_gender_race_date")
    int(parts[0])
    gender = int(parts[1])
    if gender not in (0, 1):
        raise ValueError(f"gender {gender} is neither 0 nor 1")
    return gender


def _load(items, size, classes, source: str) -> ImageSet:
    """items: (path, label or an exception); unreadable and unlabelled ones are skipped."""
    xs, labels, paths, skipped = [], [], [], []
    for path, label in items:
        if isinstance(label, Exception):
            skipped.append(f"{path} (label: {label})")
            continue
        if not 0 <= label < len(classes):
            skipped.append(f"{path} (label {label} is not one of 0..{len(classes) - 1})")
            continue
        try:
            xs.append(read_image(path, size))
        except Exception as e:  # Pillow raises many kinds for broken files
            skipped.append(f"{path} (unreadable: {type(e).__name__}: {e})")
            continue
        labels.append(label)
        paths.append(str(path))
    if skipped:
        shown = "\n  ".join(skipped[:50]) + (
            f"\n  ... {len(skipped) - 50} more" if len(skipped) > 50 else ""
        )
        warnings.warn(f"{source}: skipped {len(skipped)} file(s):\n  {shown}", stacklevel=3)
    if not xs:
        raise DataError(f"{source}: no usable images")
    return ImageSet(np.stack(xs), np.asarray(labels), tuple(classes), paths, skipped)


def utkface_folder(folder: str | Path, size: tuple[int, int]) -> ImageSet:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of images")
    items = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in EXTENSIONS:
            continue
        try:
            items.append((path, utkface_label(path.name)))
        except ValueError as e:
            items.append((path, e))
    return _load(items, size, SEXES, str(folder))


def csv_file(path: str | Path, size: tuple[int, int], classes=SEXES) -> ImageSet:
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(
            f"cannot read the CSV file {path} ({_reason(e)}); give a UTF-8 file of path,label"
        ) from None
    items = []
    for k, row in enumerate(rows):
        if not row or (k == 0 and row[0].strip().lower() == "path"):
            continue
        image = path.parent / row[0].strip()
        try:
            if len(row) != 2:
                raise ValueError(f"expected path,label, got {len(row)} fields")
            items.append((image, int(row[1])))
        except ValueError as e:
            items.append((image, e))
    return _load(items, size, classes, str(path))


def load_faces(data: str | Path, size: tuple[int, int]) -> ImageSet:
    """A UTKFace-style folder, or a CSV of path,label."""
    data = Path(data)
    if not data.exists():
        raise DataError(
            f"--data {data} does not exist; give a folder of UTKFace-named images or a CSV "
            "file of path,label lines"
        )
    return csv_file(data, size) if data.suffix.lower() == ".csv" else utkface_folder(data, size)


def split(images: ImageSet, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """A seeded shuffle, then the first part for training and the rest for validation."""
    n = len(images.labels)
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, int(round(n * val_fraction))), n - 1) if n > 1 else 0
    val, train = order[:n_val], order[n_val:]
    y = one_hot(images.labels, len(images.classes))
    return Split(images.x[train], y[train], images.x[val], y[val]).check()


def digit_images(size: int = 16, classes=(3, 8), seed: int = 0, val_fraction=0.2) -> Split:
    """scikit-learn's 8x8 digits of two classes (class k = classes[k]) as [B, 3, size, size]
    images in 0..255, upscaled with Pillow's bilinear filter."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.isin(digits.target, classes)
    labels = np.searchsorted(np.asarray(classes), digits.target[keep])
    xs = []
    for img in digits.images[keep]:
        im = Image.fromarray((img * (255.0 / 16.0)).astype(np.uint8))
        im = np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float64)
        xs.append(np.repeat(im[None], 3, axis=0))
    images = ImageSet(np.stack(xs), labels, tuple(str(c) for c in classes))
    return split(images, val_fraction, seed)


def predict(checkpoint: str | Path, paths) -> list[tuple[str, dict[str, float] | str]]:
    """Class probabilities (softmax of the output `o`) of each image, with the model stored
    in an image-task checkpoint; an image that cannot be read gets its error message
    instead, so one bad file does not lose the others. Batch norms run in evaluation mode,
    with the running statistics saved in the checkpoint, so each image is classified on its
    own (the same alone or among others). A checkpoint written before running statistics
    were kept falls back, with a warning, to normalising the given images together as one
    batch."""
    from graphrnn.model import load_checkpoint

    model = load_checkpoint(checkpoint)
    params, meta, state = model.params, model.meta, model.state
    if "classes" not in meta or "image_size" not in meta:
        raise DataError(f"{checkpoint} is not a checkpoint of an image task (faces, digit_images)")
    mode = "eval"
    if model.state and not model.state_saved:
        warnings.warn(
            f"{checkpoint} holds no batch-norm running statistics (it was written before "
            "graphrnn kept them), so the given images are normalised together as one batch "
            "(training mode) and one image alone is normalised over its own pixels; resume "
            "its training for an epoch to get running statistics",
            stacklevel=2,
        )
        mode = "train"
    size = tuple(meta["image_size"])
    images, results = [], {}
    for path in paths:
        try:
            images.append((str(path), read_image(path, size)))
        except Exception as e:  # Pillow raises many kinds for broken files
            results[str(path)] = f"cannot read the image ({_reason(e)})"
    if images:
        fn = model.compile("reference", "float64", mode=mode)
        x = np.stack([a for _, a in images])
        logits = fn.forward({**params, **state}, {"img": x})["o"]
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs = e / e.sum(axis=-1, keepdims=True)
        for (path, _), row in zip(images, probs):
            results[path] = {c: float(q) for c, q in zip(meta["classes"], row)}
    return [(str(p), results[str(p)]) for p in paths]


def _reason(error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
