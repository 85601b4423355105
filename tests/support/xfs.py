"""A throwaway XFS filesystem with reflinks, loop-mounted from an image file (needs root).

Why: exports clone blob extents only where the filesystem can (XFS reflink=1, btrfs); the
tests and benchmarks that prove it need such a filesystem, and CI machines have none. When
the machine cannot make or mount one, ``XfsUnavailable`` says exactly why: never a quiet skip.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from .tools import require


class XfsUnavailable(RuntimeError):
    """This machine cannot make or mount a reflink XFS (no root, no loop devices, no xfsprogs)."""


@contextlib.contextmanager
def reflink_xfs(workdir: Path, size: str = "2G") -> Iterator[Path]:
    """Mount a fresh XFS (``-m reflink=1``) made in ``workdir/xfs.img`` at ``workdir/xfs``; unmount after."""
    mkfs = require("mkfs.xfs", "xfsprogs")
    image, mountpoint = workdir / "xfs.img", workdir / "xfs"
    mountpoint.mkdir(parents=True, exist_ok=True)
    _run(["truncate", "-s", size, str(image)], "create the image file")
    try:
        _run([mkfs, "-q", "-m", "reflink=1", str(image)], "make the XFS filesystem")
        _run(
            ["mount", "-o", "loop", str(image), str(mountpoint)], "loop-mount the XFS image (needs root and /dev/loop*)"
        )
        try:
            yield mountpoint
        finally:
            subprocess.run(["umount", str(mountpoint)], check=False, capture_output=True)
    finally:
        image.unlink(missing_ok=True)


def used_bytes(path: Path) -> int:
    """Bytes in use on the filesystem holding ``path`` (what `df --output=used` reports)."""
    os.sync()
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise XfsUnavailable(f"cannot {what}: `{' '.join(cmd)}` exited {proc.returncode}: {proc.stderr.strip()}")
