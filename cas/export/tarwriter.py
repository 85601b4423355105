"""A minimal tar writer that streams files into an output fd with os.sendfile. Knows no images.

Only what our archives need: directories, small in-memory members and whole
files copied from the store. Headers are ustar; a PAX header is added only when
ustar cannot hold a field: a ``path`` record for a name over 100 bytes (e.g.
``blobs/sha512/<128 hex>``) and a ``size`` record for a member of 8 GiB or more.
Nothing is buffered beyond one header and the padding of the previous member,
so memory stays flat in archive size.

A source file is opened with ``O_NOFOLLOW`` and must be a regular file: a symlink
is never followed (``UnsafeSource``), so nothing outside the store can be copied in.

Bytes of a file go from its page cache straight to the output (regular file or
pipe) with ``os.sendfile``. When the kernel refuses (an O_APPEND output, an
exotic fd) the writer switches, once, to a read/write loop over one buffer.
"""

from __future__ import annotations

import errno
import os
import select
import stat
from pathlib import Path

BLOCK = 512
_USTAR_MAX_SIZE = 0o77777777777  # 11 octal digits: 8 GiB - 1
_USTAR_MAX_NAME = 100
_COPY_CHUNK = 1 << 20
_SENDFILE_CHUNK = 1 << 30
_FALLBACK_ERRNOS = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF, errno.EXDEV)
_EOF = bytes(2 * BLOCK)


class TruncatedFile(Exception):
    """A source file ended before the size its header promised (not an error of the output)."""


class UnsafeSource(Exception):
    """A source path is a symlink or not a regular file; it was not followed or read."""


class TarWriter:
    """Write a tar stream to ``fd`` (not closed). Call ``close()`` to write the end-of-archive blocks."""

    def __init__(self, fd: int, *, mtime: int = 0) -> None:
        self.fd = fd
        self.mtime = mtime
        self.written = 0  # bytes handed to the kernel so far
        self.sendfile = True  # False once the kernel refused sendfile for this output
        self._pending = bytearray()

    # members -----------------------------------------------------------------
    def add_dir(self, name: str) -> None:
        self._pending += _header(name.rstrip("/") + "/", 0, self.mtime, typeflag=b"5", mode=0o755)

    def add_bytes(self, name: str, data: bytes) -> None:
        self._pending += _header(name, len(data), self.mtime)
        self._pending += data
        self._pending += _padding(len(data))

    def add_file(self, name: str, path: Path | str, size: int) -> None:
        """Stream ``size`` bytes of ``path`` as member ``name``; raise TruncatedFile if it is shorter.

        ``path`` is opened before the header is written and never through a symlink: a symlink
        or anything but a regular file raises UnsafeSource.
        """
        fd = _open_regular(path)
        try:
            self._pending += _header(name, size, self.mtime)
            self._flush()
            self._copy(fd, size, name)
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
        while self.sendfile and offset < size:
            try:
                n = os.sendfile(self.fd, src, offset, min(size - offset, _SENDFILE_CHUNK))
            except BlockingIOError:
                self._wait_writable()
                continue
            except OSError as exc:
                if offset == 0 and exc.errno in _FALLBACK_ERRNOS:
                    self.sendfile = False
                    break
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

    def _wait_writable(self) -> None:
        select.select([], [self.fd], [])


def _open_regular(path: Path | str) -> int:
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


def _header(name: str, size: int, mtime: int, *, typeflag: bytes = b"0", mode: int = 0o644) -> bytes:
    encoded = name.encode()
    records = b""
    if len(encoded) > _USTAR_MAX_NAME:
        records += _pax_record("path", name)
        encoded = encoded[:_USTAR_MAX_NAME]  # readers take the name from the PAX record
    size_field = size
    if size > _USTAR_MAX_SIZE:
        records += _pax_record("size", str(size))
        size_field = 0  # readers take the size from the PAX record
    pax = b""
    if records:
        pax_name = f"PaxHeaders/{name}".encode()[:_USTAR_MAX_NAME]
        pax = _block(pax_name, len(records), mtime, b"x", 0o644) + records + _padding(len(records))
    return pax + _block(encoded, size_field, mtime, typeflag, mode)


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def _block(name: bytes, size: int, mtime: int, typeflag: bytes, mode: int) -> bytes:
    header = bytearray(BLOCK)
    header[0 : len(name)] = name
    header[100:108] = b"%07o\0" % mode
    header[108:116] = b"0000000\0"  # uid
    header[116:124] = b"0000000\0"  # gid
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"%011o\0" % mtime
    header[148:156] = b" " * 8  # checksum placeholder
    header[156:157] = typeflag
    header[257:265] = b"ustar\x0000"
    header[329:337] = b"0000000\0"  # devmajor
    header[337:345] = b"0000000\0"  # devminor
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)
