"""Removing entries below blobs/ without ever following a symlink (prune and verify --repair)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from cas.digest import Digest


class Remover:
    """Deletes entries below ``blobs/`` through directory fds opened with O_NOFOLLOW.

    ``blobs/`` itself may be reached through a symlink (CAS_HOME on another disk);
    nothing below it ever is.
    """

    def __init__(self, blobs_dir: Path) -> None:
        self.blobs_dir = blobs_dir
        self._top: int | None = None
        self._dirs: dict[str, int | None] = {}

    def _top_fd(self) -> int | None:
        if self._top is None:
            try:
                self._top = os.open(self.blobs_dir, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                return None
        return self._top

    def _dir_fd(self, name: str) -> int | None:
        if name not in self._dirs:
            top = self._top_fd()
            fd = None
            if top is not None:
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
                except OSError:  # missing, a symlink, or not a directory: nothing to follow
                    fd = None
            self._dirs[name] = fd
        return self._dirs[name]

    def remove_blob(self, digest: Digest, errors: list[str]) -> bool:
        fd = self._dir_fd(digest.algorithm)
        if fd is None:
            return False
        return self._unlink(fd, digest.hex, errors, f"blobs/{digest.algorithm}/{digest.hex}")

    def remove_path(self, path: Path, errors: list[str]) -> bool:
        """A stray: ``blobs/<name>`` or ``blobs/<alg>/<name>``."""
        try:
            rel = path.relative_to(self.blobs_dir)
        except ValueError:
            errors.append(f"refusing to remove {path}: outside {self.blobs_dir}")
            return False
        parts = rel.parts
        if len(parts) == 1:
            fd = self._top_fd()
        elif len(parts) == 2:
            fd = self._dir_fd(parts[0])
        else:
            errors.append(f"refusing to remove {path}: not directly under blobs/<alg>/")
            return False
        if fd is None:
            return False
        return self._unlink(fd, parts[-1], errors, f"blobs/{rel}")

    def _unlink(self, dir_fd: int, name: str, errors: list[str], shown: str) -> bool:
        try:
            try:
                os.unlink(name, dir_fd=dir_fd)  # a file, or a symlink as a link: one call per blob
            except IsADirectoryError:
                shutil.rmtree(name, dir_fd=dir_fd)  # fd-based: never follows links inside
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            errors.append(f"could not remove {shown}: {exc.strerror}")
            return False

    def close(self) -> None:
        for fd in self._dirs.values():
            if fd is not None:
                os.close(fd)
        self._dirs.clear()
        if self._top is not None:
            os.close(self._top)
            self._top = None
