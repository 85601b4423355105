"""What every benchmark shares: the paths and byte-compiling cas before anything is timed.

Benchmarks run the real `cas` from .venv against real servers on 127.0.0.1, in fresh
processes, so start-up and imports are always part of the figure.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VENV = ROOT / ".venv" / "bin"
CAS = str(VENV / "cas")
PYTHON = str(VENV / "python")


def compile_cas() -> None:
    """Byte-compile cas once, so no timed run pays for compiling it (PYTHONDONTWRITEBYTECODE)."""
    subprocess.run(
        [PYTHON, "-m", "compileall", "-q", str(ROOT / "cas"), str(ROOT / "cli")], check=True, stdout=subprocess.DEVNULL
    )
