"""The model language: text -> syntax tree (``parse``); the lowering gives it meaning."""

from graphrnn.dsl.parser import parse, parse_file

__all__ = ["parse", "parse_file"]
