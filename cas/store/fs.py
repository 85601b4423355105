"""Filesystem helpers: atomic writes, directory fsync, link-or-copy. Knows no digests."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from concurrent.futures import Future

from cas.errors import StoreError, disk_full


def stat_fingerprint(st: os.stat_result) -> dict:
    """What git's index compares to tell a file changed without reading it: inode, size, mtime, ctime."""
    return {"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Turn any filesystem failure (full disk, read-only store, a file where a directory
    should be) into one readable error: these are the environment's faults, not bugs."""
    try:
        yield
    except OSError as exc:
        if full := disk_full(exc, what, hint="free disk space or run `cas prune`"):
            raise full from exc
        where = f" ({exc.filename})" if exc.filename else ""
        raise StoreError(
            f"cannot use {what}: {exc.strerror or exc}{where}",
            hint="check CAS_HOME: its path, permissions and free space",
        ) from exc


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write beside the target, fsync, rename over it: readers see old or new, never half."""
    with storage_errors(str(path)):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_dir(path.parent)


class Linker:
    """Hard-links files, falling back to copies for the rest of the run on the first failure.

    A copy is a clone where the filesystem can make one (XFS with reflink=1, btrfs: no bytes
    copied, no space used), else a copy inside the kernel (``kernel_copy``).
    The fallback is decided once and announced once through ``warn``.
    """

    _FALLBACK_ERRNOS = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES)

    def __init__(self, warn: Callable[[str], None]) -> None:
        self._warn = warn
        self.copying = False

    def link(self, src: Path, dst: Path) -> None:
        """Hard-link ``src`` as ``dst`` (a new name), or copy it and fsync the copy.

        A symlink at ``src`` is never followed: it is linked as the symlink itself (the
        caller checks what ``dst`` is), and copying it fails with ELOOP.
        """
        if not self.copying:
            try:
                os.link(src, dst, follow_symlinks=False)
                return
            except OSError as exc:
                if exc.errno not in self._FALLBACK_ERRNOS:
                    raise
                self.copying = True
                self._warn(
                    f"cannot hard-link from the store ({exc.strerror}); copying instead. "
                    "Put the output on the same filesystem as CAS_HOME to avoid the copies."
                )
        source = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            target = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                kernel_copy(source, target, os.fstat(source).st_size)
                os.fsync(target)
            finally:
                os.close(target)
        finally:
            os.close(source)


KERNEL_COPY_REFUSED = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF)


def kernel_copy(src: int, dst: int, size: int) -> None:
    """Copy ``size`` bytes from ``src``'s offset to ``dst``'s: clone the extents where the filesystem
    can (``copy_file_range`` on XFS with reflink=1, btrfs; both files at offset 0 of a block), else
    copy in the kernel (copy_file_range, then sendfile), else through one buffer."""
    offset = 0
    for call in (
        lambda count: os.copy_file_range(src, dst, count),
        lambda count: os.sendfile(dst, src, None, count),
    ):
        try:
            while offset < size:
                sent = call(size - offset)
                if sent == 0:
                    return
                offset += sent
            return
        except OSError as exc:
            if offset or exc.errno not in KERNEL_COPY_REFUSED:
                raise
    while offset < size and (chunk := os.read(src, min(1 << 20, size - offset))):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
        offset += len(chunk)


class OverlappedWriter:
    """Writes each chunk on a helper thread while the caller hashes the next one.

    Writing fresh pages costs about as much as sha256 plus blake3 here (~2.6 ms/MiB on
    the VMs we run on), and both release the GIL, so overlapping them nearly halves the
    time a large blob spends between the socket and the disk. At most one write is in
    flight; ``settle()`` waits for it and raises its error.
    """

    def __init__(self, file: BinaryIO) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._file = file
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cas-write")
        self._pending: Future | None = None

    def write(self, chunk: bytes) -> None:
        self.settle()
        self._pending = self._pool.submit(self._file.write, chunk)

    def settle(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.settle()
        except OSError:
            pass  # the caller is already unwinding from an error, or committed
        finally:
            self._pool.shutdown()
