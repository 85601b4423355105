"""The blob store: ``blobs/<alg>/<hex>``, complete, verified and read-only. Knows nothing about HTTP.

A file here is always complete and verified: bytes reach it only through a commit in
``cas.store.writer``, which ``cas.store.ingest`` (the owner of ``ingest/``) hands out.
This module answers what is here (path, has, open, read), deletes and walks; it knows
nothing of downloads in flight.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

from cas.digest import Digest
from cas.errors import BadDigest
from cas.manifest import blob_place


class Described(Protocol):
    """A blob as a manifest or a record names it."""

    @property
    def digest(self) -> Digest: ...
    @property
    def size(self) -> int: ...


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs"

    def path(self, digest: Digest) -> Path:
        return self.blobs_dir / digest.algorithm / digest.hex

    def size(self, digest: Digest) -> int | None:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def has(self, digest: Digest, size: int | None = None) -> bool:
        actual = self.size(digest)
        return actual is not None and (size is None or actual == size)

    def lacking(self, config: Described | None, layers: Sequence[Described], image: str) -> list[str]:
        """One line per blob of ``image`` not held at its size, with its role: ``DIGEST (config of IMAGE)``,
        ``DIGEST (layer 2/5 of IMAGE)``, as export plans and imports report them. ``config`` None: not asked."""
        lines = (
            []
            if config is None or self.has(config.digest, config.size)
            else [f"{config.digest} ({blob_place(0, len(layers), image)})"]
        )
        for number, layer in enumerate(layers, 1):
            if not self.has(layer.digest, layer.size):
                lines.append(f"{layer.digest} ({blob_place(number, len(layers), image)})")
        return lines

    def open(self, digest: Digest) -> BinaryIO:
        return open(self.path(digest), "rb")

    def read(self, digest: Digest) -> bytes:
        return self.path(digest).read_bytes()

    def delete(self, digest: Digest) -> bool:
        try:
            self.path(digest).unlink()
            return True
        except FileNotFoundError:
            return False

    def iter_files(self) -> Iterator[tuple[Digest | None, Path]]:
        """Every regular file under blobs/, with its digest or None when the name is not one.

        Symlinks are reported with None and never followed.
        """
        if not self.blobs_dir.is_dir():
            return
        for alg_dir in sorted(self.blobs_dir.iterdir()):
            if alg_dir.is_symlink() or not alg_dir.is_dir():
                yield None, alg_dir
                continue
            for entry in os.scandir(alg_dir):
                path = Path(entry.path)
                if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
                    yield None, path
                    continue
                try:
                    yield Digest(alg_dir.name, entry.name), path
                except BadDigest:
                    yield None, path
