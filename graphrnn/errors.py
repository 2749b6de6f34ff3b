"""Errors a user can act on: each names the place in the model file and the fix.

Every mistake in user input raises a subclass of GraphRNNError; the CLI prints its message
and exits with status 2, so a user never sees a traceback from inside the compiler.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """The text of one model file, kept so that errors can quote the offending line."""

    path: str
    text: str

    def line(self, number: int) -> str:
        lines = self.text.split("\n")
        return lines[number - 1].rstrip("\r") if 1 <= number <= len(lines) else ""


@dataclass(frozen=True)
class Loc:
    """A span in a model file: 1-based line and column, end column exclusive."""

    source: Source
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.source.path}:{self.line}:{self.col}"

    def excerpt(self) -> str:
        """The line, indented, with the span underlined by carets."""
        text = self.source.line(self.line)
        end = self.end_col if self.end_line == self.line else len(text) + 1
        width = max(1, end - self.col)
        pad = "".join(c if c == "\t" else " " for c in text[: self.col - 1])
        return f"    {text}\n    {pad}{'^' * width}"


class GraphRNNError(Exception):
    """Base class of every error caused by user input (model files, data, options)."""


class DSLError(GraphRNNError):
    """A mistake in a model file, reported at its place with the line quoted."""

    def __init__(self, message: str, loc: Loc | None = None, note: str | None = None):
        self.message = message
        self.loc = loc
        self.note = note
        super().__init__(self.format())

    def format(self) -> str:
        head = f"{self.loc}: error: {self.message}" if self.loc else f"error: {self.message}"
        parts = [head]
        if self.loc is not None:
            parts.append(self.loc.excerpt())
        if self.note:
            parts.append(f"  {self.note}")
        return "\n".join(parts)


class ShapeError(DSLError):
    """Operand shapes that do not fit an op (named with the equation and the shapes)."""


class CausalityError(DSLError):
    """A recurrence that cannot be scheduled: a cycle without delay or two directions."""


class DataError(GraphRNNError):
    """Input arrays, data files or checkpoints that are missing, malformed or non-finite."""
