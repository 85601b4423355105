"""cas.metadata on a real diskcache database: token expiry, paging, and every sqlite failure a user
can meet (locked, damaged, read-only, full) as one readable error."""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_lifecycle_support import tiny_record

from cas.errors import DiskFull, StoreError
from cas.metadata import Metadata

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def index(tmp_path):
    idx = Metadata(tmp_path / "index")
    yield idx
    idx.close()


def _expire_time(index: Metadata, key: str) -> tuple[float, float | None]:
    """(store_time, expire_time) of one row, read with plain sqlite3."""
    db_key, raw = index._db._disk.put(key)  # JSONDisk stores keys encoded
    with contextlib.closing(sqlite3.connect(index.path / "cache.db")) as con:
        row = con.execute("SELECT store_time, expire_time FROM Cache WHERE key = ? AND raw = ?", (db_key, raw))
        return row.fetchone()


@contextlib.contextmanager
def _mounted(*args: str):
    target = args[-1]
    subprocess.run(["mount", *args], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", target], check=True)


def test_a_token_lives_until_it_expires_in_the_real_database(index, tmp_path, monkeypatch):
    index.put_token("127.0.0.1:5000|repository:app:pull", "tok-1", expires_in=300)
    index.put_token("127.0.0.1:5000|basic", "tok-2", expires_in=-5)  # already expired: kept one second
    stored, expires = _expire_time(index, "token:127.0.0.1:5000|repository:app:pull")
    assert expires - stored == pytest.approx(300)
    stored, expires = _expire_time(index, "token:127.0.0.1:5000|basic")
    assert expires - stored == pytest.approx(1.0)

    again = Metadata(tmp_path / "index")  # another process's view: it is on disk
    assert again.get_token("127.0.0.1:5000|repository:app:pull") == "tok-1"
    assert again.get_token("nobody") is None
    again.close()

    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 299)
    assert index.get_token("127.0.0.1:5000|repository:app:pull") == "tok-1"
    assert index.get_token("127.0.0.1:5000|basic") is None
    monkeypatch.setattr(time, "time", lambda: now + 301)
    assert index.get_token("127.0.0.1:5000|repository:app:pull") is None
    assert list(index.scan("token:")) == []


def test_scan_pages_through_every_live_entry_and_tolerates_writes(index, monkeypatch):
    for i in range(7):
        index.put_ref(tiny_record(f"127.0.0.1:5000/app:{i}"))
    index.put_token("short", "t", expires_in=10)
    index.put_ref(tiny_record("127.0.0.1:5000/zzz:late"))
    pages: list[str] = []
    index._db._con.set_trace_callback(lambda sql: pages.append(sql) if "LIMIT" in sql else None)

    seen = []
    for key, _value in index.scan("ref:", page=2):
        seen.append(key)
        if key == "ref:127.0.0.1:5000/app:1|linux/amd64":
            index.remove_ref(tiny_record("127.0.0.1:5000/app:5"))  # deleted ahead of the cursor: never yielded
            index.put_ref(tiny_record("127.0.0.1:5000/app:new"))  # written while scanning: yielded at the end
    assert seen == [
        *(f"ref:127.0.0.1:5000/app:{i}|linux/amd64" for i in (0, 1, 2, 3, 4, 6)),
        "ref:127.0.0.1:5000/zzz:late|linux/amd64",
        "ref:127.0.0.1:5000/app:new|linux/amd64",
    ]
    # 17 rows two at a time, then the empty page: 8 records and the token, and beside each record its
    # reference's platforms: entry (app:5 and its entry deleted, app:new and its entry added)
    assert len(pages) == 10
    index._db._con.set_trace_callback(None)

    assert [k for k, _ in index.scan("token:")] == ["token:short"]
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 11)
    assert list(index.scan("token:")) == []
    assert len(list(index.refs())) == 8


