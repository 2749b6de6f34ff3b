"""The version of graphrnn, in a module of its own so that any module can read it without
importing the package (and through it everything else). pyproject.toml states the same
number; tests/test_version.py checks that the two agree."""

__version__ = "0.1.0"
