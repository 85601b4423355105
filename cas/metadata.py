"""The metadata database (diskcache): refs, blobs, leases and cached tokens.

Values are JSON, never pickles, and never blob bytes. Keys are namespaced:
``ref:<canonical ref>|<platform>`` with ``platforms:<canonical ref>`` (the platforms cached, written
in the same transaction: how one reference's records are found; see cas.records), ``blob:<alg>:<hex>``, ``lease:<id>``, ``token:<key>``, and ``pushed:<registry>|<repository>`` (blobs
a push put there: mount sources for the next push), and two single keys: ``total:blob-bytes`` (the
running total of blob bytes, changed in the transaction that records or removes a blob, so the size
budget never walks the store) and ``stats:counters`` (cas.stats). Eviction is off: this is a database, not a
cache that may forget. The layout's version is sqlite's ``user_version`` (see ``Metadata._migrate``).

diskcache is used through its public API here (``get``, ``set``, ``delete``, ``transact``), and no key
uses diskcache's tag column; what needs its internals (opening without writing, the paged scan, the
version) is ``cas.metadata_sqlite``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from cas.digest import Digest
from cas.errors import DiskFull, StoreError
from cas.metadata_sqlite import delete_many, open_database, scan, schema_version, set_schema_version, sqlite_errors
from cas.records import (
    PREFIX,
    BlobRecord,
    RefRecord,
    blob_record,
    is_legacy,
    key_of,
    legacy_key,
    platforms_key,
    read_all,
    split_key,
)

SCHEMA = 3  # see Metadata._migrate
LEASE_TTL = 6 * 3600.0
TOTAL = "total:blob-bytes"
STATS = "stats:counters"
MAX_PUSHED = 20_000  # blobs remembered per pushed repository (newest first)
_F = TypeVar("_F", bound=Callable)
log = logging.getLogger("cas.metadata")


def _guarded(method: _F) -> _F:
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generate(self: Metadata, *args: object, **kwargs: object) -> Iterator:
            with sqlite_errors(self.path, self.read_only):
                yield from method(self, *args, **kwargs)

        return generate  # type: ignore[return-value]

    @functools.wraps(method)
    def call(self: Metadata, *args: object, **kwargs: object) -> object:
        with sqlite_errors(self.path, self.read_only):
            return method(self, *args, **kwargs)

    return call  # type: ignore[return-value]


class Metadata:
    """The metadata database under ``path``, a private directory (0700, its files 0600: it holds bearer tokens).

    Opening it writes nothing (see ``_Attached``), so read-only commands work on a full disk;
    when a full disk leaves sqlite no room even to read, ``read_only`` is set and every write
    raises DiskFull.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.read_only = False
        with sqlite_errors(path):
            self._db, self.read_only = open_database(path)
            self.current = schema_version(self._db) >= SCHEMA  # False: ref_records scans (see _migrate)
        if not self.current and not self.read_only:
            try:
                self._migrate()
                self.current = True
            except DiskFull:  # no room to move anything: read what is where it belongs, move it next time
                log.info("no room to bring the index at %s up to date", path)

    @_guarded
    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transact(self) -> Iterator[None]:
        """BEGIN IMMEDIATE: use for every change that touches more than one key."""
        with sqlite_errors(self.path, self.read_only), self._db.transact():
            yield

    @_guarded
    def scan(self, *prefixes: str, page: int = 1000) -> Iterator[tuple[str, object]]:
        """Every live ``(key, value)`` whose key starts with one of ``prefixes``, in the order written.

        One SQL query per ``page`` rows and no cursor held between pages (``cas.metadata_sqlite.scan``), so
        memory stays bounded and the caller may write to the database while it iterates. Used by gc,
        du and verify.
        """
        yield from scan(self._db, prefixes, page)

    @_guarded
    def discard(self, key: str) -> bool:
        """Delete one entry by its full key (``cas verify --repair`` drops malformed ones)."""
        with self.transact():
            if key.startswith(PREFIX) and not is_legacy(key):
                self._drop(self._unlist(*split_key(key)))
            return self._db.delete(key)

    # refs ------------------------------------------------------------
    @_guarded
    def get_ref(self, ref: str, platform: str | None) -> RefRecord | None:
        """The record of ``ref`` for exactly ``platform``."""
        key = key_of(ref, platform)
        value = self._db.get(key)
        return RefRecord.from_json(value, key) if value is not None else None

    @_guarded
    def ref_records(self, ref: str) -> list[RefRecord]:
        """Every cached platform of one reference, sorted by platform; StoreError if one is damaged.

        The reference's ``platforms:`` entry names its keys, so this reads only those (a full
        ``refs()`` scan decodes every key of the database: ~70 ms at 11,000 keys, against ~1 ms).
        A database still in an older layout (a full disk kept ``_migrate`` from running) is scanned.
        """
        if self.current:
            keys = [key_of(ref, platform) for platform in self._platforms(ref)]
            entries = [(key, value) for key in keys if (value := self._db.get(key)) is not None]
        else:
            entries = [(k, v) for k, v in self.scan(PREFIX) if not is_legacy(k) and split_key(k)[0] == ref]
        stray = self._db.get(legacy_key(ref))
        if stray is not None:  # a pre-platform record _migrate could not move: damage, named as such
            entries.append((legacy_key(ref), stray))
        return sorted(read_all(entries), key=lambda r: r.platform or "")

    @_guarded
    def put_ref(self, record: RefRecord) -> None:
        """Write a record under its (ref, platform) key, and list its platform."""
        with self.transact():
            self._db.set(record.key, record.to_json())
            platforms = self._platforms(record.ref)
            if (record.platform or "") not in platforms:
                self._db.set(platforms_key(record.ref), sorted([*platforms, record.platform or ""]))

    @_guarded
    def remove_ref(self, record: RefRecord) -> bool:
        """Forget one platform of one reference."""
        with self.transact():
            self._drop(self._unlist(record.ref, record.platform or ""))
            return self._db.delete(record.key)

    @_guarded
    def remove_refs(self, records: Iterable[RefRecord]) -> int:
        """Forget many records in one transaction, a few statements in all (an eviction), and unlist their
        platforms; how many there were."""
        records = list(records)
        with self.transact():
            gone = delete_many(self._db, [record.key for record in records])
            by_ref: dict[str, set[str]] = {}
            for record in records:
                by_ref.setdefault(record.ref, set()).add(record.platform or "")
            emptied = [self._unlist(ref, *platforms) for ref, platforms in by_ref.items()]
            delete_many(self._db, [key for key in emptied if key is not None])
            return len(gone)

    def _platforms(self, ref: str) -> list[str]:
        listed = self._db.get(platforms_key(ref))
        return [p for p in listed if isinstance(p, str)] if isinstance(listed, list) else []

    def _unlist(self, ref: str, *platforms: str) -> str | None:
        """Take ``platforms`` off the reference's list (in the caller's transaction); the list's key when
        that empties it, for the caller to delete."""
        listed = self._platforms(ref)
        left = [platform for platform in listed if platform not in platforms]
        if listed and not left:
            return platforms_key(ref)
        if len(left) != len(listed):
            self._db.set(platforms_key(ref), left)
        return None

    def _drop(self, key: str | None) -> None:
        if key is not None:
            self._db.delete(key)

    @_guarded
    def refs(self, malformed: list[str] | None = None) -> Iterator[RefRecord]:
        """Every ref record; a damaged one raises StoreError, or its key goes to ``malformed`` if given."""
        yield from read_all(self.scan(PREFIX), malformed)

    @_guarded
    def touch_refs(self, records: Iterable[RefRecord], when: float | None = None) -> None:
        """Mark records used now (export); each is re-read so a concurrent pull's record is kept."""
        when = time.time() if when is None else when
        with self.transact():
            for record in records:
                current = self.get_ref(record.ref, record.platform)
                if current is not None:
                    self.put_ref(current.replace(used=when))

    def _migrate(self) -> None:
        """Bring a store written by an older cas to ``SCHEMA``, once, in one transaction.

        Before 2, a record written before platforms (``ref:<ref>``) moves to its platform's key;
        a record already there wins, as readers preferred it. A damaged old record stays where it
        is, for ``cas verify`` to report (and ``--repair`` to drop). Before 3, records were found
        through diskcache's tag column: each reference gets its ``platforms:`` list (damaged
        records included, so that their reference still names them), and each record is written
        again without its tag.
        """
        with self.transact():
            if schema_version(self._db) >= SCHEMA:  # another process did it first
                return
            listed: dict[str, set[str]] = {}
            for key, value in list(self.scan(PREFIX)):
                moved = self._move_legacy(key, value) if is_legacy(key) else key
                if moved is None:
                    continue
                if moved == key:
                    self._db.set(key, value)  # the same entry, without the tag
                ref, platform = split_key(moved)
                listed.setdefault(ref, set()).add(platform)
            for ref, platforms in listed.items():
                self._db.set(platforms_key(ref), sorted(platforms))
            set_schema_version(self._db, SCHEMA)

    def _move_legacy(self, key: str, value: object) -> str | None:
        """Move a pre-platform record to its platform's key, which it returns; None: damaged, left as it is."""
        try:
            record = RefRecord.from_json(value, key)
        except StoreError:
            return None
        if self._db.get(record.key) is None:
            self._db.set(record.key, record.to_json())
        self._db.delete(key)
        return record.key

    # blobs -------------------------------------------------------------
    @_guarded
    def get_blob(self, digest: Digest) -> BlobRecord | None:
        """The blob's record; None when there is none, or it is damaged (verify reports it)."""
        return blob_record(self._db.get(f"blob:{digest}"))

    @_guarded
    def has_blob_record(self, digest: Digest) -> bool:
        """Whether the database holds an entry for the blob, damaged or not (verify tells the two apart)."""
        return f"blob:{digest}" in self._db

    @_guarded
    def put_blob(
        self, digest: Digest, *, size: int, media_type: str, fingerprint: str, stat: dict | None = None
    ) -> None:
        """``stat``: the file's stat fingerprint at commit (see cas.store.trust); None when unknown."""
        now = time.time()
        record = BlobRecord(size=size, media_type=media_type, blake3=fingerprint, added=now, used=now)
        if stat is not None:
            record["stat"] = stat
        with self.transact():
            total = self.blob_bytes()
            replaced = self._db.get(f"blob:{digest}")
            self._db.set(f"blob:{digest}", record)
            self._db.set(TOTAL, total + size - _size_of(replaced))

    @_guarded
    def refresh_blob(self, digest: Digest, *, size: int, media_type: str, fingerprint: str, stat: dict) -> None:
        """A re-hashed file was good: record its new stat fingerprint (and a record for a file that had none)."""
        with self.transact():
            record = self.get_blob(digest)
            if record is None:
                self.put_blob(digest, size=size, media_type=media_type, fingerprint=fingerprint, stat=stat)
                return
            record.update(blake3=fingerprint, stat=stat)
            self._db.set(f"blob:{digest}", record)

    def set_blob_stats(self, stats: dict[Digest, dict]) -> None:
        """New stat fingerprints for existing blob records, in one transaction."""
        self._update_blobs("stat", stats)

    def set_blob_types(self, types: dict[Digest, str]) -> None:
        """New media types for existing blob records (see cas.blobtypes), in one transaction."""
        self._update_blobs("media_type", types)

    @_guarded
    def _update_blobs(self, field: str, values: dict[Digest, object]) -> None:
        with self.transact():
            for digest, value in values.items():
                record = self.get_blob(digest)
                if record is not None:
                    record[field] = value  # type: ignore[literal-required]
                    self._db.set(f"blob:{digest}", record)

    @_guarded
    def remove_blob(self, digest: Digest) -> bool:
        with self.transact():
            return self.remove_blobs({digest: _size_of(self.get_blob(digest))}) == 1

    @_guarded
    def remove_blobs(self, sizes: dict[Digest, int]) -> int:
        """Forget these blob records (with the sizes they hold, read in the caller's transaction), the running
        total changed once; how many there were. Prune reads every record first, so this only deletes."""
        with self.transact():
            total = self.blob_bytes()
            gone = delete_many(self._db, [f"blob:{digest}" for digest in sizes])
            self._db.set(TOTAL, total - sum(size for digest, size in sizes.items() if f"blob:{digest}" in gone))
            return len(gone)

    @_guarded
    def blobs(self) -> Iterator[tuple[Digest, BlobRecord]]:
        for key, value in self.scan("blob:"):
            record = blob_record(value)
            if record is not None:
                yield Digest.parse(key[5:]), record

    # the running total and the counters ---------------------------------
    @_guarded
    def blob_bytes(self) -> int:
        """The running total of blob bytes; a store from before it has it counted once from the records."""
        total = self._db.get(TOTAL)
        if isinstance(total, int):
            return total
        return self.recount_blob_bytes()

    @_guarded
    def recount_blob_bytes(self, *, write: bool = True) -> int:
        """The blob records' sizes added up (in one transaction), and written as the running total."""
        with self.transact():
            total = sum(_size_of(record) for _, record in self.scan("blob:"))
            if write and not self.read_only:
                self._db.set(TOTAL, total)
            return total

    @_guarded
    def audit_blob_bytes(self) -> tuple[int | None, int]:
        """(the running total, what the blob records add up to), read in one transaction: `cas verify`."""
        with self.transact():
            total = self._db.get(TOTAL)
            return total if isinstance(total, int) else None, self.recount_blob_bytes(write=False)

    @_guarded
    def counters(self) -> dict:
        value = self._db.get(STATS)
        return value if isinstance(value, dict) else {}

    @_guarded
    def add_counters(self, counts: dict[str, int], start: dict) -> None:
        """Add ``counts`` to the counters in one write (``start``: the counters when there are none yet)."""
        with self.transact():
            current = self.counters() or dict(start)
            for key, n in counts.items():
                current[key] = current.get(key, 0) + n
            self._db.set(STATS, current)

    @_guarded
    def set_counters(self, counters: dict) -> None:
        self._db.set(STATS, counters)

    # leases ------------------------------------------------------------
    @contextlib.contextmanager
    def lease(self, digests: Iterable[Digest] = ()) -> Iterator[Lease]:
        """Hold digests as GC roots while a pull or export runs."""
        lease = Lease(self, uuid.uuid4().hex)
        lease.add(digests)
        try:
            yield lease
        finally:
            if lease.digests:  # else it was never written
                with sqlite_errors(self.path, self.read_only):
                    self._db.delete(f"lease:{lease.id}")

    @_guarded
    def leased_digests(self, leases: Iterable[tuple[str, object]] | None = None) -> set[str]:
        """Digests held by live leases; leases of dead processes are dropped. ``leases``: the ``lease:``
        entries, when the caller's own scan read them already (cas.snapshot: one pass over the metadata)."""
        held: set[str] = set()
        for key, record in list(self.scan("lease:") if leases is None else leases):
            if not isinstance(record, dict):
                continue
            if not _pid_alive(record.get("pid", -1)):
                if not self.read_only:  # a full disk: leave the clean-up to a later command
                    self._db.delete(key)
                continue
            held.update(record.get("digests", []))
        return held

    @_guarded
    def put_lease(self, lease_id: str, digests: Iterable[str]) -> None:
        record = {"pid": os.getpid(), "digests": sorted(digests), "created": time.time()}
        self._db.set(f"lease:{lease_id}", record, expire=LEASE_TTL)

    # tokens ------------------------------------------------------------
    @_guarded
    def get_token(self, key: str) -> str | None:
        return self._db.get(f"token:{key}")

    @_guarded
    def put_token(self, key: str, token: str, expires_in: float) -> None:
        self._db.set(f"token:{key}", token, expire=max(expires_in, 1.0))

    # push destinations -------------------------------------------------
    @_guarded
    def put_pushed(self, registry: str, repository: str, digests: Iterable[Digest]) -> None:
        """Remember that ``registry/repository`` holds these blobs (a push put them there), so a later
        push to another repository of that registry mounts them instead of uploading them again."""
        key = f"pushed:{registry}|{repository}"
        with self.transact():
            held = self._db.get(key)
            known = held if isinstance(held, list) else []
            self._db.set(key, list(dict.fromkeys([*map(str, digests), *known]))[:MAX_PUSHED])

    @_guarded
    def pushed(self, registry: str) -> Iterator[tuple[str, list[str]]]:
        """``(repository, digests)`` for every repository of ``registry`` a push has filled."""
        prefix = f"pushed:{registry}|"
        for key, value in self.scan(prefix):
            if isinstance(value, list):
                yield key[len(prefix) :], value


class Lease:
    def __init__(self, metadata: Metadata, lease_id: str) -> None:
        self.metadata = metadata
        self.id = lease_id
        self.digests: set[str] = set()

    def add(self, digests: Iterable[Digest | str]) -> None:
        new = {str(d) for d in digests} - self.digests
        if not new:  # an empty lease holds nothing: not written
            return
        self.digests |= new
        self.metadata.put_lease(self.id, self.digests)


def _size_of(record: object) -> int:
    """A blob record's size; 0 for none (or a damaged one: verify reports it)."""
    size = record.get("size") if isinstance(record, dict) else None
    return size if isinstance(size, int) else 0


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
