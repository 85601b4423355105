"""Where an import reads members from: a tar stream (a file or stdin) or an OCI layout directory.

Both hand each member to the receiver with a way to stream its bytes, so the rest of
the import does not care which it was. The directory walk never follows a symlink
out of the directory: a symlink is passed on as a link member (checked like one in
a tar) and files are opened with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cas.importer.tarstream import CHUNK, DIR, FILE, SYMLINK, Member, TarStream, UnsafeArchive, checked_member

Take = Callable[[Member, Callable[[], Iterator[bytes]]], None]


def read_tar(fh: BinaryIO, take: Take) -> int:
    """Every member of the tar on ``fh``; returns the bytes read."""
    with ReadAhead(fh) as ahead:
        stream = TarStream(ahead)  # type: ignore[arg-type]
        for member in stream:
            take(member, stream.chunks)
    return stream.offset


class ReadAhead:
    """Reads ``fh`` on a thread, up to ``depth`` chunks ahead of the consumer.

    From a pipe (``docker save x | cas import -``) the writer can only run while the pipe has
    room; reading ahead lets it run while this process hashes and writes, instead of taking
    turns. ``read_some`` hands out slices of what was read, without copying them.
    """

    def __init__(self, fh: BinaryIO, depth: int = 8) -> None:
        self._fh = fh
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._held = memoryview(b"")
        self._ended = False
        self._thread = threading.Thread(target=self._fill, name="cas-import-read", daemon=True)

    def __enter__(self) -> ReadAhead:
        _widen_pipe(self._fh)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # the thread stops at its next chunk (a blocked pipe read ends with the process)

    def _fill(self) -> None:
        # read1: what the pipe holds now, up to CHUNK; read(CHUNK) would sit on a partial chunk until
        # more arrived, keeping back the end of a member from a writer that paused
        read = getattr(self._fh, "read1", self._fh.read)
        try:
            while not self._stop.is_set():
                data = read(CHUNK)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read_some(self, n: int) -> memoryview | bytes:
        """At least one byte and at most ``n``; empty only at the end of the stream."""
        if not self._held:
            if self._ended:
                return b""
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                self._ended = True
                return b""
            self._held = memoryview(item)
        out, self._held = self._held[:n], self._held[n:]
        return out

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes unless the stream ends first (headers and padding)."""
        parts, got = [], 0
        while got < n:
            part = self.read_some(n - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)


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


def _widen_pipe(fh: BinaryIO) -> None:
    """A 1 MiB pipe buffer instead of 64 KiB: the writer and the reader switch 16 times less often."""
    try:
        fd = fh.fileno()
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            import fcntl

            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    except (OSError, ValueError, AttributeError):
        pass  # not a pipe, or the kernel's limit is lower: the default works too
