"""What every benchmark shares: the paths and byte-compiling cas before anything is timed.

Benchmarks run the real `cas` from .venv against real servers on 127.0.0.1, in fresh
processes, so start-up and imports are always part of the figure.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VENV = ROOT / ".venv" / "bin"
CAS = str(VENV / "cas")
PYTHON = str(VENV / "python")


def compile_cas(root: Path = ROOT) -> None:
    """Byte-compile a checkout's cas once, so no timed run pays for compiling it (PYTHONDONTWRITEBYTECODE)."""
    python = str(root / ".venv" / "bin" / "python")
    subprocess.run(
        [python, "-m", "compileall", "-q", str(root / "cas"), str(root / "cli")], check=True, stdout=subprocess.DEVNULL
    )


def timed(cmd: list[str], *, env: dict[str, str] | None = None, stdout=subprocess.DEVNULL) -> float:
    """Wall seconds of one child process; raises if it fails."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}")
    return elapsed


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"
