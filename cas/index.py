"""The metadata index (diskcache): refs, blobs, leases and cached tokens.

Values are JSON, never pickles, and never blob bytes. Keys are namespaced:
``ref:<canonical ref>``, ``blob:<alg>:<hex>``, ``lease:<id>``, ``token:<key>``.
Eviction is off: this is a database, not a cache that may forget.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import diskcache

from cas.digest import Digest
from cas.errors import DiskFull, StoreError

LEASE_TTL = 6 * 3600.0
_F = TypeVar("_F", bound=Callable)


@contextlib.contextmanager
def _sqlite_errors(path: Path) -> Iterator[None]:
    """A full disk or a damaged database becomes one readable error, not a sqlite3 traceback."""
    try:
        yield
    except diskcache.Timeout as exc:
        raise StoreError(
            f"the cas index at {path} stayed locked by another process for too long",
            hint="another cas command holds it (a long prune?); run this again when it is done",
        ) from exc
    except sqlite3.Error as exc:
        if "full" in str(exc) or _nearly_full(path):  # sqlite may say only "disk I/O error"
            raise DiskFull(
                f"no space left on device for the cas index at {path}", hint="free disk space or run `cas prune`"
            ) from exc
        raise StoreError(
            f"the cas index at {path} cannot be used: {exc}",
            hint="check free space and permissions of CAS_HOME; `cas verify` reports damage",
        ) from exc


def _nearly_full(path: Path) -> bool:
    try:
        stats = os.statvfs(path if path.exists() else path.parent)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < (1 << 20)


def _guarded(method: _F) -> _F:
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generate(self: Index, *args: object, **kwargs: object) -> Iterator:
            with _sqlite_errors(self.path):
                yield from method(self, *args, **kwargs)

        return generate  # type: ignore[return-value]

    @functools.wraps(method)
    def call(self: Index, *args: object, **kwargs: object) -> object:
        with _sqlite_errors(self.path):
            return method(self, *args, **kwargs)

    return call  # type: ignore[return-value]


class Index:
    def __init__(self, path: Path) -> None:
        self.path = path
        with _sqlite_errors(path):
            self._db = diskcache.Cache(
                str(path),
                disk=diskcache.JSONDisk,
                disk_compress_level=0,
                eviction_policy="none",
                cull_limit=0,
                statistics=False,
                tag_index=False,
            )

    @_guarded
    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transact(self) -> Iterator[None]:
        """BEGIN IMMEDIATE: use for every change that touches more than one key."""
        with _sqlite_errors(self.path), self._db.transact():
            yield

    @_guarded
    def scan(self, *prefixes: str, page: int = 1000) -> Iterator[tuple[str, object]]:
        """Every live ``(key, value)`` whose key starts with one of ``prefixes``.

        One SQL query per ``page`` rows instead of one per key (``iterkeys`` + ``get``),
        and no cursor held open between pages, so memory stays bounded and the caller
        may write to the index while it iterates. Used by gc, du and verify.
        ``Cache._sql`` and ``Disk.get/fetch`` are diskcache internals: pyproject pins
        ``diskcache<5.7`` and tests/test_dependency_internals.py checks them.
        """
        db = self._db
        disk = db._disk
        now = time.time()
        last = 0
        while True:
            rows = db._sql(
                "SELECT rowid, key, raw, expire_time, mode, filename, value FROM Cache"
                " WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (last, page),
            ).fetchall()
            if not rows:
                return
            for rowid, key, raw, expire_time, mode, filename, value in rows:
                last = rowid
                if expire_time is not None and expire_time < now:
                    continue
                name = disk.get(key, raw)
                if not (isinstance(name, str) and name.startswith(prefixes)):
                    continue
                try:
                    yield name, disk.fetch(mode, filename, value, False)
                except OSError:  # a large value whose file a concurrent delete removed
                    continue

    @_guarded
    def discard(self, key: str) -> bool:
        """Delete one entry by its full key (``cas verify --repair`` drops malformed ones)."""
        return self._db.delete(key)

    # refs --------------------------------------------------------------
    @_guarded
    def get_ref(self, ref: str) -> dict | None:
        return self._db.get(f"ref:{ref}")

    @_guarded
    def put_ref(self, ref: str, record: dict) -> None:
        self._db.set(f"ref:{ref}", record)

    @_guarded
    def remove_ref(self, ref: str) -> bool:
        return self._db.delete(f"ref:{ref}")

    @_guarded
    def refs(self) -> Iterator[tuple[str, dict]]:
        for key, record in self.scan("ref:"):
            if isinstance(record, dict):
                yield key[4:], record

    @_guarded
    def touch_refs(self, refs: Iterable[str], when: float | None = None) -> None:
        when = time.time() if when is None else when
        with self.transact():
            for ref in refs:
                record = self.get_ref(ref)
                if record is not None:
                    record["used"] = when
                    self.put_ref(ref, record)

    # blobs -------------------------------------------------------------
    @_guarded
    def get_blob(self, digest: Digest) -> dict | None:
        return self._db.get(f"blob:{digest}")

    @_guarded
    def put_blob(self, digest: Digest, *, size: int, media_type: str, fingerprint: str) -> None:
        now = time.time()
        self._db.set(
            f"blob:{digest}",
            {"size": size, "media_type": media_type, "blake3": fingerprint, "added": now, "used": now},
        )

    @_guarded
    def remove_blob(self, digest: Digest) -> bool:
        return self._db.delete(f"blob:{digest}")

    @_guarded
    def blobs(self) -> Iterator[tuple[Digest, dict]]:
        for key, record in self.scan("blob:"):
            if isinstance(record, dict):
                yield Digest.parse(key[5:]), record

    # leases ------------------------------------------------------------
    @contextlib.contextmanager
    def lease(self, digests: Iterable[Digest] = ()) -> Iterator[Lease]:
        """Hold digests as GC roots while a pull or export runs."""
        lease = Lease(self, uuid.uuid4().hex)
        lease.add(digests)
        try:
            yield lease
        finally:
            with _sqlite_errors(self.path):
                self._db.delete(f"lease:{lease.id}")

    @_guarded
    def leased_digests(self) -> set[str]:
        """Digests held by live leases; leases of dead processes are dropped."""
        held: set[str] = set()
        for key, record in list(self.scan("lease:")):
            if not isinstance(record, dict):
                continue
            if not _pid_alive(record.get("pid", -1)):
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


class Lease:
    def __init__(self, index: Index, lease_id: str) -> None:
        self.index = index
        self.id = lease_id
        self.digests: set[str] = set()

    def add(self, digests: Iterable[Digest | str]) -> None:
        new = {str(d) for d in digests} - self.digests
        if not new and self.digests:
            return
        self.digests |= new
        self.index.put_lease(self.id, self.digests)


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
