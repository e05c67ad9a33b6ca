"""The docs' state diagrams are the ones the core's tables draw."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_state_diagrams_match_the_tables() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "diagrams.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
