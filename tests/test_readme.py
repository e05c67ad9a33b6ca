"""The README's code works when pasted."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert blocks, "the README should show the core at work"
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"README.md block {number}", "exec"), {})
