"""Refusing work that cannot fit in memory, with the figure, before anything is allocated.

A size such as `--dim H=1000000000` would otherwise surface as NumPy's MemoryError from deep
inside an initialiser or a backend, or get the process killed. The estimate counts the
buffers a call holds at once (parameters, or every value of a graph evaluation) from their
shapes alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from graphrnn.errors import GraphRNNError


def available_bytes() -> int:
    """Memory the process may still use: MemAvailable where Linux tells it, else RAM."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024:
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} EiB"


def elements(shape: Iterable[int]) -> int:
    """The number of elements of a shape, as an exact integer (no overflow)."""
    count = 1
    for d in shape:
        count *= int(d)
    return count


def check_fits(what: str, buffers: dict[str, int], fix: str) -> None:
    """Raise when `buffers` (name -> bytes) need more than the available memory, naming the
    total, the largest buffer and `fix` (what the user can change)."""
    total = sum(buffers.values())
    free = available_bytes()
    if total <= free:
        return
    largest = max(buffers, key=buffers.__getitem__)
    raise GraphRNNError(
        f"{what}: about {format_bytes(total)} of memory is needed (the largest buffer, "
        f"{largest}, {format_bytes(buffers[largest])}), but {format_bytes(free)} is "
        f"available; {fix}"
    )
