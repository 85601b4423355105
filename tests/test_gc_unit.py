"""Prune and rm on stores built directly through the store API: mark, sweep, policies, safety."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from support.tools import store_lock_held
from test_lifecycle_support import (
    APP,
    BASE,
    OTHER,
    abandon,
    commit,
    files_on_disk,
    indexed,
    only_record,
    store_three,
    write_raw,
)

from cas import gc
from cas.digest import Digest
from cas.disk_usage import usage
from cas.errors import LockTimeout, NotCached, StoreError
from cas.images import remove_images
from cas.store import Store
from cas.store import ingest as blobs_module
from cas.verify import verify


@pytest.fixture
def three(store: Store):
    return store_three(store)


def digests(record: dict) -> set[str]:
    return {str(b.digest) for b in record.blobs}


def sizes(record: dict) -> dict[str, int]:
    return {str(b.digest): b.size for b in record.blobs}


def layout_refs(store: Store) -> list[str]:
    index = json.loads((store.root / "index.json").read_text())
    return [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]


def test_prune_keeps_everything_referenced(store, three):
    garbage = commit(store, b"nobody needs me" * 100, "application/octet-stream")
    before = files_on_disk(store)
    result = gc.prune(store)
    assert [d for d, _, _ in result.blobs] == [str(garbage)]
    assert result.freed_bytes == 1500
    assert files_on_disk(store) == before - {str(garbage)}
    assert str(garbage) not in indexed(store)
    assert result.kept_images == 3 and not result.images
    # a second prune has nothing left to do
    again = gc.prune(store)
    assert again.blobs == [] and again.freed_bytes == 0


def test_rm_then_prune_removes_exactly_the_unique_blobs(store, three):
    unique_to_app = digests(three[APP]) - digests(three[BASE]) - digests(three[OTHER])
    assert len(unique_to_app) == 3  # manifest, config, layer 3
    removed = remove_images(store, ["127.0.0.1:5000/app:1.0"])
    assert [r["ref"] for r in removed] == [APP]
    assert APP not in layout_refs(store) and BASE in layout_refs(store)
    # rm frees nothing by itself
    assert unique_to_app <= files_on_disk(store)
    result = gc.prune(store)
    assert {d for d, _, _ in result.blobs} == unique_to_app
    assert result.freed_bytes == sum(sizes(three[APP])[d] for d in unique_to_app)
    on_disk = files_on_disk(store)
    assert not unique_to_app & on_disk
    assert digests(three[BASE]) | digests(three[OTHER]) <= on_disk
    assert indexed(store) == on_disk


def test_rm_unknown_ref_is_an_error_naming_it_and_removes_nothing(store, three):
    with pytest.raises(NotCached) as info:
        remove_images(store, [BASE, "127.0.0.1:5000/nope:1"])
    assert "127.0.0.1:5000/nope:1" in info.value.message
    assert only_record(store, BASE) is not None


def test_dry_run_changes_nothing_and_predicts_the_real_prune(store, three):
    commit(store, b"garbage" * 300, "application/octet-stream")
    remove_images(store, [APP])
    files, idx, refs = files_on_disk(store), indexed(store), sorted(r.key for r in store.metadata.refs())
    layout = (store.root / "index.json").read_bytes()
    for policy in (gc.Policy(), gc.Policy(everything=True), gc.Policy(keep_storage=1), gc.Policy(older_than=1)):
        dry = gc.prune(store, policy, dry_run=True)
        assert dry.dry_run and dry.freed_bytes > 0
        assert files_on_disk(store) == files and indexed(store) == idx
        assert sorted(r.key for r in store.metadata.refs()) == refs
        assert (store.root / "index.json").read_bytes() == layout
    dry = gc.prune(store, dry_run=True)
    real = gc.prune(store)
    assert dry.to_json()["blobs"] == real.to_json()["blobs"]
    assert dry.freed_bytes == real.freed_bytes


def test_keep_storage_evicts_least_recently_used_first_and_keeps_shared(store, three):
    total = sum(os.path.getsize(store.blobs.path(Digest.parse(d))) for d in files_on_disk(store))
    unique_base = digests(three[BASE]) - digests(three[APP])  # base's manifest + config only
    base_only = sum(sizes(three[BASE])[d] for d in unique_base)
    # room for everything but base's own manifest and config: only base (the LRU) goes
    result = gc.prune(store, gc.Policy(keep_storage=total - base_only))
    assert [i.ref for i in result.images] == [BASE]
    assert {d for d, _, _ in result.blobs} == unique_base
    on_disk = files_on_disk(store)
    assert digests(three[APP]) <= on_disk, "a layer shared with a kept image was removed"
    assert result.kept_bytes == total - base_only <= result.target
    assert only_record(store, BASE) is None and only_record(store, APP) is not None
    assert layout_refs(store) == [APP, OTHER]


def test_keep_storage_order_follows_last_use_not_name(store, three):
    store.metadata.touch_refs(
        [only_record(store, BASE)], when=5000.0
    )  # base is now the most recently used; app the least
    total = sum(os.path.getsize(store.blobs.path(Digest.parse(d))) for d in files_on_disk(store))
    result = gc.prune(store, gc.Policy(keep_storage=total - 1))
    assert [i.ref for i in result.images] == [APP]
    result = gc.prune(store, gc.Policy(keep_storage=0))
    assert [i.ref for i in result.images] == [OTHER, BASE]
    assert files_on_disk(store) == set()


def test_keep_storage_that_already_fits_evicts_nothing(store, three):
    result = gc.prune(store, gc.Policy(keep_storage=10**12))
    assert result.images == [] and result.blobs == []


def test_older_than_evicts_images_unused_that_long(store, three):
    result = gc.prune(store, gc.Policy(older_than=1500.0), now=3600.0)  # cutoff 2100: base and app
    assert sorted(i.ref for i in result.images) == [APP, BASE]
    assert files_on_disk(store) == digests(three[OTHER])


def test_all_empties_the_store(store, three, tmp_path):
    with store.ingests.open(Digest.parse("sha256:" + "ab" * 32), 10) as ing:
        ing.write(b"12345")  # a killed pull: partial data, lock released
    result = gc.prune(store, gc.Policy(everything=True))
    assert len(result.images) == 3 and len(result.ingests) == 1
    assert files_on_disk(store) == set() and indexed(store) == set()
    assert list(store.metadata.refs()) == []
    assert layout_refs(store) == []
    assert list(store.ingests.entries()) == []
    assert (
        result.freed_bytes
        == sum(r.size for r in three.values())
        - sum(s for d, s in sizes(three[BASE]).items() if d in digests(three[APP]))
        + 5
    )


def test_leased_blobs_are_roots(store, three):
    data = b"being pulled right now" * 50
    with store.metadata.lease() as lease:
        digest = Digest.parse("sha256:" + __import__("hashlib").sha256(data).hexdigest())
        lease.add([digest])
        store.ingests.put(digest, data)  # committed; the ref is not written yet
        remove_images(store, [OTHER])
        result = gc.prune(store, gc.Policy(everything=True))
        assert store.blobs.has(digest)
        assert str(digest) not in {d for d, _, _ in result.blobs}
    result = gc.prune(store)
    assert str(digest) in {d for d, _, _ in result.blobs}
    assert not store.blobs.has(digest)


def test_lease_of_a_dead_process_is_not_a_root(store, three):
    data = b"left by a killed pull" * 10
    digest = commit(store, data, "application/octet-stream")
    script = textwrap.dedent(
        f"""
        import sys
        from cas.store import Store
        s = Store({str(store.home)!r})
        lease = s.metadata.lease([{str(digest)!r}])
        lease.__enter__()
        import os; os._exit(0)   # dies holding the lease record
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert str(digest) not in store.metadata.leased_digests()
    gc.prune(store)
    assert not store.blobs.has(digest)


