"""The metadata database's sqlite file: opened safely (without writing, privately), read in pages, errors mapped.

The one module that leans on diskcache's internals, kept apart from cas.metadata (what the keys
mean): ``Cache._con`` and the Settings table, to open a database without diskcache's writing
``__init__`` (a full disk must not lock every command out), and ``Cache._sql`` with
``Disk.get/fetch``, to page through the table in the order rows were written, and
``Disk.put`` with ``Cache._sql``, to delete many keys in a few statements (``delete_many``), and
sqlite's ``user_version`` for the layout's version. Each is named by
a test in tests/test_dependency_internals.py, which fails loudly when an upgrade moves it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path

import diskcache

from cas.errors import DiskFull, StoreError, disk_full

log = logging.getLogger("cas.metadata")


@contextlib.contextmanager
def sqlite_errors(path: Path, read_only: bool = False) -> Iterator[None]:
    """A full disk or a damaged database becomes one readable error, not a sqlite3 traceback.

    ``read_only``: the index was opened read-only because the disk was full, so any write is DiskFull.
    """
    try:
        yield
    except diskcache.Timeout as exc:
        raise StoreError(
            f"the cas index at {path} stayed locked by another process for too long",
            hint="another cas command holds it (a long prune?); run this again when it is done",
        ) from exc
    except OSError as exc:  # diskcache writes values over 32 KiB to files of their own
        full = disk_full(exc, f"the cas index at {path}", hint=_FULL_HINT)
        raise full or _unusable(path, exc) from exc
    except sqlite3.Error as exc:
        if read_only or "full" in str(exc) or _nearly_full(path):  # sqlite may say only "disk I/O error"
            raise DiskFull(f"no space left on device for the cas index at {path}", hint=_FULL_HINT) from exc
        raise _unusable(path, exc) from exc


_FULL_HINT = "free disk space or run `cas prune`"


def _unusable(path: Path, exc: Exception) -> StoreError:
    return StoreError(
        f"the cas index at {path} cannot be used: {exc}",
        hint="check free space and permissions of CAS_HOME; `cas verify` reports damage",
    )


def _nearly_full(path: Path) -> bool:
    try:
        stats = os.statvfs(path if path.exists() else path.parent)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < (1 << 20)


DBNAME = diskcache.core.DBNAME
# What the index is opened with; _Attached checks that the database already holds exactly these.
SETTINGS = {
    "disk_compress_level": 0,
    "eviction_policy": "none",
    "cull_limit": 0,
    "statistics": False,
    "tag_index": False,
}


# The last schema object diskcache.Cache.__init__ creates: until it exists, a concurrent first open is
# still running, and attaching would meet a Settings table without its Cache table.
_LAST_CREATED = "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'Settings_size_delete'"


class _Uninitialized(Exception):
    """The database lacks our settings (an empty file, another program's): diskcache must set it up."""


class _Attached(diskcache.Cache):
    """A diskcache.Cache on an existing database, opened without writing.

    diskcache's own ``__init__`` rewrites every setting (two dozen statements) on each
    open, which fails on a full disk: it locked every command out, the ``cas prune``
    that frees the disk included. The database already holds our settings (diskcache's
    first open wrote them); this reads them and sets what ``__init__`` would have.
    ``immutable``: the disk has no room left for sqlite's ``-shm`` file and the ``-wal``
    holds nothing, so the database file alone is the whole truth: read it as it is
    (sqlite's ``immutable=1``); any write then fails.
    """

    def __init__(self, path: Path, *, immutable: bool) -> None:
        self._directory = str(path)
        self._timeout = 60  # a concurrent open or checkpoint may hold the database for a moment
        self._local = threading.local()
        self._txn_id = None
        self._immutable = immutable
        try:
            if not self._sql(_LAST_CREATED).fetchall():  # another process is still setting it up
                raise _Uninitialized()
            try:
                settings = dict(self._sql("SELECT key, value FROM Settings").fetchall())
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    raise _Uninitialized() from exc
                raise
            if any(settings.get(key) != value for key, value in SETTINGS.items()):
                raise _Uninitialized()
            disk_args = {key[5:]: value for key, value in settings.items() if key.startswith("disk_")}
            self._disk = diskcache.JSONDisk(self._directory, **disk_args)
            for key, value in settings.items():  # sqlite_ pragmas are applied to each connection by _con
                object.__setattr__(self, key, value)
            ((self._page_size,),) = self._sql("PRAGMA page_size").fetchall()
        except BaseException:
            self.close()
            raise

    @property
    def _con(self) -> sqlite3.Connection:
        if not self._immutable:
            return super()._con
        con = getattr(self._local, "con", None)
        if con is None:
            uri = f"file:{urllib.parse.quote(os.path.join(self._directory, DBNAME))}?immutable=1"
            con = self._local.con = sqlite3.connect(uri, uri=True, isolation_level=None)
        return con


def _make_private(path: Path) -> None:
    """The index directory 0700 and its files 0600, whatever the umask: it holds bearer tokens.

    sqlite gives its -wal and -shm files the database file's mode. Modes are changed only
    when wrong (a store made before this rule), which needs no free space.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in (path, *(path / name for name in (DBNAME, f"{DBNAME}-wal", f"{DBNAME}-shm"))):
        want = 0o700 if entry == path else 0o600
        try:
            if stat.S_IMODE(entry.stat().st_mode) != want:
                os.chmod(entry, want)
        except FileNotFoundError:
            continue


def _wal_has_frames(path: Path) -> bool:
    """Whether the -wal holds changes not yet in the database file (then it must be read through sqlite)."""
    try:
        return (path / f"{DBNAME}-wal").stat().st_size > 0
    except FileNotFoundError:
        return False


def open_database(path: Path) -> tuple[diskcache.Cache, bool]:
    """The index database under ``path`` and whether it is read-only (a disk too full for sqlite's -shm).

    An existing database is attached without writing; only a new (or foreign) one is set up by diskcache.
    """
    _make_private(path)
    if (path / DBNAME).exists():
        try:
            return _Attached(path, immutable=False), False
        except _Uninitialized:
            pass
        except sqlite3.OperationalError:
            if not _nearly_full(path) or _wal_has_frames(path):
                raise
            log.info("no room on the disk for sqlite's shared memory: reading the index read-only")
            return _Attached(path, immutable=True), True
    db = diskcache.Cache(str(path), disk=diskcache.JSONDisk, **SETTINGS)  # creates it: this writes
    _make_private(path)
    return db, False


def scan(db: diskcache.Cache, prefixes: tuple[str, ...], page: int) -> Iterator[tuple[str, object]]:
    """Every live ``(key, value)`` whose key starts with one of ``prefixes``, in rowid order (as written).

    One query per ``page`` rows, where diskcache's public ``iterkeys`` + ``get`` cost one per key,
    and no cursor held open between pages, so the caller may write while it iterates.
    """
    disk = db._disk
    now = time.time()
    last = 0
    while True:
        rows = db._sql(
            "SELECT rowid, key, raw, expire_time, mode, filename, value FROM Cache WHERE rowid > ? ORDER BY rowid LIMIT ?",
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


def delete_many(db: diskcache.Cache, keys: Iterable[str], batch: int = 500) -> set[str]:
    """Delete these keys' rows, ``batch`` at a time (one SELECT and one DELETE each); the keys that were there.

    diskcache's ``delete`` costs a transaction and two statements per key: an eviction of a thousand
    images forgets thousands of keys. Run it inside the caller's transaction. A row whose value lives
    in a file of its own (over 32 KiB: no record of ours is) goes through ``delete``, which removes
    the file once the transaction commits.
    """
    disk, now, gone = db._disk, time.time(), set()
    encoded = {bytes(disk.put(key)[0]): key for key in keys}
    names = list(encoded)
    for start in range(0, len(names), batch):
        chunk = names[start : start + batch]
        rows = db._sql(
            f"SELECT rowid, key, filename FROM Cache WHERE key IN ({', '.join('?' * len(chunk))}) AND raw = 1"
            " AND (expire_time IS NULL OR expire_time > ?)",
            (*chunk, now),
        ).fetchall()
        inline = [rowid for rowid, _, filename in rows if filename is None]
        if inline:
            db._sql(f"DELETE FROM Cache WHERE rowid IN ({', '.join('?' * len(inline))})", inline)
        for _, key, filename in rows:
            if filename is None or db.delete(encoded[bytes(key)]):
                gone.add(encoded[bytes(key)])
    return gone


def schema_version(db: diskcache.Cache) -> int:
    """The index layout's version, kept in sqlite's ``user_version``: a row would be one more key."""
    ((version,),) = db._sql("PRAGMA user_version").fetchall()
    return version


def set_schema_version(db: diskcache.Cache, version: int) -> None:
    db._sql(f"PRAGMA user_version = {int(version)}")
