"""Backends: lowerings of the same graph. `reference` is the oracle every other is checked against."""
