"""The two private internals of dependencies that cas relies on, pinned and checked.

- httpcore's ``HTTP11Connection.READ_NUM_BYTES`` (cas.registry.transport raises it to 1 MiB where
  it exists: 20-40 % faster blob streaming). httpcore has no upper pin: this test is why.
- diskcache's ``Cache._sql`` and ``Disk.get/fetch`` (cas.metadata_sqlite.scan pages through the
  table in one query per 1,000 rows), the attributes ``Cache.__init__`` sets (cas.metadata_sqlite
  opens an existing index without diskcache's writing ``__init__``), and ``Disk.put`` with the
  ``Cache`` table's columns (cas.metadata_sqlite.delete_many: an eviction forgets thousands of keys
  in a few statements). Nothing else in cas reaches past diskcache's public API. pyproject pins
  ``diskcache>=5.6,<5.7``: the last test says why.

When an upgrade removes or renames one, these tests fail and say what to change, instead of
cas silently slowing down (httpcore) or breaking at the first `cas du` (diskcache).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import diskcache
import httpcore
import pytest
from test_lifecycle_support import tiny_record

from cas.digest import Digest
from cas.metadata import Metadata
from cas.registry import transport


def test_httpcore_still_reads_read_num_bytes_per_recv():
    connection = httpcore._sync.http11.HTTP11Connection
    assert isinstance(getattr(connection, "READ_NUM_BYTES", None), int), (
        "httpcore.HTTP11Connection.READ_NUM_BYTES is gone: cas.registry.transport._raise_read_size no longer "
        "raises the read size; find the new knob or drop the tweak (cas still works, only slower)"
    )
    source = inspect.getsource(connection._receive_event)
    assert "self.READ_NUM_BYTES" in source, "httpcore no longer reads READ_NUM_BYTES per receive: the tweak is dead"


def test_lazy_transport_raises_httpcore_read_size():
    transport.LazyTLSTransport().close()
    assert httpcore._sync.http11.HTTP11Connection.READ_NUM_BYTES >= transport.READ_SIZE


def test_diskcache_internals_used_by_index_scan(tmp_path):
    assert isinstance(inspect.getattr_static(diskcache.Cache, "_sql", None), property), (
        "diskcache.Cache._sql is gone: rewrite cas.metadata_sqlite.scan and update the diskcache pin in pyproject.toml"
    )
    assert list(inspect.signature(diskcache.Disk.get).parameters) == ["self", "key", "raw"]
    assert list(inspect.signature(diskcache.Disk.fetch).parameters) == ["self", "mode", "filename", "value", "read"]
    index = Metadata(tmp_path / "index")
    try:
        digests = [Digest("sha256", f"{i:064x}") for i in range(3)]
        for i, digest in enumerate(digests):
            index.put_blob(digest, size=i, media_type="m", fingerprint="f")
        index.put_ref(tiny_record("r/x:1"))
        found = dict(index.scan("blob:", page=2))  # pages of 2: the rowid cursor is used
        assert sorted(found) == sorted(f"blob:sha256:{d.hex}" for d in digests)
        assert [v["size"] for _, v in sorted(found.items())] == [0, 1, 2]
    finally:
        index.close()


def test_index_opened_without_writing_has_every_attribute_diskcache_init_sets(tmp_path):
    """cas.metadata_sqlite._Attached sets by hand what diskcache.Cache.__init__ would (minus its writes)."""
    from cas.metadata_sqlite import _LAST_CREATED, SETTINGS, _Attached

    made = diskcache.Cache(str(tmp_path), disk=diskcache.JSONDisk, **SETTINGS)
    assert made._sql(_LAST_CREATED).fetchall(), "diskcache creates other schema objects now: update _LAST_CREATED"
    attached = _Attached(tmp_path, immutable=False)
    try:
        expected = {k: v for k, v in vars(made).items() if k != "_local"}
        got = {k: v for k, v in vars(attached).items() if k not in ("_local", "_immutable")}
        assert sorted(got) == sorted(expected), (
            "diskcache.Cache.__init__ sets other attributes now: update cas.metadata_sqlite._Attached and the diskcache pin"
        )
        for key, value in expected.items():
            if key == "_disk":
                assert vars(value) == vars(got[key])
            else:
                assert got[key] == value, key
        attached.set("k", {"v": 1})
        assert made.get("k") == {"v": 1}
    finally:
        attached.close()
        made.close()


def test_a_database_another_process_is_still_creating_is_not_attached(tmp_path):
    """Two first opens at once: the second must not attach to Settings without the Cache table."""
    import sqlite3

    from cas.metadata_sqlite import SETTINGS, _Attached, _Uninitialized, open_database

    made = diskcache.Cache(str(tmp_path), disk=diskcache.JSONDisk, **SETTINGS)
    made.close()
    con = sqlite3.connect(tmp_path / diskcache.core.DBNAME)
    con.execute("DROP TABLE Cache")  # as a creator mid-way leaves it: settings written, no Cache table yet
    con.execute("DROP TRIGGER IF EXISTS Settings_size_delete")
    con.commit()
    con.close()
    with pytest.raises(_Uninitialized):
        _Attached(tmp_path, immutable=False)
    db, read_only = open_database(tmp_path)  # diskcache finishes the set-up (idempotent CREATE IF NOT EXISTS)
    try:
        assert not read_only
        db.set("k", 1)
        assert db.get("k") == 1
    finally:
        db.close()


def test_delete_many_deletes_what_diskcache_delete_would_in_a_few_statements(tmp_path):
    """cas.metadata_sqlite.delete_many encodes keys with ``Disk.put`` and deletes rows by ``Cache._sql``: the keys that
    were there go (a value kept in a file of its own too, its file removed), an expired or absent one is not
    reported, and diskcache's own count stays right."""
    import time

    from cas.metadata_sqlite import SETTINGS, delete_many

    db = diskcache.Cache(str(tmp_path), disk=diskcache.JSONDisk, **SETTINGS)
    try:
        for i in range(7):
            db.set(f"blob:{i}", {"size": i})
        db.set("ref:big", {"blobs": ["x" * 100] * 400})  # over 32 KiB: diskcache keeps it in a file
        db.set("lease:old", {"pid": 1}, expire=0.01)
        db.set("kept", 1)
        assert list(tmp_path.rglob("*.val"))
        time.sleep(0.05)  # the lease expires
        wanted = [f"blob:{i}" for i in range(7)] + ["ref:big", "lease:old", "absent"]
        with db.transact():
            gone = delete_many(db, wanted, batch=3)  # batches of 3: several SELECTs and DELETEs
        assert gone == {f"blob:{i}" for i in range(7)} | {"ref:big"}
        assert not list(tmp_path.rglob("*.val"))  # the big value's file went with its row
        assert sorted(db.iterkeys()) == ["kept", "lease:old"] and len(db) == 2
    finally:
        db.close()


def test_diskcache_is_pinned_below_5_7_because_a_moved_internal_breaks_cas_not_only_slows_it():
    """Why pyproject.toml keeps ``diskcache<5.7`` (httpcore has no upper pin): an httpcore without its
    knob makes cas slower, but a diskcache whose ``Cache.__init__`` sets another attribute, or whose
    ``_sql`` goes, breaks every command at its first open of the index. Its public ``iter`` + ``get``
    would do for the scan, but at one query per key: du, prune and verify read 10,000 blob records
    about 2x slower. The day a release passes the tests above, the pin can move to it."""
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    (pin,) = [line for line in pyproject.splitlines() if line.strip().startswith('"diskcache')]
    assert '"diskcache>=5.6,<5.7"' in pin
    assert tuple(int(part) for part in diskcache.__version__.split(".")[:2]) < (5, 7)
