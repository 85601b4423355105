"""The ingest area: ``ingest/<alg>-<hex>/``, downloads in flight or abandoned. Knows nothing about HTTP.

Bytes in flight live in ``ingest/<alg>-<hex>/`` next to a lock, so a second process that
wants the same digest waits, and a killed download can be resumed. ``Ingests`` hands out
the writers (``cas.store.writer``) that commit into ``cas.store.blobs``, lists what is here
(each entry looked at once, so verify and prune never take a download in motion for an
abandoned one), says which can be resumed, and removes the abandoned ones.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cas.digest import Digest
from cas.errors import BadDigest
from cas.store import ranges
from cas.store.blobs import BlobStore
from cas.store.locks import FileLock, is_locked
from cas.store.writer import LOCK, STAGING_PREFIX, BlobInfo, Ingest, Staging, remove_tree

RESUMABLE_FOR = 7 * 86400.0  # a partial download untouched for longer is stale (verify reports it, prune removes it)
SETTLING_FOR = 60.0  # an empty entry nobody holds, changed this recently, is being made or removed


@dataclass(frozen=True)
class IngestEntry:
    """A download in progress or abandoned (``digest`` None: a staging entry, see ``Staging``),
    as one look saw it: its lock tested first, then its data, then its directory."""

    path: Path
    digest: Digest | None
    partial: int  # bytes its data takes on disk (what removing it frees)
    started: float  # its directory's last change
    is_link: bool = False  # a symlink planted in ingest/: removed as a link, never entered
    modified: float = 0.0  # when bytes last reached its data (the entry's own time when it has none)
    readable: bool = True  # its data is a regular file that can be opened for reading
    active: bool = False  # a process held its lock
    held: int = 0  # bytes a resume keeps: a split download's recorded ranges, else all of ``partial``

    def resumable(self, now: float) -> bool:
        """Whether the next pull of this digest would resume it: a readable, non-empty download
        touched within RESUMABLE_FOR. Anything else, when no process holds it, is stale."""
        return (
            self.digest is not None
            and not self.is_link
            and self.readable
            and self.held > 0
            and now - self.modified <= RESUMABLE_FOR
        )

    def settling(self, now: float) -> bool:
        """Being made or removed right now: holding no bytes, changed within SETTLING_FOR.

        A process creates the directory before it locks it, and removes the lock just before
        the directory (emptied first, ``remove_tree``): in between, nobody holds an entry
        that is neither stale nor resumable. One a kill left so is stale once SETTLING_FOR passed.
        """
        return not self.is_link and self.held == 0 and now - self.started < SETTLING_FOR

    @property
    def label(self) -> str:
        return str(self.digest) if self.digest is not None else self.path.name


class Ingests:
    """The owner of ``ingest/``; commits go to ``blobs``."""

    def __init__(self, root: Path, blobs: BlobStore) -> None:
        self.dir = root / "ingest"
        self.blobs = blobs

    def open(
        self,
        digest: Digest,
        size: int | None,
        on_wait: Callable[[str], None] | None = None,
        present: Callable[[], bool] | None = None,
    ) -> Ingest:
        """``present``: asked (under the digest's lock) whether a file already in blobs/ is good;
        when it says no, the download goes ahead and its commit replaces that file."""
        return Ingest(self.blobs, self.dir, digest, size, on_wait, present)

    def staging(self, algorithm: str = "sha256") -> Staging:
        return Staging(self.blobs, self.dir, algorithm)

    def put(self, digest: Digest, data: bytes, on_commit: Callable[[BlobInfo], None] | None = None) -> BlobInfo | None:
        """Verify and commit small content (manifests). None when it was already there.

        ``on_commit`` runs while the digest is still locked (to record the blob in the
        index before any waiter sees it).
        """

        def present() -> bool:  # small: compare the bytes themselves, so a changed file is replaced
            return self.blobs.has(digest, len(data)) and self.blobs.read(digest) == data

        if present():  # blobs are visible only once complete: no ingest entry needed
            return None
        with self.open(digest, len(data), present=present) as ing:
            if ing.committed:
                return None
            ing.restart()
            ing.write(data)
            info = ing.commit()
            if on_commit is not None:
                on_commit(info)
            return info

    def entries(self) -> Iterator[IngestEntry]:
        """Every entry under ingest/, each looked at once (``look``); one that ends meanwhile is left out."""
        if not self.dir.is_dir():
            return
        for entry in os.scandir(self.dir):
            alg, _, hexpart = entry.name.partition("-")
            try:
                digest = None if entry.name.startswith(STAGING_PREFIX) else Digest(alg, hexpart)
            except BadDigest:
                continue
            found = look(Path(entry.path), digest)
            if found is not None:
                yield found

    def remove(self, entry: IngestEntry) -> bool:
        """Remove an abandoned ingest entry; False when a process is still writing it."""
        if entry.is_link:
            remove_tree(entry.path)  # unlinks the link itself
            return True
        lock = FileLock(entry.path / LOCK, timeout=0, purpose=f"ingest of {entry.digest}")
        try:
            lock.acquire()
        except Exception:
            return False
        try:
            remove_tree(entry.path)
            return True
        finally:
            lock.release()


def look(path: Path, digest: Digest | None) -> IngestEntry | None:
    """One ingest entry as it stands; None when it is gone (its download ended meanwhile).

    The lock is tested before the data is read and the directory last, so the three agree:
    a download that ends between them has removed its directory; one that begins has no
    bytes yet and a fresh directory (``IngestEntry.settling``).
    """
    try:
        if path.is_symlink():
            return IngestEntry(path, digest, 0, path.lstat().st_mtime, is_link=True)
        active = is_locked(path / LOCK)
        partial, modified, readable = _partial_data(path / "data")
        started = path.lstat().st_mtime
    except FileNotFoundError:
        return None
    held = ranges.held_bytes(path, partial) if readable else None
    return IngestEntry(
        path,
        digest,
        partial,
        started,
        modified=started if modified is None else modified,
        readable=readable,
        active=active,
        held=partial if held is None else held,
    )


def _partial_data(data: Path) -> tuple[int, float | None, bool]:
    """Size, last write time (None: no data) and readability of an ingest entry's data."""
    try:
        fd = os.open(data, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return 0, None, True
    except OSError:  # a symlink, no permission, an I/O error: nothing a pull could resume
        try:
            st = data.lstat()
            return st.st_size, st.st_mtime, False
        except OSError:
            return 0, None, False
    try:
        st = os.fstat(fd)
        return st.st_size, st.st_mtime, stat.S_ISREG(st.st_mode)
    finally:
        os.close(fd)
