"""A full disk must not lock the user out, on a real tmpfs filled to the last byte.

Read-only commands (images, inspect, du, verify, export to another filesystem) work because
opening the index writes nothing; rm, prune and verify --repair work because they first release
the store's ballast, which gives sqlite room for its transaction.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from test_lifecycle_support import tiny_record


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def _fill(disk: Path) -> Path:
    """Write a file until the disk refuses one more byte."""
    filler = disk / "filler"
    chunk = bytes(1 << 16)
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        try:
            while True:
                fh.write(b"x")
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    assert os.statvfs(disk).f_bavail == 0
    return filler


@pytest.fixture
def full_store(cas, tmp_path, registry, test_images):
    """A store on a 16 MiB tmpfs holding base and app, then the disk filled up."""
    with _tmpfs(tmp_path / "disk", "16m") as disk:
        home = disk / "cas"
        env = {"CAS_HOME": str(home)}
        refs = [test_images.ref(registry, "base"), test_images.ref(registry, "app")]
        cas("pull", *refs, env=env)
        _fill(disk)
        yield home, env, refs


def test_read_only_commands_work_on_a_full_disk(cas, full_store, tmp_path):
    home, env, (base, app) = full_store
    rows = json.loads(cas("images", "--json", env=env).stdout)["images"]
    assert sorted(r["ref"] for r in rows) == sorted([base, app])
    assert json.loads(cas("inspect", "--json", app, env=env).stdout)
    assert cas("du", env=env).returncode == 0
    verified = cas("verify", "--json", env=env, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["ok"] is True

    archive = tmp_path / "app.tar"  # another filesystem than the full one
    cas("export", app, "-o", archive, env=env)
    with tarfile.open(archive) as tar:
        assert "manifest.json" in tar.getnames()
    # an export into the full disk itself fails in one line and leaves nothing behind
    inside = cas("export", app, "-o", home / "app.tar", env=env, check=False)
    assert inside.returncode == 1 and inside.stderr.startswith("error: no space left on device"), inside.stderr
    assert not any(p.name.startswith(".app.tar") for p in home.iterdir())
    assert os.statvfs(home).f_bavail == 0  # nothing above wrote to the full disk


def test_rm_and_prune_free_space_on_a_full_disk(cas, full_store, test_images):
    home, env, (base, app) = full_store
    assert (home / "v1" / "ballast").stat().st_blocks * 512 >= 4 << 20  # the pull made it, allocated (not sparse)
    removed = cas("rm", app, env=env, check=False)
    assert removed.returncode == 0, removed.stderr
    assert not (home / "v1" / "ballast").exists()  # released to make room for the index transaction
    pruned = cas("prune", "--json", env=env, check=False)
    assert pruned.returncode == 0, pruned.stderr
    freed = json.loads(pruned.stdout)
    own = set(test_images.app.digests) - set(test_images.base.digests)  # app's manifest, config, 2 own layers
    assert freed["freed_images"] == 0 and freed["freed_blobs"] == len(own) and freed["freed_bytes"] > 0
    assert [r["ref"] for r in json.loads(cas("images", "--json", env=env).stdout)["images"]] == [base]

    pruned = cas("prune", "--all", "--json", env=env, check=False)
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(cas("images", "--json", env=env).stdout)["images"] == []
    (home.parent / "filler").unlink()
    cas("prune", env=env)  # with room again, the ballast goes back
    assert (home / "v1" / "ballast").exists()


def test_opening_the_index_writes_nothing(tmp_path):
    from cas.metadata import Metadata

    index = Metadata(tmp_path / "index")
    index.put_ref(tiny_record("127.0.0.1:5000/app:1"))
    index.close()
    db = tmp_path / "index" / "cache.db"
    before = db.stat()
    for _ in range(3):
        reader = Metadata(tmp_path / "index")
        assert reader.get_ref("127.0.0.1:5000/app:1", "linux/amd64") is not None
        assert reader.ref_records("127.0.0.1:5000/app:1")
        reader.close()
    after = db.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)


def test_on_a_disk_with_room_the_ballast_stays_put(cas, cas_home, registry, test_images):
    ref = test_images.ref(registry, "base")
    cas("pull", ref)
    ballast = cas_home / "v1" / "ballast"
    before = ballast.stat()
    assert before.st_size == 4 << 20
    cas("rm", ref)
    cas("prune")
    assert ballast.stat().st_ino == before.st_ino  # not deleted and re-made by every rm and prune


def test_verify_repair_works_on_a_full_disk(cas, full_store, test_images):
    home, env, (base, app) = full_store
    own_layer = test_images.app.layers[3].digest  # app's data layer, which base does not list
    algorithm, hexpart = own_layer.split(":")
    blob = home / "v1" / "blobs" / algorithm / hexpart
    with open(blob, "r+b") as fh:  # one byte changed in place: no new block on the full disk
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert os.statvfs(home).f_bavail == 0

    repaired = cas("verify", "--repair", "--json", env=env, check=False)
    # documented: exit 1 when it found anything, even with --repair (the repair is in the report)
    assert repaired.returncode == 1 and repaired.stdout, repaired.stderr
    report = json.loads(repaired.stdout)
    assert report["errors"] == [], report
    [finding] = report["findings"]
    assert (finding["kind"], finding["what"]) == ("corrupt", own_layer)
    assert finding["repaired"] == f"deleted; refs marked needs_pull: {app} (linux/amd64)"
    assert report["needs_pull_refs"] == [app]
    assert not blob.exists()
    assert not (home / "v1" / "ballast").exists()  # released to make room for the index transaction
    rows = {r["ref"]: r for r in json.loads(cas("images", "--json", env=env).stdout)["images"]}
    assert rows[app]["needs_pull"] is True and rows[base]["needs_pull"] is False
    again = cas("verify", "--json", env=env, check=False)  # the repair was recorded: the blob's gone, the mark stays
    found = [(f["kind"], f["what"]) for f in json.loads(again.stdout)["findings"]]
    assert found == [("missing", own_layer), ("needs-pull", f"{app} (linux/amd64)")]