def test_stale_ingest_is_removed_and_active_one_kept(store):
    stale = Digest.parse("sha256:" + "11" * 32)
    with store.ingests.open(stale, 100) as ing:
        ing.write(b"x" * 40)
    abandon(store, stale)
    active = Digest.parse("sha256:" + "22" * 32)
    with store.ingests.open(active, 100) as ing:
        ing.write(b"y" * 30)
        dry = gc.prune(store, dry_run=True)
        assert [str(i.digest) for i in dry.ingests] == [str(stale)]
        result = gc.prune(store)
        assert [str(i.digest) for i in result.ingests] == [str(stale)]
        assert result.freed_bytes == 40
        remaining = {str(i.digest) for i in store.ingests.entries()}
        assert remaining == {str(active)}


def test_prune_never_follows_a_symlink_out_of_the_store(store, three, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    precious = outside / ("ab" * 32)
    precious.write_bytes(b"not the store's")
    sha = store.blobs.blobs_dir / "sha256"
    os.symlink(precious, sha / ("cd" * 32))  # a valid digest name pointing out
    os.symlink(precious, sha / "not-a-digest")
    os.symlink(outside, store.blobs.blobs_dir / "sha512")  # a whole algorithm directory pointing out
    (outside / ("ef" * 64)).write_bytes(b"also not the store's")
    os.symlink(outside, sha / "dirlink")
    (sha / "junk").write_bytes(b"junk")
    (sha / "subdir").mkdir()
    (sha / "subdir" / "escape").symlink_to(precious)

    dry = gc.prune(store, dry_run=True)
    assert sorted(s.kind for s in dry.strays) == ["directory", "not a digest"] + ["symlink"] * 4
    gc.prune(store, gc.Policy(everything=True))
    assert precious.read_bytes() == b"not the store's"
    assert (outside / ("ef" * 64)).read_bytes() == b"also not the store's"
    assert sorted(p.name for p in outside.iterdir()) == sorted([precious.name, "ef" * 64])
    assert list(sha.iterdir()) == []
    assert not (store.blobs.blobs_dir / "sha512").exists()


def test_crash_after_index_commit_leaves_orphans_the_next_prune_removes(store, three):
    remove_images(store, [OTHER])
    victims = digests(three[OTHER])
    with store.metadata.transact():  # what a prune killed after its index transaction leaves
        for d in victims:
            store.metadata.remove_blob(Digest.parse(d))
    assert victims <= files_on_disk(store)
    result = gc.prune(store)
    assert {d for d, _, _ in result.blobs} == victims
    assert all(not indexed for _, _, indexed in result.blobs)
    assert not victims & files_on_disk(store)


def test_prune_waits_for_a_shared_holder_then_times_out_with_advice(store, three):
    with store_lock_held(store.home, shared=True) as holder:
        notices = []
        started = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            gc.prune(store, gc.Policy(everything=True), lock_timeout=0.5, on_wait=notices.append)
        assert time.monotonic() - started >= 0.5  # it waited the whole timeout...
        assert holder.poll() is None  # ...and gave up while the holder still held the lock
        assert "exclusive lock" in info.value.message and "--lock-timeout" in info.value.hint
        assert notices and "waiting" in notices[0]
        assert only_record(store, BASE) is not None  # nothing happened
        # a dry run needs no lock
        assert gc.prune(store, gc.Policy(everything=True), dry_run=True).images
    assert len(gc.prune(store, gc.Policy(everything=True), lock_timeout=5).images) == 3


def test_malformed_ref_record_stops_prune(store, three):
    write_raw(store, "ref:127.0.0.1:5000/broken:1", {"ref": "x"})
    with pytest.raises(StoreError) as info:
        gc.prune(store)
    assert "broken" in info.value.message and "verify --repair" in info.value.hint
    assert len(files_on_disk(store)) > 0


def test_prune_reports_as_freed_only_what_it_removed(store, three, monkeypatch):
    stuck = commit(store, b"cannot be unlinked" * 50, "application/octet-stream")  # 900 bytes
    goes = commit(store, b"goes" * 25, "application/octet-stream")  # 100 bytes
    sha = store.blobs.blobs_dir / "sha256"
    (sha / "stuck-junk").write_bytes(b"j" * 70)
    (sha / "junk").write_bytes(b"k" * 30)
    real_unlink = os.unlink

    def unlink(path, *, dir_fd=None):  # what a read-only mount or an immutable file answers
        if path in (stuck.hex, "stuck-junk"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)
    result = gc.prune(store)
    assert [d for d, _, _ in result.blobs] == [str(goes)]
    assert [s.path.name for s in result.strays] == ["junk"]
    assert result.freed_bytes == 100 + 30
    freed = result.to_json()
    assert freed["freed_blobs"] == 1 and freed["freed_stray_files"] == 1 and freed["freed_bytes"] == 130
    assert sorted(result.errors) == [
        f"could not remove blobs/sha256/{stuck.hex}: Permission denied",
        "could not remove blobs/sha256/stuck-junk: Permission denied",
    ]
    assert store.blobs.has(stuck) and (sha / "stuck-junk").exists()
    assert str(stuck) not in indexed(store)  # index first: its record went before the unlink failed

    monkeypatch.undo()
    again = gc.prune(store)  # the leftover is an orphan now; the next prune takes it
    assert [(d, x) for d, _, x in again.blobs] == [(str(stuck), False)]
    assert again.freed_bytes == 900 + 70 and not again.errors


def test_a_blob_with_only_an_index_record_counts_as_removed(store, three):
    ghost = commit(store, b"file lost, record kept" * 10, "application/octet-stream")
    store.blobs.path(ghost).unlink()
    result = gc.prune(store)
    assert result.blobs == [(str(ghost), 0, True)] and not result.errors
    assert str(ghost) not in indexed(store)


def test_stray_directory_counts_the_bytes_of_its_contents_without_following_links(store, three, tmp_path):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "big").write_bytes(b"o" * 10_000)
    (outside / "sub" / "also").write_bytes(b"o" * 5_000)
    stray = store.blobs.blobs_dir / "sha256" / "subdir"
    (stray / "deeper").mkdir(parents=True)
    (stray / "a").write_bytes(b"a" * 1000)
    (stray / "deeper" / "b").write_bytes(b"b" * 234)
    (stray / "link").symlink_to(outside / "big")
    (stray / "deeper" / "dirlink").symlink_to(outside)

    dry = gc.prune(store, dry_run=True)
    assert [(s.kind, s.size) for s in dry.strays] == [("directory", 1234)]
    assert dry.freed_bytes == 1234
    du = usage(store)
    assert du["stray_bytes"] == 1234 and du["reclaimable"]["size"] == 1234
    result = gc.prune(store)
    assert result.freed_bytes == 1234 and not stray.exists()
    assert (outside / "big").stat().st_size == 10_000 and (outside / "sub" / "also").exists()


