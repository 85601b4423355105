"""A tar writer that moves blob bytes inside the kernel and lines them up for cloning. Knows no images.

Headers come from the standard library (``tarfile.TarInfo.tobuf``, PAX format): plain
ustar for what fits, PAX records for what does not (a name over 100 bytes, e.g.
``blobs/sha512/<128 hex>``; a member of 8 GiB or more). Each file member's data starts
at a 4 KiB boundary of the output: the header is padded with a PAX ``comment`` record
of the right length, which every reader ignores (tarfile, GNU tar, docker, podman,
skopeo). Aligned data lets ``os.copy_file_range`` clone the store file's extents on
XFS (reflink=1) and btrfs, so a large export costs neither time nor disk space there;
elsewhere the same call copies inside the kernel.

How bytes move, decided per output and switched once when the kernel refuses:
``copy_file_range`` into a regular file, ``sendfile`` into a pipe (or when
copy_file_range is refused: another filesystem type, an old kernel), and a read/write
loop over one buffer as the last resort (an O_APPEND output). Nothing is buffered
beyond one header and the padding of the previous member, so memory stays flat.

A source file is opened with ``O_NOFOLLOW`` and must be a regular file: a symlink
is never followed (``UnsafeSource``), so nothing outside the store can be copied in.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import tarfile
from pathlib import Path

from cas.digest import Hasher
from cas.store.fs import KERNEL_COPY_REFUSED

BLOCK = 512
DATA_ALIGN = 4096  # file data starts at this boundary: the block size reflinks need
_COPY_CHUNK = 1 << 20
_KERNEL_CHUNK = 1 << 30
_PAD_TEXT = "cas: padding so that the next member's data starts at a 4 KiB boundary "
COPY_FILE_RANGE, SENDFILE, READ_WRITE = "copy_file_range", "sendfile", "read-write"
_EOF = bytes(2 * BLOCK)


class TruncatedFile(Exception):
    """A source file ended before the size its header promised (not an error of the output)."""


class UnsafeSource(Exception):
    """A source path is a symlink or not a regular file; it was not followed or read."""


class TarWriter:
    """Write a tar stream to ``fd`` (not closed). Call ``close()`` to write the end-of-archive blocks."""

    def __init__(self, fd: int, *, mtime: int = 0, verify: bool = False) -> None:
        self.fd = fd
        self.mtime = mtime
        self.verify = verify  # the caller hands add_file a hasher for each file (``cas export --verify``)
        self.written = 0  # bytes handed to the kernel so far
        self.method = SENDFILE  # how file bytes move now (COPY_FILE_RANGE, SENDFILE, READ_WRITE)
        self._start = 0  # the output's offset when we began: alignment is relative to the file
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            self.method = COPY_FILE_RANGE
            try:
                self._start = os.lseek(fd, 0, os.SEEK_CUR)
            except OSError:
                self._start = 0
        if verify:
            self.method = READ_WRITE  # bytes must pass through user space to be hashed
        self._pending = bytearray()

    # members -----------------------------------------------------------------
    def add_dir(self, name: str) -> None:
        self._pending += header(name.rstrip("/") + "/", 0, self.mtime, type=tarfile.DIRTYPE, mode=0o755)

    def add_bytes(self, name: str, data: bytes) -> None:
        self._pending += header(name, len(data), self.mtime)
        self._pending += data
        self._pending += _padding(len(data))

    def add_file(self, name: str, path: Path | str, size: int, hasher: Hasher | None = None) -> None:
        """Stream ``size`` bytes of ``path`` as member ``name``, its data 4 KiB-aligned in the output;
        raise TruncatedFile if the file is shorter.

        ``path`` is opened before the header is written and never through a symlink: a symlink
        or anything but a regular file raises UnsafeSource. With ``hasher``, every byte also goes
        through it on the way (read, then hashed while a helper thread writes it: one pass).
        """
        fd = open_regular(path)
        try:
            self._pending += header(name, size, self.mtime, at=self._start + self.written + len(self._pending))
            self._flush()
            if hasher is None:
                self._copy(fd, size, name)
            else:
                self._copy_hashed(fd, size, name, hasher)
        finally:
            os.close(fd)
        self._pending += _padding(size)

    def close(self) -> None:
        self._pending += _EOF
        self._flush()

    # plumbing ----------------------------------------------------------------
    def _flush(self) -> None:
        if self._pending:
            self._write_all(self._pending)
            self._pending = bytearray()

    def _write_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                self._wait_writable()
                continue
            view = view[n:]
            self.written += n

    def _copy(self, src: int, size: int, name: str) -> None:
        offset = 0
        while self.method != READ_WRITE and offset < size:
            count = min(size - offset, _KERNEL_CHUNK)
            try:
                if self.method == COPY_FILE_RANGE:
                    n = os.copy_file_range(src, self.fd, count, offset)  # the output's own offset advances
                else:
                    n = os.sendfile(self.fd, src, offset, count)
            except BlockingIOError:
                self._wait_writable()
                continue
            except OSError as exc:
                if offset == 0 and exc.errno in KERNEL_COPY_REFUSED:
                    self.method = SENDFILE if self.method == COPY_FILE_RANGE else READ_WRITE
                    continue
                raise
            if n == 0:
                raise TruncatedFile(f"{name}: file ended after {offset} of {size} bytes")
            offset += n
            self.written += n
        if offset < size:
            self._copy_loop(src, offset, size, name)

    def _copy_loop(self, src: int, offset: int, size: int, name: str) -> None:
        buf = bytearray(min(_COPY_CHUNK, max(size - offset, 1)))
        view = memoryview(buf)
        while offset < size:
            n = os.preadv(src, [view[: min(len(buf), size - offset)]], offset)
            if n == 0:
                raise TruncatedFile(f"{name}: file ended after {offset} of {size} bytes")
            self._write_all(view[:n])
            offset += n

    def _copy_hashed(self, src: int, size: int, name: str, hasher: Hasher) -> None:
        """Read into two buffers in turn; each chunk is hashed here while the helper writes it."""
        from concurrent.futures import ThreadPoolExecutor

        buffers = [bytearray(min(_COPY_CHUNK, max(size, 1))) for _ in range(2)]
        offset, turn = 0, 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cas-export-write") as pool:
            pending = None
            try:
                while offset < size:
                    view = memoryview(buffers[turn])[: min(_COPY_CHUNK, size - offset)]
                    n = os.preadv(src, [view], offset)
                    if n == 0:
                        raise TruncatedFile(f"{name}: file ended after {offset} of {size} bytes")
                    if pending is not None:
                        pending.result()  # the other buffer's write is done: it may be refilled next turn
                    pending = pool.submit(self._write_all, view[:n])
                    hasher.update(view[:n])  # hashlib and blake3 release the GIL: this overlaps the write
                    offset += n
                    turn ^= 1
            finally:
                if pending is not None:
                    pending.result()

    def _wait_writable(self) -> None:
        select.select([], [self.fd], [])


def open_regular(path: Path | str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeSource(f"{path} is a symlink; it was not followed") from exc
        raise
    try:
        mode = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnsafeSource(f"{path} is not a regular file")
    return fd


def _padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


def header(
    name: str, size: int, mtime: int, *, type: bytes = tarfile.REGTYPE, mode: int = 0o644, at: int | None = None
) -> bytes:
    """The header block(s) of one member, from ``tarfile`` in PAX format.

    With ``at`` (the output offset the header will be written at, a multiple of 512),
    a PAX ``comment`` record pads it so that the member's data starts at a DATA_ALIGN boundary.
    """
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, mtime, mode, type
    plain = _tobuf(info)
    if at is None or at % BLOCK or (at + len(plain)) % DATA_ALIGN == 0:
        return plain  # (an output that began mid-block can never be aligned)
    # The header's length grows with the comment in 512-byte steps, never by more than one
    # step per character: the shortest comment reaching the next aligned length gives exactly it.
    shortest = _with_comment(info, 1)
    target = len(shortest) + (-(at + len(shortest)) % DATA_ALIGN)
    low, high = 1, DATA_ALIGN + BLOCK
    while low < high:
        middle = (low + high) // 2
        if len(_with_comment(info, middle)) < target:
            low = middle + 1
        else:
            high = middle
    padded = _with_comment(info, low)
    assert len(padded) == target, (len(padded), target)
    return padded


def _with_comment(info: tarfile.TarInfo, length: int) -> bytes:
    text = (_PAD_TEXT * (length // len(_PAD_TEXT) + 1))[:length]
    info.pax_headers = {"comment": text}
    return _tobuf(info)


def _tobuf(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
