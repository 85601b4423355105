"""Trusting a committed blob later: the stat fingerprint recorded at commit, compared before use.

Blobs are read-only after commit, but people and disks still change files. The blob
record keeps the file's inode, size, mtime_ns and ctime_ns (as git's index does).
Before an export copies a blob and before a pull counts one as present, ``confirm``
compares the file's ``lstat`` with it: equal means the file is what was committed (one
stat and one index read). Any difference, or a record from before fingerprints,
means the file is read again: a good file gets the new fingerprint recorded, a bad
one is reported. Metadata-only changes (chmod, a hard link made or removed, e.g. an
``oci-dir`` export deleted) therefore cost one re-hash, once. ``cas verify`` stays
the check for silent bit rot, which no stat can see.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import blake3

from cas.digest import Digest
from cas.errors import DiskFull
from cas.store.fs import stat_fingerprint

if TYPE_CHECKING:
    from cas.store import Store

_CHUNK = 1 << 20
_THREADED = 8 << 20  # files above this hash blake3 on every core
log = logging.getLogger("cas.store.trust")


class FileCheck(NamedTuple):
    problem: str | None  # None when the file is what was committed; else what is wrong, in words
    fingerprint: str | None = None  # blake3 of the bytes read; None when the check stopped before reading
    stat: dict | None = None  # the file's stat fingerprint while it was read


def check_file(path: Path, digest: Digest, size: int | None, fingerprint: str | None, deep: bool) -> FileCheck:
    """Read the file once: its problem (None when it is what was committed), its blake3 and stat.

    ``fingerprint`` is the blake3 recorded at commit; without one, or with ``deep``, the file is
    also hashed with its digest's own algorithm. A file whose stat changes while it is read fails.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return FileCheck("file vanished while checking")
    except OSError as exc:
        return FileCheck(f"cannot open: {exc.strerror}")
    with os.fdopen(fd, "rb", buffering=0) as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return FileCheck("not a regular file")
        if size is not None and st.st_size != size:
            return FileCheck(f"size is {st.st_size} bytes, committed as {size}")
        fp = blake3.blake3(max_threads=blake3.blake3.AUTO) if st.st_size > _THREADED else blake3.blake3()
        own = digest.hasher() if deep or fingerprint is None else None
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            chunk = view[:n]
            fp.update(chunk)
            if own is not None:
                own.update(chunk)
        actual = fp.hexdigest()
        seen = stat_fingerprint(st)
        if stat_fingerprint(os.fstat(fd)) != seen:
            return FileCheck("the file changed while it was read", actual)
        if fingerprint is not None and actual != fingerprint:
            return FileCheck(
                f"content changed since commit: blake3 {actual[:16]}..., recorded {fingerprint[:16]}...", actual
            )
        if own is not None and own.hexdigest() != digest.hex:
            return FileCheck(f"content hashes to {digest.algorithm}:{own.hexdigest()}", actual)
    return FileCheck(None, actual, seen)


def unchanged(store: Store, digest: Digest, record: dict | None = None) -> bool:
    """Whether the blob file's stat equals the fingerprint in its record: the cheap half of ``confirm``."""
    if record is None:
        record = store.metadata.get_blob(digest)
    try:
        st = os.lstat(store.blobs.path(digest))
    except FileNotFoundError:
        return False
    return record is not None and record.get("stat") == stat_fingerprint(st)


def confirm(store: Store, digest: Digest, size: int, media_type: str) -> str | None:
    """None when the committed file of ``digest`` still holds its bytes; else what is wrong with it.

    A file whose stat differs from its record is re-hashed; when it is good its record gets the
    new fingerprint (and a record is made for a file that had none). On a full disk the record
    stays as it was: the file is still good, and is re-hashed again next time.
    """
    record = store.metadata.get_blob(digest)
    if unchanged(store, digest, record) and record is not None and record.get("size") == size:
        return None
    recorded = record.get("blake3") if record is not None and isinstance(record.get("blake3"), str) else None
    checked = check_file(store.blobs.path(digest), digest, size, recorded, deep=recorded is None)
    if checked.problem is not None:
        log.info("blob %s changed after commit: %s", digest, checked.problem)
        return checked.problem
    assert checked.fingerprint is not None and checked.stat is not None
    try:
        store.metadata.refresh_blob(
            digest, size=size, media_type=media_type, fingerprint=checked.fingerprint, stat=checked.stat
        )
    except DiskFull:
        log.info("no room to record the new fingerprint of %s", digest)
    return None


def note_links(store: Store, digests: list[Digest]) -> None:
    """Record the new ctime of blobs an export just hard-linked (a link changes only that), so the
    next export trusts them without a re-hash. A record whose inode, size or mtime no longer match
    is left alone: that file gets the full check next time. Best effort on a full disk."""
    moved: dict[Digest, dict] = {}
    for digest in digests:
        record = store.metadata.get_blob(digest)
        try:
            now = stat_fingerprint(os.lstat(store.blobs.path(digest)))
        except FileNotFoundError:
            continue
        old = record.get("stat") if isinstance(record, dict) else None
        if isinstance(old, dict) and old != now and {**old, "ctime_ns": now["ctime_ns"]} == now:
            moved[digest] = now
    if moved:
        try:
            store.metadata.set_blob_stats(moved)
        except DiskFull:
            log.info("no room to record the ctime of %d linked blob(s)", len(moved))