def test_prune_walks_the_files_before_its_index_transaction(store, three, monkeypatch):
    """Under the exclusive store lock files cannot change: the walk must not hold the index's write lock."""
    commit(store, b"garbage" * 100, "application/octet-stream")
    with store.ingests.open(Digest.parse("sha256:" + "33" * 32), 100) as ing:
        ing.write(b"partial")
    abandon(store, Digest.parse("sha256:" + "33" * 32))
    database = store.root / "index" / "cache.db"
    assert database.is_file()
    seen: list[str] = []

    def index_writable(where: str) -> None:
        con = sqlite3.connect(database, timeout=0, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")  # what any index writer (cas rm, a pull's lease) starts with
            con.execute("ROLLBACK")
            seen.append(f"{where}: writable")
        except sqlite3.OperationalError as exc:
            seen.append(f"{where}: {exc}")
        finally:
            con.close()

    iter_files, ingests = store.blobs.iter_files, store.ingests.entries

    def walking_files():
        index_writable("blobs/ walk")
        yield from iter_files()

    def walking_ingests():
        index_writable("ingest/ walk")
        yield from ingests()

    real_is_locked = blobs_module.is_locked

    def is_locked(path):
        index_writable("ingest lock test")
        return real_is_locked(path)

    monkeypatch.setattr(store.blobs, "iter_files", walking_files)
    monkeypatch.setattr(store.ingests, "entries", walking_ingests)
    monkeypatch.setattr(blobs_module, "is_locked", is_locked)
    result = gc.prune(store, gc.Policy(everything=True))
    assert seen == ["blobs/ walk: writable", "ingest/ walk: writable", "ingest lock test: writable"]
    assert len(result.images) == 3 and len(result.ingests) == 1
    assert files_on_disk(store) == set() and indexed(store) == set()


def test_each_ingest_lock_is_tested_once_per_command(store, three, monkeypatch):
    for n in (1, 2, 3):
        with store.ingests.open(Digest.parse("sha256:" + f"{n}{n}" * 32), 100) as ing:
            ing.write(b"stale")
        abandon(store, Digest.parse("sha256:" + f"{n}{n}" * 32))
    real_is_locked = blobs_module.is_locked
    tested: list[str] = []

    def is_locked(path):
        tested.append(path.parent.name)
        return real_is_locked(path)

    monkeypatch.setattr(blobs_module, "is_locked", is_locked)
    with store.ingests.open(Digest.parse("sha256:" + "44" * 32), 100) as running:
        running.write(b"in progress")
        entries = sorted(p.name for p in store.ingests.dir.iterdir())
        assert len(entries) == 4
        for command in (
            lambda: usage(store),
            lambda: gc.prune(store, dry_run=True),
            lambda: verify(store),
            lambda: verify(store, repair=True),
        ):
            tested.clear()
            command()
            assert sorted(tested) == entries
        tested.clear()
        result = gc.prune(store)
        assert tested == [f"sha256-{'44' * 32}"] and result.ingests == []
