"""The version stated in pyproject.toml is the one graphrnn reports (graphrnn/version.py)."""

from __future__ import annotations

import re
from pathlib import Path

import graphrnn
from graphrnn.version import __version__

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _project_version(text: str) -> str:
    """`version` of the [project] table (read as text: tomllib is not in Python 3.10)."""
    table = re.search(r"^\[project\]$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    assert table, "pyproject.toml has no [project] table"
    found = re.search(r'^version\s*=\s*"([^"]+)"', table.group(1), re.M)
    assert found, "the [project] table of pyproject.toml states no version"
    return found.group(1)


def test_pyproject_states_the_version_of_the_package():
    assert _project_version(PYPROJECT.read_text()) == __version__


def test_the_package_re_exports_the_version():
    assert graphrnn.__version__ == __version__
