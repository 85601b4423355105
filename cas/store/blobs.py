"""The blob store: ingest -> verify -> commit, then read-only. Knows nothing about HTTP.

A file under ``blobs/<alg>/<hex>`` is always complete and verified. Bytes in
flight live in ``ingest/<alg>-<hex>/`` next to a lock, so a second process that
wants the same digest waits, and a killed download can be resumed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cas.digest import Digest, StreamVerifier
from cas.errors import BadDigest, IntegrityError, SizeMismatch
from cas.store import ranges
from cas.store.fs import OverlappedWriter, fsync_dir, stat_fingerprint, storage_errors
from cas.store.locks import FileLock, is_locked


@dataclass(frozen=True)
class BlobInfo:
    digest: Digest
    size: int
    fingerprint: str  # blake3 hex
    stat: dict | None = None  # the committed file's stat fingerprint (cas.store.trust)


RESUMABLE_FOR = 7 * 86400.0  # a partial download untouched for longer is stale (verify reports it, prune removes it)
STAGING_PREFIX = "new-"  # ingest/new-<uuid>/: bytes whose digest is known only at their end


@dataclass(frozen=True)
class IngestEntry:
    """A download in progress or abandoned (``digest`` None: a staging entry, see ``Staging``)."""

    path: Path
    digest: Digest | None
    partial: int
    started: float
    is_link: bool = False  # a symlink planted in ingest/: removed as a link, never entered
    modified: float = 0.0  # when bytes last reached its data (the entry's own time when it has none)
    readable: bool = True  # its data is a regular file that can be opened for reading

    @property
    def active(self) -> bool:
        return not self.is_link and is_locked(self.path / "lock")

    def resumable(self, now: float) -> bool:
        """Whether the next pull of this digest would resume it: a readable, non-empty download
        touched within RESUMABLE_FOR. Anything else, when no process holds it, is stale."""
        return (
            self.digest is not None
            and not self.is_link
            and self.readable
            and self.partial > 0
            and now - self.modified <= RESUMABLE_FOR
        )

    @property
    def label(self) -> str:
        return str(self.digest) if self.digest is not None else self.path.name


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs"
        self.ingest_dir = root / "ingest"

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

    def open(self, digest: Digest) -> BinaryIO:
        return open(self.path(digest), "rb")

    def read(self, digest: Digest) -> bytes:
        return self.path(digest).read_bytes()

    def ingest(
        self,
        digest: Digest,
        size: int | None,
        on_wait: Callable[[str], None] | None = None,
        present: Callable[[], bool] | None = None,
    ) -> Ingest:
        """``present``: asked (under the digest's lock) whether a file already in blobs/ is good;
        when it says no, the download goes ahead and its commit replaces that file."""
        return Ingest(self, digest, size, on_wait, present)

    def staging(self, algorithm: str = "sha256") -> Staging:
        return Staging(self, algorithm)

    def put(self, digest: Digest, data: bytes, on_commit: Callable[[BlobInfo], None] | None = None) -> BlobInfo | None:
        """Verify and commit small content (manifests). None when it was already there.

        ``on_commit`` runs while the digest is still locked (to record the blob in the
        index before any waiter sees it).
        """

        def present() -> bool:  # small: compare the bytes themselves, so a changed file is replaced
            return self.has(digest, len(data)) and self.read(digest) == data

        if present():  # blobs are visible only once complete: no ingest entry needed
            return None
        with self.ingest(digest, len(data), present=present) as ing:
            if ing.committed:
                return None
            ing.restart()
            ing.write(data)
            info = ing.commit()
            if on_commit is not None:
                on_commit(info)
            return info

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

    def ingests(self) -> Iterator[IngestEntry]:
        if not self.ingest_dir.is_dir():
            return
        for entry in os.scandir(self.ingest_dir):
            path = Path(entry.path)
            alg, _, hexpart = entry.name.partition("-")
            try:
                digest = None if entry.name.startswith(STAGING_PREFIX) else Digest(alg, hexpart)
            except BadDigest:
                continue
            try:  # a pull may commit and remove its entry while we look at it
                started = entry.stat(follow_symlinks=False).st_mtime
                if entry.is_symlink():
                    yield IngestEntry(path, digest, 0, started, is_link=True)
                    continue
                partial, modified, readable = _partial_data(path / "data", started)
            except FileNotFoundError:
                continue
            yield IngestEntry(path, digest, partial, started, modified=modified, readable=readable)

    def remove_ingest(self, entry: IngestEntry) -> bool:
        """Remove an abandoned ingest entry; False when a process is still writing it."""
        if entry.is_link:
            _remove_tree(entry.path)  # unlinks the link itself
            return True
        lock = FileLock(entry.path / "lock", timeout=0, purpose=f"ingest of {entry.digest}")
        try:
            lock.acquire()
        except Exception:
            return False
        try:
            _remove_tree(entry.path)
            return True
        finally:
            lock.release()


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
        store: BlobStore,
        digest: Digest,
        size: int | None,
        on_wait: Callable[[str], None] | None,
        present: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.digest = digest
        self.size = size
        self._present = present
        self.dir = store.ingest_dir / f"{digest.algorithm}-{digest.hex}"
        self.committed = False
        self.info: BlobInfo | None = None
        self._lock = FileLock(self.dir / "lock", purpose=f"the download of {digest.short}", on_wait=on_wait)
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
                if self.store.has(self.digest, self.size) and (self._present is None or self._present()):
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
        final = self.store.path(self.digest)
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
        _close_entry(self, remove=self.committed or self._discard)


class Staging:
    """Bytes whose digest is learned only at their end (a layer of a legacy ``docker save``).

    They are written to ``ingest/new-<uuid>/data`` and hashed as they arrive; ``commit()``
    then hands the file to an ``Ingest`` of the digest they turned out to have, which
    commits it like any other blob. The entry is removed at exit whatever happened, and
    one a killed process left behind is stale ingest for prune.
    """

    def __init__(self, store: BlobStore, algorithm: str) -> None:
        self.store = store
        self.dir = store.ingest_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        self.verifier = StreamVerifier(None, algorithm)
        self._lock = FileLock(self.dir / "lock", purpose="a staged blob")
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
        with self.store.ingest(self.digest, self.verifier.size) as ing:
            if ing.committed:
                return None
            ing.discard()
            ing.adopt(self.dir / "data", self.verifier)
            info = ing.commit()
            if on_commit is not None:
                on_commit(info)
            return info

    def __exit__(self, *exc: object) -> None:
        _close_entry(self, remove=True)


def _partial_data(data: Path, started: float) -> tuple[int, float, bool]:
    """Size, last write time and readability of an ingest entry's data (none: 0 bytes, readable)."""
    try:
        fd = os.open(data, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return 0, started, True
    except OSError:  # a symlink, no permission, an I/O error: nothing a pull could resume
        try:
            st = data.lstat()
            return st.st_size, st.st_mtime, False
        except OSError:
            return 0, started, False
    try:
        st = os.fstat(fd)
        return st.st_size, st.st_mtime, stat.S_ISREG(st.st_mode)
    finally:
        os.close(fd)


def _close_entry(entry: Ingest | Staging, *, remove: bool) -> None:
    """Close an ingest entry's writer and file, remove its directory if asked, then release its lock."""
    if entry._writer is not None:
        entry._writer.close()
        entry._writer = None
    if entry._file is not None:
        try:
            entry._file.close()  # flushes what is buffered; the fd is closed even when that fails
        except OSError:
            pass  # a full disk: the unflushed tail is lost, and a resume re-hashes what is on disk
        entry._file = None
    try:
        if remove:
            _remove_tree(entry.dir)
    finally:
        entry._lock.release()


def _remove_tree(path: Path) -> None:
    """Remove an ingest directory without ever following a symlink out of it.

    Errors are ignored: a waiter may already be re-creating the entry's lock.
    """
    if path.is_symlink():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)
