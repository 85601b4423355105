"""cas verify on stores built directly: corrupt, missing, orphan, unindexed, stale ingest; --repair."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_lifecycle_support import (
    APP,
    BASE,
    abandon,
    files_on_disk,
    flip_byte,
    images,
    indexed,
    only_record,
    store_image,
    write_raw,
)

from cas import gc, snapshot
from cas.digest import Digest, of_bytes
from cas.record_image import record_blob
from cas.store import Store
from cas.verify import verify


@pytest.fixture
def two(store: Store):
    imgs = images({"base": [1, 2], "app": [1, 2, 3]})
    return {
        BASE: store_image(store, BASE, imgs["base"]),
        APP: store_image(store, APP, imgs["app"]),
        "images": imgs,
    }


def named(ref: str) -> str:
    """How verify names an image: its reference and platform (the support images are linux/amd64)."""
    return f"{ref} (linux/amd64)"


def kinds(report) -> list[tuple[str, str]]:
    return [(f.kind, f.what) for f in report.findings]


def layout_refs(store: Store) -> list[str]:
    index = json.loads((store.root / "index.json").read_text())
    return [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]


def test_clean_store_verifies(store, two):
    for deep in (False, True):
        report = verify(store, deep=deep)
        assert report.ok, report.findings
        assert report.checked_blobs == len(files_on_disk(store))


def test_flipped_byte_is_found_named_repaired_and_restored(store, two):
    shared_layer = str(two[BASE].blobs[2].digest)
    path = store.blobs.path(Digest.parse(shared_layer))
    flip_byte(path, 200)

    report = verify(store)
    assert kinds(report) == [("corrupt", shared_layer)]
    assert report.findings[0].refs == [named(APP), named(BASE)]
    assert "blake3" in report.findings[0].detail
    assert path.exists(), "verify without --repair changed the store"

    repaired = verify(store, repair=True)
    assert repaired.needs_pull == [APP, BASE]
    assert repaired.findings[0].repaired.startswith("deleted")
    assert not path.exists() and shared_layer not in indexed(store)
    for ref in (APP, BASE):
        assert only_record(store, ref).needs_pull is True
    # index.json keeps listing them (the OCI layout spec allows missing blobs); readers get a missing-blob error
    assert layout_refs(store) == [APP, BASE]

    # still incomplete until the next pull: verify keeps saying so
    after = verify(store)
    assert kinds(after) == [("missing", shared_layer), ("needs-pull", named(APP)), ("needs-pull", named(BASE))]
    assert not after.ok

    # what the next pull does: commit the blob again and write a fresh record (no needs_pull)
    imgs = two["images"]
    store_image(store, BASE, imgs["base"])
    store_image(store, APP, imgs["app"])
    assert verify(store, deep=True).ok
    assert layout_refs(store) == [APP, BASE]


def test_restoring_a_shared_blob_clears_the_mark_of_every_image_it_completes(store, two):
    """What a pull (or an import) does after committing blobs: every marked record made whole loses the mark."""
    from cas.record_image import clear_marks

    layer = two[BASE].blobs[-1]  # shared with app
    data = store.blobs.read(layer.digest)
    flip_byte(store.blobs.path(layer.digest))
    verify(store, repair=True)
    assert only_record(store, APP).needs_pull and only_record(store, BASE).needs_pull
    assert clear_marks(store, set()) == []  # nothing downloaded: no scan, nothing cleared
    store.ingests.put(layer.digest, data)
    cleared = clear_marks(store, {layer.digest})
    assert sorted(r.ref for r in cleared) == [APP, BASE]
    assert not only_record(store, APP).needs_pull and not only_record(store, BASE).needs_pull


def test_repair_clears_the_mark_once_every_blob_is_back(store, two):
    layer = str(two[BASE].blobs[-1].digest)  # shared with app
    flip_byte(store.blobs.path(Digest.parse(layer)))
    verify(store, repair=True)
    store_image(store, APP, two["images"]["app"])  # app pulled again; base not yet
    report = verify(store)
    assert kinds(report) == [("needs-pull", named(BASE))]
    assert "every blob is back" in report.findings[0].detail
    repaired = verify(store, repair=True)
    assert repaired.findings[0].repaired == "mark cleared" and repaired.needs_pull == []
    assert not only_record(store, BASE).needs_pull
    assert layout_refs(store) == [APP, BASE]
    assert verify(store, deep=True).ok


def test_truncated_blob_is_corrupt_by_size(store, two):
    config = str(two[APP].config)
    path = store.blobs.path(Digest.parse(config))
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.truncate(10)
    report = verify(store)
    assert kinds(report) == [("corrupt", config)]
    assert "size is 10 bytes" in report.findings[0].detail
    assert report.findings[0].refs == [named(APP)]


def test_deep_rehashes_with_the_digests_own_algorithm(store):
    """A file whose blake3 was recorded from wrong bytes passes the fast check; --deep catches it."""
    wrong = b"these are not the bytes the name promises"
    claimed = of_bytes(b"the real content")
    path = store.blobs.path(claimed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wrong)
    import blake3

    store.metadata.put_blob(claimed, size=len(wrong), media_type="x", fingerprint=blake3.blake3(wrong).hexdigest())
    assert verify(store).ok
    deep = verify(store, deep=True)
    assert kinds(deep) == [("corrupt", str(claimed))]
    assert str(of_bytes(wrong)) in deep.findings[0].detail


def test_missing_blob_is_reported_and_repair_marks_the_ref(store, two):
    layer3 = str(two[APP].blobs[-1].digest)
    path = store.blobs.path(Digest.parse(layer3))
    path.unlink()
    report = verify(store)
    assert kinds(report) == [("missing", layer3)]
    assert report.findings[0].refs == [named(APP)]
    repaired = verify(store, repair=True)
    assert repaired.needs_pull == [APP]
    assert only_record(store, APP).needs_pull is True
    assert not only_record(store, BASE).needs_pull
    assert layout_refs(store) == [APP, BASE]


def test_orphans_and_stale_ingests_are_reported_and_removed(store, two, tmp_path):
    orphan = of_bytes(b"committed, never indexed")
    store.ingests.put(orphan, b"committed, never indexed")
    outside = tmp_path / "precious"
    outside.write_bytes(b"outside the store")
    sha = store.blobs.blobs_dir / "sha256"
    (sha / ("ee" * 32)).symlink_to(outside)
    (sha / "README").write_text("not a blob")
    with store.ingests.open(Digest.parse("sha256:" + "12" * 32), 50) as ing:
        ing.write(b"partial")
    abandon(store, Digest.parse("sha256:" + "12" * 32))

    report = verify(store)
    found = kinds(report)
    assert ("orphan", str(orphan)) in found
    assert ("orphan", f"blobs/sha256/{'ee' * 32}") in found
    assert ("orphan", "blobs/sha256/README") in found
    assert ("stale-ingest", f"ingest/sha256-{'12' * 32}") in found
    assert len(found) == 4

    repaired = verify(store, repair=True)
    assert len(repaired.findings) == 4 and all(f.repaired for f in repaired.findings), repaired.findings
    assert outside.read_bytes() == b"outside the store"
    assert verify(store).ok
    assert only_record(store, BASE) and not only_record(store, BASE).needs_pull


def test_unindexed_blob_a_ref_needs_is_reindexed(store, two):
    config = two[BASE].config
    store.metadata.remove_blob(config)
    report = verify(store)
    assert kinds(report) == [("unindexed", str(config))]
    repaired = verify(store, repair=True)
    assert repaired.findings[0].repaired == "content verified and re-indexed"
    assert store.blobs.has(config) and store.metadata.get_blob(config)["media_type"].endswith("config.v1+json")
    assert verify(store, deep=True).ok


def test_leased_unindexed_blob_is_a_pull_in_progress_not_an_orphan(store):
    data = b"just committed by a running pull"
    digest = of_bytes(data)
    with store.metadata.lease([digest]):
        store.ingests.put(digest, data)
        assert verify(store).ok


@pytest.mark.parametrize("recorded", [True, False], ids=["committed-and-recorded", "committed-still-leased"])
def test_a_pull_that_commits_between_the_index_read_and_the_disk_walk_is_no_orphan(store, monkeypatch, recorded):
    """verify shares the store lock with pulls: the snapshot reads the index, then the disk, and a
    pull may lease and commit a blob in between (seen once in the concurrent stress test)."""
    data = b"committed by a pull while verify was reading"
    digest = of_bytes(data)
    held = store.metadata.lease()
    lease = held.__enter__()
    walk = snapshot.read_disk

    def pull_then_walk(store_, snap):
        lease.add([digest])
        store.ingests.put(digest, data, on_commit=(lambda info: record_blob(store, info, "x")) if recorded else None)
        if recorded:
            held.__exit__(None, None, None)  # a pull drops its lease only after recording
        walk(store_, snap)

    monkeypatch.setattr(snapshot, "read_disk", pull_then_walk)
    try:
        report = verify(store)
    finally:
        if not recorded:
            held.__exit__(None, None, None)
    assert report.ok, report.findings
    assert str(digest) in files_on_disk(store)  # the walk saw it


def test_malformed_entries_are_reported_and_dropped(store, two):
    write_raw(store, "ref:127.0.0.1:5000/broken:1", {"nonsense": True})
    report = verify(store)
    assert kinds(report) == [("bad-index-entry", "ref:127.0.0.1:5000/broken:1")]
    verify(store, repair=True)
    assert only_record(store, "127.0.0.1:5000/broken:1") is None
    assert verify(store).ok
    gc.prune(store)  # prune refused while it was there


def test_cli_verify_exit_codes_and_json(store, two):
    home = store.home
    layer = str(two[APP].blobs[-1].digest)
    flip_byte(store.blobs.path(Digest.parse(layer)))
    store.close()
    env = {**os.environ, "CAS_HOME": str(home)}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "cli", "verify", *args], env=env, capture_output=True, text=True, timeout=60
        )

    found = cli()
    assert found.returncode == 1
    assert f"corrupt: {layer}" in found.stdout and APP in found.stdout
    assert "--repair" in found.stderr
    as_json = cli("--json", "--deep")
    assert as_json.returncode == 1
    body = json.loads(as_json.stdout)
    assert body["ok"] is False and body["counts"] == {"corrupt": 1} and body["deep"] is True
    fixed = cli("--repair")
    assert fixed.returncode == 1 and "repaired: deleted" in fixed.stdout
    assert f"cas pull {APP}" in fixed.stdout
    still = cli("--json")
    assert json.loads(still.stdout)["counts"] == {"missing": 1, "needs-pull": 1}


def test_repair_reads_an_unindexed_blob_once_and_records_its_blake3(store, two, monkeypatch):
    import builtins

    import blake3

    config = two[APP].config
    path = store.blobs.path(config)
    store.metadata.remove_blob(config)
    opened: list[str] = []
    real_os_open, real_open = os.open, builtins.open

    def is_victim(file) -> bool:
        return isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(path)

    def os_open(file, flags, mode=0o777, *, dir_fd=None):
        if is_victim(file):
            opened.append("os.open")
        return real_os_open(file, flags, mode, dir_fd=dir_fd)

    def open_(file, *args, **kwargs):
        if is_victim(file):
            opened.append("open")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", open_)
    repaired = verify(store, repair=True)
    monkeypatch.undo()
    assert kinds(repaired) == [("unindexed", str(config))]
    assert repaired.findings[0].repaired == "content verified and re-indexed"
    assert len(opened) == 1, f"the blob was read {len(opened)} times: {opened}"
    record = store.metadata.get_blob(config)
    assert record["blake3"] == blake3.blake3(path.read_bytes()).hexdigest()
    assert record["size"] == path.stat().st_size
    assert verify(store, deep=True).ok


def test_repair_deletes_an_unindexed_blob_whose_content_is_not_its_name(store, two):
    config = two[APP].config
    store.metadata.remove_blob(config)
    flip_byte(store.blobs.path(config), 5)
    repaired = verify(store, repair=True)
    assert kinds(repaired) == [("unindexed", str(config))]
    assert "content hashes to sha256:" in repaired.findings[0].detail
    assert repaired.findings[0].repaired.startswith("deleted") and repaired.needs_pull == [APP]
    assert not store.blobs.has(config) and store.metadata.get_blob(config) is None