def test_a_locked_index_is_one_error_naming_it(index):
    index._db.close()
    index._db._timeout = 0.2  # sqlite's busy wait, 60 s by default; the mapping is what is under test
    holder = sqlite3.connect(index.path / "cache.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer in the middle of a transaction
        with pytest.raises(StoreError) as info:
            index.put_ref(tiny_record("127.0.0.1:5000/app:1"))
        assert info.value.message == (f"the cas index at {index.path} stayed locked by another process for too long")
        assert "another cas command" in info.value.hint
        with pytest.raises(StoreError) as info, index.transact():
            pass
        assert "stayed locked" in info.value.message
        assert index.get_ref("127.0.0.1:5000/app:1", "linux/amd64") is None  # reads go on (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    index.put_ref(tiny_record("127.0.0.1:5000/app:1"))
    assert index.get_ref("127.0.0.1:5000/app:1", "linux/amd64") == tiny_record("127.0.0.1:5000/app:1")


def test_a_damaged_index_is_one_error_in_the_api_and_the_cli(tmp_path):
    home = tmp_path / "home"
    proc = subprocess.run([sys.executable, "-m", "cli", "images"], env=_env(home), cwd=REPO_ROOT, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    database = home / "v1" / "index" / "cache.db"
    database.write_bytes(b"this is not a sqlite database" * 200)
    for wal in database.parent.glob("cache.db-*"):
        wal.unlink()

    with pytest.raises(StoreError) as info:
        Metadata(database.parent)
    assert info.value.message == f"the cas index at {database.parent} cannot be used: file is not a database"
    assert "cas verify" in info.value.hint

    for args in (["images"], ["rm", "127.0.0.1:5000/x:1"], ["prune"], ["du"]):
        proc = subprocess.run(
            [sys.executable, "-m", "cli", *args], env=_env(home), cwd=REPO_ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr.splitlines() == [f"error: {info.value.message}", f"hint: {info.value.hint}"], args


def test_a_read_only_index_is_one_error(tmp_path):
    path = tmp_path / "index"
    writable = Metadata(path)
    writable.put_ref(tiny_record("127.0.0.1:5000/app:1"))
    writable.close()
    with _mounted("--bind", str(path), str(path)):
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        try:
            Metadata(path).put_ref(tiny_record("127.0.0.1:5000/app:2"))
        except StoreError as exc:
            message, hint = exc.message, exc.hint
        else:
            raise AssertionError("a read-only index accepted a write")
        gc.collect()  # the half-opened sqlite connection, so that the mount can go
    assert message == f"the cas index at {path} cannot be used: unable to open database file"
    assert "permissions" in hint
    again = Metadata(path)
    assert (
        again.get_ref("127.0.0.1:5000/app:1", "linux/amd64") == tiny_record("127.0.0.1:5000/app:1")
        and again.get_ref("127.0.0.1:5000/app:2", "linux/amd64") is None
    )
    again.close()


@pytest.mark.parametrize("value_size", [100, 50_000], ids=["in-sqlite", "in-a-value-file"])
def test_a_full_disk_under_the_index_is_disk_full(tmp_path, value_size):
    """diskcache keeps values over 32 KiB (a ref listing hundreds of layers, a long lease) in
    files of their own beside the database: a full disk there must read the same."""
    mount = tmp_path / "small"
    mount.mkdir()
    with _mounted("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)):
        index = Metadata(mount / "index")
        with contextlib.suppress(OSError), open(mount / "filler", "wb") as filler:
            while True:  # until ENOSPC
                filler.write(b"\0" * 65536)
                filler.flush()
        try:
            with pytest.raises(DiskFull) as info:
                for i in range(1000):
                    index.put_ref(tiny_record(f"127.0.0.1:5000/app:{i}", pad=value_size))
            assert info.value.message.startswith("no space left on device ")
            assert info.value.message.endswith(f" the cas index at {mount / 'index'}")
            assert "cas prune" in info.value.hint
            del info
        finally:
            with contextlib.suppress(StoreError, DiskFull):
                index.close()
            gc.collect()


def _env(home: Path) -> dict[str, str]:
    import os

    return {**os.environ, "CAS_HOME": str(home)}
