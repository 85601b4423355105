"""One read of the store: image records, blob records, leases, files under blobs/ and ingest/.

Prune, du and verify all decide from this snapshot, so they agree on what the store holds.
It only reads; acting on it is the caller's job.
"""

from __future__ import annotations

import os
import stat
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cas.digest import Digest
from cas.errors import BadDigest
from cas.records import PREFIX, BlobRecord, RefRecord, blob_record, read_all
from cas.store import IngestEntry, Store


def _of_record(name: str) -> property:
    """One field of an image's ref record, read through the image."""
    return property(lambda image: getattr(image.record, name))


@dataclass(frozen=True)
class Image:
    """One reference cached for one platform, as gc, du and verify count it."""

    record: RefRecord
    blobs: tuple[tuple[str, int], ...]  # (digest, size) from the ref record, each digest once

    @classmethod
    def of(cls, record: RefRecord) -> Image:
        return cls(record, tuple((str(d), b.size) for d, b in record.unique_blobs.items()))

    ref = _of_record("ref")
    platform = _of_record("platform")
    used = _of_record("used")
    pulled = _of_record("pulled")
    needs_pull = _of_record("needs_pull")

    @property
    def size(self) -> int:
        return sum(size for _, size in self.blobs)

    @property
    def blob_count(self) -> int:
        """The image's blobs as pull and export count them: the OCI view cas derives is not one of them."""
        return len(self.blobs) - (self.record.layout_manifest is not None)


@dataclass(frozen=True)
class Stray:
    """Something under blobs/ that is not a blob: a symlink, a directory, a name that is no digest."""

    path: Path
    size: int
    kind: str  # "symlink", "directory", "not a digest", "special file"


@dataclass
class Snapshot:
    """What the index and the disk hold, read once: everything gc, du and verify decide from."""

    images: dict[str, Image] = field(default_factory=dict)  # record key (ref:REF|PLATFORM) -> image
    indexed: dict[str, BlobRecord] = field(default_factory=dict)  # digest -> blob record
    files: dict[str, int] = field(default_factory=dict)  # digest -> bytes on disk (regular files)
    strays: list[Stray] = field(default_factory=list)
    leased: set[str] = field(default_factory=set)
    ingests: list[IngestEntry] = field(default_factory=list)
    active: set[Path] = field(default_factory=set)  # paths of the ingests a process holds (one flock test each)
    bad_keys: list[str] = field(default_factory=list)  # ref:/blob: entries that do not parse

    def refcounts(self) -> Counter:
        counts: Counter = Counter()
        for image in self.images.values():
            counts.update(d for d, _ in image.blobs)
        return counts

    def stale_ingests(self, now: float | None = None) -> list[IngestEntry]:
        """Ingest entries no process held when the snapshot was taken, none is making or removing
        (``IngestEntry.settling``) and no pull can resume (``IngestEntry.resumable``): what
        verify reports as stale and prune removes."""
        now = time.time() if now is None else now
        return [i for i in self.ingests if i.path not in self.active and not i.resumable(now) and not i.settling(now)]

    def resumable_ingests(self, now: float | None = None) -> list[IngestEntry]:
        """Partial downloads no process holds that the next pull of their digest resumes: not damage."""
        now = time.time() if now is None else now
        return [i for i in self.ingests if i.path not in self.active and i.resumable(now)]


def snapshot(store: Store) -> Snapshot:
    """The index, then the disk."""
    snap = Snapshot()
    read_index(store, snap)
    read_disk(store, snap)
    return snap


def read_index(store: Store, snap: Snapshot) -> None:
    """Refs, blob records and live leases into ``snap``."""
    index = store.metadata
    refs: list[tuple[str, object]] = []
    leases: list[tuple[str, object]] = []
    for key, value in index.scan(PREFIX, "blob:", "lease:"):  # one pass over the metadata for all three
        if not key.startswith("blob:"):
            (leases if key.startswith("lease:") else refs).append((key, value))
            continue
        try:
            digest = str(Digest.parse(key[5:]))
        except BadDigest:
            snap.bad_keys.append(key)
            continue
        record = blob_record(value)
        if record is not None:
            snap.indexed[digest] = record
        else:
            snap.bad_keys.append(key)
    for record in read_all(refs, snap.bad_keys):
        snap.images[record.key] = Image.of(record)
    snap.leased = index.leased_digests(leases)


def read_disk(store: Store, snap: Snapshot) -> None:
    """One walk of ``blobs/`` and ``ingest/`` into ``snap``; each ingest's lock is tested once."""
    for digest, path in store.blobs.iter_files():
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if digest is not None:
            snap.files[str(digest)] = st.st_size
        else:
            snap.strays.append(Stray(path, _stray_size(path, st), _kind(st)))
    snap.ingests = list(store.ingests.entries())
    snap.active = {i.path for i in snap.ingests if i.active}


def _stray_size(path: Path, st: os.stat_result) -> int:
    """What removing a stray frees: a file's size, a directory's regular files (never following a link)."""
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if stat.S_ISDIR(st.st_mode):
        return _tree_size(None, path)
    return 0


def _tree_size(dir_fd: int | None, name: str | Path) -> int:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:  # gone, or a symlink swapped in: nothing to count
        return 0
    total = 0
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        total += _tree_size(fd, entry.name)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    except OSError:
        pass
    finally:
        os.close(fd)
    return total


def _kind(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    if stat.S_ISDIR(st.st_mode):
        return "directory"
    if stat.S_ISREG(st.st_mode):
        return "not a digest"
    return "special file"
