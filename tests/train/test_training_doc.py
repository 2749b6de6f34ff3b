"""docs/training.md runs as written: its ```python blocks, in order, in one namespace."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "training.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.M | re.S)


def test_every_example_on_the_training_page_runs(tmp_path, monkeypatch):
    blocks = python_blocks(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) >= 8, "the page's examples were not found"
    (tmp_path / "models").symlink_to(ROOT / "models")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "training_doc"}
    for number, block in enumerate(blocks, 1):
        code = compile(block, f"{PAGE.name} example {number}", "exec")
        exec(code, namespace)  # a failing assert names the example
    assert os.path.exists("runs/gru-sign/checkpoint.npz")


def test_the_page_is_linked_from_the_readme_and_the_api_page():
    for page in ("README.md", "docs/api.md"):
        assert "training.md" in (ROOT / page).read_text(encoding="utf-8"), page
