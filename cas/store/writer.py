"""Bytes in flight: one ingest entry from first byte to commit (verify, fsync, 0444, rename).

``Ingest`` is a download of a known digest: it waits for another process holding the same
digest, resumes its partial data (one stream, or recorded ranges), verifies and commits.
``Staging`` is content whose digest is known only at its end (a legacy archive's layer):
hashed while written, then committed under the digest it turned out to have.
Both write below ``ingest/`` and commit into ``cas.store.blobs``; ``cas.store.ingest``
makes them and owns the directory (listing, ages, removal).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cas.digest import Digest, StreamVerifier
from cas.errors import IntegrityError, SizeMismatch
from cas.store import ranges
from cas.store.blobs import BlobStore
from cas.store.fs import OverlappedWriter, fsync_dir, stat_fingerprint, storage_errors
from cas.store.locks import FileLock

STAGING_PREFIX = "new-"  # ingest/new-<uuid>/: bytes whose digest is known only at their end
LOCK = "lock"  # in each entry: held by the process writing it


@dataclass(frozen=True)
class BlobInfo:
    digest: Digest
    size: int
    fingerprint: str  # blake3 hex
    stat: dict | None = None  # the committed file's stat fingerprint (cas.store.trust)


class Ingest:
    """One digest being written. Use as a context manager.

    After ``__enter__`` either ``committed`` is true (another process, or an
    earlier run, already stored it) or ``offset`` bytes of an earlier partial
    download are present and already hashed: the caller fetches the rest
    (HTTP Range) or calls ``restart()``, writes, then calls ``commit()``.
    The rest may also be written as ranges at their offsets, through ``ranged()``
    (``cas.store.ranges``); a first ``write()`` after that keeps only the prefix.
    """

    def __init__(
        self,
        blobs: BlobStore,
        area: Path,
        digest: Digest,
        size: int | None,
        on_wait: Callable[[str], None] | None,
        present: Callable[[], bool] | None = None,
    ) -> None:
        self.blobs = blobs
        self.digest = digest
        self.size = size
        self._present = present
        self.dir = area / f"{digest.algorithm}-{digest.hex}"
        self.committed = False
        self.info: BlobInfo | None = None
        self._lock = FileLock(self.dir / LOCK, purpose=f"the download of {digest.short}", on_wait=on_wait)
        self._file: BinaryIO | None = None
        self._writer: OverlappedWriter | None = None
        self._verifier = StreamVerifier(digest)
        self._held: list[ranges.Interval] | None = None  # ranges on disk beyond the prefix (ranges.json)
        self._appending = False  # write() has checked that data ends at the prefix
        self._discard = False

    @property
    def offset(self) -> int:
        return self._verifier.size

    def __enter__(self) -> Ingest:
        with storage_errors(f"ingest of {self.digest}"):
            self._lock.acquire()
            try:
                if self.blobs.has(self.digest, self.size) and (self._present is None or self._present()):
                    self.committed = True
                    return self
                self._file = open(self.dir / "data", "ab+")
                self._resume()
                self._writer = OverlappedWriter(self._file)
            except BaseException:  # Ctrl-C while re-hashing a large partial, a full disk...
                self.__exit__(None, None, None)
                raise
        return self

    def _resume(self) -> None:
        assert self._file is not None
        self._file.seek(0)
        have = os.fstat(self._file.fileno()).st_size
        if self.size is not None and have > self.size:
            self.restart()
            return
        held = ranges.load(self.dir, self.size)
        if held is not None:  # what the record names and the file really holds
            held = ranges.merge([(start, min(end, have)) for start, end in held])
        prefix = have if held is None else ranges.prefix_end(held)
        while self._verifier.size < prefix and (chunk := self._file.read(min(1 << 20, prefix - self._verifier.size))):
            self._verifier.update(chunk)
        self._held = held
        self._file.seek(0, os.SEEK_END)

    def ranged(self) -> ranges.RangeWriter:
        """Write the missing ranges at their offsets (the blob's size must be known); see cas.store.ranges."""
        assert self._file is not None and self._writer is not None and self.size is not None
        self._writer.settle()
        self._file.flush()
        self._appending = False  # a later write() first drops what the ranges left beyond the prefix
        with storage_errors(f"blob {self.digest}"):
            return ranges.RangeWriter(self.dir, self.size, self._verifier, self._held or [])

    def _keep_prefix_only(self) -> None:
        """Before appending: drop whatever ranged writes left beyond the hashed prefix."""
        assert self._file is not None
        if self._held is not None or os.fstat(self._file.fileno()).st_size != self._verifier.size:
            self._file.truncate(self._verifier.size)
            self._file.seek(0, os.SEEK_END)
            ranges.forget(self.dir)
        self._held = None

    def restart(self) -> None:
        """Drop any partial data (the server ignored our Range, or it was bad)."""
        assert self._file is not None
        if self._writer is not None:
            self._writer.settle()
        self._file.truncate(0)
        self._file.seek(0)
        self._verifier = StreamVerifier(self.digest)
        ranges.forget(self.dir)
        self._held = None
        self._appending = True

    def discard(self) -> None:
        """Remove the entry at exit instead of keeping it for a resume (a source that cannot resume)."""
        self._discard = True

    def adopt(self, path: Path, verifier: StreamVerifier) -> None:
        """Take over ``path`` (same filesystem) as this entry's data; ``verifier`` hashed its bytes as
        they were written, so ``commit()`` checks them without reading them again."""
        assert self._file is not None and self._writer is not None
        with storage_errors(f"ingest of {self.digest}"):
            self._writer.settle()
            self._file.close()
            self._file = None
            os.replace(path, self.dir / "data")
            self._file = open(self.dir / "data", "ab+")
            ranges.forget(self.dir)
        self._held, self._appending = None, True
        verifier.expected = self.digest
        self._verifier = verifier

    def write(self, chunk: bytes) -> None:
        assert self._file is not None and not self.committed
        if not self._appending:
            self._keep_prefix_only()
            self._appending = True
        if self.size is not None and self._verifier.size + len(chunk) > self.size:
            got = self._verifier.size + len(chunk)
            self.restart()
            raise SizeMismatch(self.digest, self.size, got)
        assert self._writer is not None
        with storage_errors(f"blob {self.digest}"):
            try:
                self._writer.write(chunk)
            except OSError:
                self.restart()
                raise
        self._verifier.update(chunk)  # hashes while the helper thread writes

    def commit(self) -> BlobInfo:
        """Check size and digest, fsync, make read-only, rename into blobs/, fsync the directory."""
        assert self._file is not None and self._writer is not None
        with storage_errors(f"blob {self.digest}"):
            try:
                self._writer.settle()
            except OSError:
                self.restart()
                raise
        try:
            if self.size is not None and self._verifier.size != self.size:
                raise SizeMismatch(self.digest, self.size, self._verifier.size)
            self._verifier.check()
        except IntegrityError:
            self.restart()
            raise
        final = self.blobs.path(self.digest)
        with storage_errors(f"blob {self.digest}"):
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            data = self.dir / "data"
            os.chmod(data, 0o444)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(data, final)  # over a changed file that a pull replaces, too
            fsync_dir(final.parent)
            committed = stat_fingerprint(os.stat(final))  # after the rename, which may change ctime
        self.committed = True
        self.info = BlobInfo(self.digest, self._verifier.size, self._verifier.fingerprint, committed)
        return self.info

    def __exit__(self, *exc: object) -> None:
        _close_files(self)
        _release(self, remove=self.committed or self._discard or _holds_nothing(self.dir / "data"))


class Staging:
    """Bytes whose digest is learned only at their end (a layer of a legacy ``docker save``).

    They are written to ``ingest/new-<uuid>/data`` and hashed as they arrive; ``commit()``
    then hands the file to an ``Ingest`` of the digest they turned out to have, which
    commits it like any other blob. The entry is removed at exit whatever happened, and
    one a killed process left behind is stale ingest for prune.
    """

    def __init__(self, blobs: BlobStore, area: Path, algorithm: str) -> None:
        self.blobs = blobs
        self.area = area
        self.dir = area / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        self.verifier = StreamVerifier(None, algorithm)
        self._lock = FileLock(self.dir / LOCK, purpose="a staged blob")
        self._file: BinaryIO | None = None
        self._writer: OverlappedWriter | None = None

    def __enter__(self) -> Staging:
        with storage_errors("the store's ingest directory"):
            self.dir.mkdir(parents=True)
            try:
                self._lock.acquire()
                self._file = open(self.dir / "data", "xb")
                self._writer = OverlappedWriter(self._file)
            except BaseException:
                self.__exit__(None, None, None)
                raise
        return self

    def write(self, chunk: bytes) -> None:
        assert self._writer is not None
        with storage_errors("a staged blob"):
            self._writer.write(chunk)
        self.verifier.update(chunk)

    @property
    def digest(self) -> Digest:
        return self.verifier.digest

    def commit(self, on_commit: Callable[[BlobInfo], None] | None = None) -> BlobInfo | None:
        """Commit the bytes under their digest; None when the store already held it."""
        assert self._file is not None and self._writer is not None
        with storage_errors("a staged blob"):
            self._writer.settle()
        with Ingest(self.blobs, self.area, self.digest, self.verifier.size, None) as ing:
            if ing.committed:
                return None
            ing.discard()
            ing.adopt(self.dir / "data", self.verifier)
            info = ing.commit()
            if on_commit is not None:
                on_commit(info)
            return info

    def __exit__(self, *exc: object) -> None:
        _close_files(self)
        _release(self, remove=True)


def _close_files(entry: Ingest | Staging) -> None:
    """Close an ingest entry's writer and file (what was written is then on disk, or lost)."""
    if entry._writer is not None:
        entry._writer.close()
        entry._writer = None
    if entry._file is not None:
        try:
            entry._file.close()  # flushes what is buffered; the fd is closed even when that fails
        except OSError:
            pass  # a full disk: the unflushed tail is lost, and a resume re-hashes what is on disk
        entry._file = None


def _release(entry: Ingest | Staging, *, remove: bool) -> None:
    """Remove the entry's directory if asked, then release its lock."""
    try:
        if remove:
            remove_tree(entry.dir)
    finally:
        entry._lock.release()


def _holds_nothing(data: Path) -> bool:
    """No byte to resume: a failure before the first byte, or one that dropped them (a wrong digest).
    Such an entry is removed rather than left for verify and prune to find."""
    try:
        return data.stat().st_size == 0
    except FileNotFoundError:
        return True


def remove_tree(path: Path) -> None:
    """Remove an ingest directory without ever following a symlink out of it, its lock last.

    While the lock file is there its holder holds it; once it is gone the directory is empty, so
    a scan never finds bytes in an entry whose lock has gone (``cas.store.ingest``). Errors are
    ignored: a waiter may already be re-creating the entry's lock.
    """
    if path.is_symlink():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    with contextlib.suppress(OSError), os.scandir(path) as entries:
        for entry in entries:
            if entry.name == LOCK:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
    with contextlib.suppress(OSError):
        (path / LOCK).unlink()
    with contextlib.suppress(OSError):
        path.rmdir()
