"""Where an import reads members from: a tar stream (a file or stdin) or an OCI layout directory.

Both hand each member to the receiver with a way to stream its bytes, so the rest of
the import does not care which it was. The directory walk never follows a symlink
out of the directory: a symlink is passed on as a link member (checked like one in
a tar) and files are opened with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cas.importer.tarstream import CHUNK, DIR, FILE, SYMLINK, Member, TarStream, UnsafeArchive, checked_member

Take = Callable[[Member, Callable[[], Iterator[bytes]]], None]


def read_tar(fh: BinaryIO, take: Take) -> int:
    """Every member of the tar on ``fh``; returns the bytes read."""
    stream = TarStream(fh)
    for member in stream:
        take(member, stream.chunks)
    return stream.offset


def read_dir(root: Path, take: Take) -> int:
    """Every file, directory and symlink under ``root`` (an OCI layout); returns the file bytes read."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                member = checked_member(rel, SYMLINK, 0, os.readlink(path))
            elif stat.S_ISREG(mode):
                member = checked_member(rel, FILE, os.lstat(path).st_size)
            elif stat.S_ISDIR(mode):
                member = checked_member(rel, DIR, 0)
            else:
                raise UnsafeArchive(f"{rel} is a device, FIFO or socket")
            if member is None:
                continue
            sizes = [0]
            take(member, lambda path=path, member=member, sizes=sizes: _file_chunks(path, member.size, sizes))
            total += sizes[0]
    return total


def _file_chunks(path: str, size: int, sizes: list[int]) -> Iterator[bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb", buffering=0) as fh:
        left = size
        while left:
            chunk = fh.read(min(left, CHUNK))
            if not chunk:
                raise UnsafeArchive(f"{path} shrank while it was read")
            left -= len(chunk)
            sizes[0] += len(chunk)
            yield chunk
