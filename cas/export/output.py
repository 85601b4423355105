"""Where an export goes: a temp file or directory beside the target, renamed into place
only when everything was written; or a stream (stdout) that must not be a terminal.

On any error, KeyboardInterrupt included, the temp file or directory is removed,
so a failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cas.errors import CasError, OutputError, UsageError, disk_full
from cas.store.fs import fsync_dir

PARTIAL_SUFFIX = ".cas-partial"
NOTHING_KEPT = "nothing was kept"  # the end of every hint of a failed export to a file


def check_stream(fd: int) -> None:
    if os.isatty(fd):
        raise UsageError(
            "refusing to write a tar archive to a terminal",
            hint="redirect it (`cas export IMG -o - | docker load`) or write a file with -o FILE",
        )


@contextlib.contextmanager
def output_errors(target: Path | str) -> Iterator[None]:
    """Map OS errors on the destination to one readable error; a closed pipe stays BrokenPipeError."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        if full := disk_full(exc, str(target), hint=f"free space there or write elsewhere; {NOTHING_KEPT}"):
            raise full from exc
        raise OutputError(
            f"cannot write {target}: {exc.strerror or exc}", hint=f"check the path and its permissions; {NOTHING_KEPT}"
        ) from exc


def is_stream(target: Path | int) -> bool:
    """Whether an export goes to a stream (an fd, a device, a FIFO): what reached it cannot be taken back."""
    if isinstance(target, int):
        return True
    path = Path(target)
    return path.exists() and not path.is_file() and not path.is_dir()


def partial_stream(exc: CasError, sent: int) -> None:
    """Reword the hint of an error that stopped a stream after ``sent`` bytes: its reader got
    part of an archive, so "nothing was kept" would be false."""
    if sent <= 0:
        return
    told = f"the reader already got {sent} bytes of an incomplete archive: discard it"
    hint = exc.hint or ""
    exc.hint = hint.replace(NOTHING_KEPT, told) if NOTHING_KEPT in hint else (f"{hint}; {told}" if hint else told)


@contextlib.contextmanager
def archive_output(target: Path | int) -> Iterator[int]:
    """An fd to write an archive to: the given fd (the caller has run ``check_stream`` on it),
    a device or FIFO opened in place (``-o /dev/null`` must not replace the device node),
    else a file via ``file_output``."""
    if isinstance(target, int):
        with output_errors("the output stream"):
            yield target
        return
    path = Path(target)
    if is_stream(path):
        with output_errors(path):
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            check_stream(fd)
            with output_errors(path):
                yield fd
        finally:
            os.close(fd)
        return
    with file_output(path) as fd:
        yield fd


@contextlib.contextmanager
def file_output(path: Path) -> Iterator[int]:
    """An fd on a temp file beside ``path``; fsynced and renamed to ``path`` when the block succeeds."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a directory", hint="give a file name with -o, or use --format oci-dir")
    with output_errors(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent)
    try:
        with output_errors(path):
            yield fd
            os.fchmod(fd, 0o666 & ~_umask())
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, path)
            fsync_dir(path.parent)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def dir_output(path: Path) -> Iterator[Path]:
    """An empty temp directory beside ``path``; renamed to ``path`` when the block succeeds.

    ``path`` may exist only as an empty directory. The block fsyncs the files it writes
    (as ``file_output`` does for an archive); then every directory is fsynced, deepest
    first, before the rename, and the parent after it.
    """
    path = Path(path)
    if path.is_symlink() or (path.exists() and (not path.is_dir() or any(path.iterdir()))):
        raise OutputError(
            f"{path} already exists and is not an empty directory", hint="remove it or choose another -o DIR"
        )
    with output_errors(path):
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent))
    try:
        with output_errors(path):
            yield tmp
            for directory in sorted((p for p in tmp.rglob("*") if p.is_dir()), reverse=True):
                fsync_dir(directory)
            fsync_dir(tmp)  # its own entries: oci-layout, index.json, blobs
            os.chmod(tmp, 0o777 & ~_umask())
            os.rename(tmp, path)
            fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
