"""What every benchmark shares: the paths, wall time of one child, peak RSS, a local registry.

Benchmarks run the real `cas` from .venv against a real docker-registry on 127.0.0.1,
in fresh processes, so start-up and imports are always part of the figure.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.tools import require  # noqa: E402

VENV = ROOT / ".venv" / "bin"
CAS = str(VENV / "cas")
PYTHON = str(VENV / "python")


def compile_cas() -> None:
    """Byte-compile cas once, so no timed run pays for compiling it (PYTHONDONTWRITEBYTECODE)."""
    subprocess.run(
        [PYTHON, "-m", "compileall", "-q", str(ROOT / "cas"), str(ROOT / "cli")], check=True, stdout=subprocess.DEVNULL
    )


def timed(cmd: list[str], *, env: dict[str, str] | None = None, stdout=subprocess.DEVNULL) -> float:
    """Wall seconds of one child process; raises if it fails."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}")
    return elapsed


def peak_rss_kib(cmd: list[str], env: dict[str, str], scratch: Path) -> int:
    """Peak RSS of ``cmd`` as GNU time reports it.

    Not wait4/getrusage from here: subprocess starts children with vfork, and Linux then
    charges this (large) benchmark process's RSS to the child's ru_maxrss.
    """
    gnu_time = require("time", "time", prefer=["/usr/bin/time"])
    report = scratch / "rss.txt"
    timed([gnu_time, "-f", "%M", "-o", str(report), *cmd], env=env)
    return int(report.read_text().split()[-1])


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"
