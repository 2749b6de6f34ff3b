"""Backends: lowerings of the same graph; `reference` is the oracle for every other."""
