"""A blob changed after commit is never exported, and the next pull heals it.

The store records each blob file's stat fingerprint at commit (inode, size, mtime_ns,
ctime_ns); an export and a pull compare it and re-hash on any difference. These tests
change real files under a real store, with the real registry and skopeo.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest


def _flip_byte(path: Path, offset: int = 100) -> None:
    """Change one byte in place, size unchanged (root may write a 0444 file)."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def _blob_path(home: Path, digest: str) -> Path:
    algorithm, hexpart = digest.split(":")
    return home / "v1" / "blobs" / algorithm / hexpart


def _records(home: Path) -> dict[str, dict]:
    from cas.store import Store

    store = Store(home)
    try:
        return {str(d): r for d, r in store.metadata.blobs()}
    finally:
        store.close()


@pytest.fixture
def app(cas, cas_home, registry, test_images):
    ref = test_images.ref(registry, "app")
    cas("pull", ref)
    layer = test_images.app.blobs[4].digest  # the 4th layer: app's own data (config is blobs[0])
    return ref, layer, _blob_path(cas_home, layer)


def test_a_byte_flipped_in_a_stored_layer_is_never_exported(cas, cas_home, app, tmp_path):
    ref, layer, path = app
    _flip_byte(path)
    for fmt in ("docker-archive", "oci-archive", "oci-dir"):
        out = tmp_path / f"out-{fmt}"
        proc = cas("export", "--format", fmt, ref, "-o", out, check=False)
        assert proc.returncode == 1, (fmt, proc.stderr)
        assert proc.stderr.startswith("error: cannot export: 1 blob(s) in the store changed after they were committed")
        assert f"{layer} (layer 4/5 of {ref}): content changed since commit" in proc.stderr
        assert f"hint: run `cas pull {ref}`" in proc.stderr and "Traceback" not in proc.stderr
        assert not any(p.name.startswith((f"out-{fmt}", f".out-{fmt}")) for p in tmp_path.iterdir())  # nothing left
    streamed = cas("export", ref, "-o", "-", text=False, check=False)
    assert streamed.returncode == 1 and streamed.stdout == b""  # checked before the first byte


def test_the_next_pull_downloads_a_changed_blob_again_and_replaces_it(cas, cas_home, app, registry, skopeo, tmp_path):
    ref, layer, path = app
    _flip_byte(path)
    mark = registry.mark()
    out = json.loads(cas("pull", "--json", ref).stdout)["images"][0]
    assert [r.reference for r in registry.blob_gets(mark)] == [layer]  # that blob only
    assert out["downloaded_blobs"] == 1
    assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == layer
    assert oct(path.stat().st_mode & 0o777) == "0o444"
    assert _records(cas_home)[layer]["stat"]["ino"] == path.stat().st_ino

    archive = tmp_path / "app.tar"
    cas("export", ref, "-o", archive)
    skopeo.copy(f"docker-archive:{archive}", f"oci:{tmp_path / 'checked'}:app")  # skopeo checks every digest


def test_a_changed_manifest_is_fetched_again_by_a_pull_by_digest(cas, cas_home, registry, test_images):
    base = test_images.base
    by_digest = f"{registry.host}/base@{base.digest}"
    cas("pull", by_digest)
    manifest = _blob_path(cas_home, base.digest)
    _flip_byte(manifest, offset=len(manifest.read_bytes()) // 2)
    mark = registry.mark()
    cas("pull", by_digest)
    assert len(registry.manifest_requests(mark)) == 1  # no longer "no request at all": the copy is bad
    assert "sha256:" + hashlib.sha256(manifest.read_bytes()).hexdigest() == base.digest


def test_metadata_changes_cost_one_re_hash_then_the_new_fingerprint_is_trusted(cas, cas_home, app, tmp_path):
    ref, layer, path = app
    committed = _records(cas_home)[layer]["stat"]
    assert committed == {
        "ino": path.stat().st_ino,
        "size": path.stat().st_size,
        "mtime_ns": path.stat().st_mtime_ns,
        "ctime_ns": path.stat().st_ctime_ns,
    }
    os.utime(path)  # a touch: same bytes, new mtime and ctime
    cas("export", ref, "-o", tmp_path / "one.tar")
    refreshed = _records(cas_home)[layer]["stat"]
    assert refreshed != committed and refreshed["mtime_ns"] == path.stat().st_mtime_ns
    # an oci-dir export hard-links the file (a new ctime) and records that, so the next export trusts it
    cas("export", "--format", "oci-dir", ref, "-o", tmp_path / "layout")
    assert path.stat().st_nlink == 2
    assert _records(cas_home)[layer]["stat"]["ctime_ns"] == path.stat().st_ctime_ns


def test_records_from_before_fingerprints_keep_working_and_get_one(cas, cas_home, app, registry, test_images, tmp_path):
    from cas.digest import Digest
    from cas.store import Store

    ref, layer, path = app
    store = Store(cas_home)
    try:
        for digest, record in list(store.metadata.blobs()):  # as a store made by an older cas
            record.pop("stat")
            store.metadata._db.set(f"blob:{digest}", record)
        assert "stat" not in store.metadata.get_blob(Digest.parse(layer))
    finally:
        store.close()
    mark = registry.mark()
    assert json.loads(cas("pull", "--json", ref).stdout)["images"][0]["downloaded_blobs"] == 0
    assert registry.blob_gets(mark) == []
    layers = {b.digest for b in test_images.app.blobs}  # config and layers: what a pull confirms
    assert all("stat" in record for digest, record in _records(cas_home).items() if digest in layers)
    cas("export", ref, "-o", tmp_path / "app.tar")
    assert all("stat" in record for record in _records(cas_home).values())  # the export re-hashed the manifest
    with tarfile.open(tmp_path / "app.tar") as tar:
        assert f"blobs/sha256/{layer[7:]}" in tar.getnames()


def _rot_silently(home: Path, digest: str) -> None:
    """Flip a byte, then record the file's new stat as its fingerprint: bit rot that no stat can see."""
    _flip_byte(_blob_path(home, digest))
    _trust_as_is(home, digest)


def _trust_as_is(home: Path, digest: str) -> None:
    from cas.digest import Digest
    from cas.store import Store
    from cas.store.fs import stat_fingerprint

    path = _blob_path(home, digest)
    store = Store(home)
    try:
        store.metadata.set_blob_stats({Digest.parse(digest): stat_fingerprint(os.lstat(path))})
    finally:
        store.close()


def test_export_verify_re_hashes_every_blob_and_catches_what_no_stat_can_see(cas, cas_home, app, tmp_path):
    ref, layer, _ = app
    good = json.loads(cas("export", "--verify", "--json", ref, "-o", tmp_path / "good.tar").stdout)
    assert good["verified"] is True and good["exported_blobs"] == 7

    _rot_silently(cas_home, layer)
    assert cas("export", ref, "-o", tmp_path / "unverified.tar").returncode == 0  # the stat check cannot see it
    for fmt in ("docker-archive", "oci-archive", "oci-dir"):
        proc = cas("export", "--verify", "--format", fmt, ref, "-o", tmp_path / f"bad-{fmt}", check=False)
        assert proc.returncode == 1, (fmt, proc.stderr)
        assert f"{layer}: content hashes to sha256:" in proc.stderr and "(found by --verify)" in proc.stderr
        assert proc.stderr.rstrip().endswith("nothing was kept"), proc.stderr
        assert not any(p.name.startswith(("bad-", ".bad-")) for p in tmp_path.iterdir())

    _trust_as_is(cas_home, layer)  # the failed oci-dir export linked and unlinked it: its ctime moved
    streamed = cas("export", "--verify", ref, "-o", "-", text=False, check=False)
    assert streamed.returncode == 1 and len(streamed.stdout) > 0  # the reader got the blobs before the bad one
    assert f"the reader already got {len(streamed.stdout)} bytes of an incomplete archive: discard it" in (
        streamed.stderr
    )
    assert "nothing was kept" not in streamed.stderr


def test_a_stream_that_fails_mid_way_says_the_reader_got_a_partial_archive(cas_home, app, tmp_path):
    import subprocess
    import sys

    ref, _, _ = app
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], check=True)
    try:
        with open(small / "app.tar", "wb") as out:  # `cas export -o - > app.tar` on a disk too small for it
            proc = subprocess.run(
                [sys.executable, "-m", "cli", "export", ref, "-o", "-"],
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                cwd=Path(__file__).resolve().parent.parent,
                env={**os.environ, "CAS_HOME": str(cas_home)},
            )
        got = (small / "app.tar").stat().st_size
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert proc.returncode == 1 and proc.stderr.startswith("error: no space left on device"), proc.stderr
    assert "nothing was kept" not in proc.stderr
    assert f"the reader already got {got} bytes of an incomplete archive: discard it" in proc.stderr


@pytest.mark.parametrize("role", ["manifest", "config"])
def test_a_changed_manifest_or_config_fails_the_export_naming_it(role, cas, cas_home, app, test_images, tmp_path):
    ref, _, _ = app
    digest = test_images.app.digest if role == "manifest" else test_images.app.config_blob.digest
    path = _blob_path(cas_home, digest)
    _flip_byte(path, offset=len(path.read_bytes()) - 30)  # inside a digest string: still valid JSON
    proc = cas("export", ref, "-o", tmp_path / "app.tar", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{digest} ({role} of {ref}): content hashes to sha256:" in proc.stderr, proc.stderr
    assert list(tmp_path.glob("*app.tar*")) == []
    healed = json.loads(cas("export", "--pull", "--json", ref, "-o", tmp_path / "app.tar").stdout)
    assert healed["pulled_refs"] == [ref]
    assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_a_delta_checks_only_the_blobs_it_carries(cas, cas_home, app, registry, test_images, tmp_path):
    ref, own_layer, _ = app
    base = test_images.ref(registry, "base")
    cas("pull", base)
    shared = test_images.base.blobs[1].digest  # base's first layer, which app lists too
    _flip_byte(_blob_path(cas_home, shared))
    delta = json.loads(cas("export", ref, "--since", base, "-o", tmp_path / "d.tar", "--json").stdout)
    assert delta["delta"]["required_blobs"] >= 1  # the changed layer is the receiver's business, not carried
    _flip_byte(_blob_path(cas_home, own_layer))
    proc = cas("export", ref, "--since", base, "-o", tmp_path / "d2.tar", check=False)
    assert proc.returncode == 1 and f"{own_layer} (layer 4/5 of {ref})" in proc.stderr
    assert shared not in proc.stderr


def test_export_pull_downloads_exactly_the_changed_blob_again_then_exports(
    cas, cas_home, app, registry, skopeo, tmp_path
):
    ref, layer, path = app
    _flip_byte(path)
    refused = cas("export", ref, "-o", tmp_path / "refused.tar", check=False)  # without --pull: as before
    assert refused.returncode == 1 and f"hint: run `cas pull {ref}`: it downloads them again" in refused.stderr
    mark = registry.mark()
    archive = tmp_path / "app.tar"
    out = json.loads(cas("export", "--pull", "--json", ref, "-o", archive).stdout)
    assert out["pulled_refs"] == [ref] and out["exported_blobs"] == 7
    assert [r.reference for r in registry.blob_gets(mark)] == [layer]  # that blob only, once
    assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == layer
    skopeo.copy(f"docker-archive:{archive}", f"oci:{tmp_path / 'checked'}:app")  # skopeo checks every digest

    _flip_byte(path)  # --verify still re-hashes every blob it writes, the healed one included
    mark = registry.mark()
    out = json.loads(
        cas("export", "--pull", "--verify", "--json", "--format", "oci-dir", ref, "-o", tmp_path / "d").stdout
    )
    assert out["pulled_refs"] == [ref] and out["verified"] is True
    assert [r.reference for r in registry.blob_gets(mark)] == [layer]
    mark = registry.mark()
    assert json.loads(cas("export", "--pull", "--json", ref, "-o", tmp_path / "again.tar").stdout)["pulled_refs"] == []
    assert registry.requests(mark) == []  # nothing changed: no pull, no request

    _flip_byte(path)  # without --json the summary says what was pulled before the export line
    said = cas("export", "--pull", ref, "-o", tmp_path / "said.tar").stderr.splitlines()
    assert said[-2] == f"pulled {ref} first (--pull)" and said[-1].startswith(f"exported {ref} as docker-archive"), said
    assert "pulled" not in cas("export", "--pull", ref, "-o", tmp_path / "quiet.tar").stderr  # nothing to pull


def test_export_pull_by_digest_pulls_the_reference_given(cas, cas_home, app, registry, test_images, tmp_path):
    ref, layer, path = app
    by_digest = f"{ref.rsplit(':', 1)[0]}@{test_images.app.digest}"  # cached as app:latest only
    _flip_byte(path)
    mark = registry.mark()
    out = json.loads(cas("export", "--pull", "--json", by_digest, "-o", tmp_path / "app.tar").stdout)
    assert out["pulled_refs"] == [by_digest]  # not the tag the image was cached under, which may have moved
    assert [r.reference for r in registry.blob_gets(mark)] == [layer]
    assert [r.reference for r in registry.manifest_requests(mark)] == []  # by digest: the stored manifest


def test_export_pull_fails_once_when_the_blob_changes_again_after_its_pull(cas_home, app, registry, tmp_path):
    from cas.errors import ChangedBlobs
    from cas.export import ExportOptions, export
    from cas.pull import PullOptions
    from cas.reference import parse
    from cas.store import Store
    from cas.transfer import TransferObserver

    ref, layer, path = app

    class Tamper(TransferObserver):  # something else writes into the store right after the pull's commit
        def blob_done(self, digest, moved):
            if str(digest) == layer:
                _flip_byte(path)

    _flip_byte(path)
    mark = registry.mark()
    store = Store(cas_home)
    options = ExportOptions(pull=True, pull_options=PullOptions(observer=Tamper()))
    try:
        with pytest.raises(ChangedBlobs) as failed:
            export(store, [parse(ref)], tmp_path / "app.tar", options)
    finally:
        store.close()
    assert f"{layer} (layer 4/5 of {ref}): content changed since commit" in failed.value.message
    assert failed.value.hint == (
        "they changed again after --pull downloaded them: something else writes into the store (`cas verify`);"
        " nothing was written"
    )
    assert [r.reference for r in registry.blob_gets(mark)] == [layer]  # one pull, never a loop
    assert list(tmp_path.glob("*app.tar*")) == []


def test_export_pull_of_a_changed_blob_whose_registry_is_gone_fails_in_one_line(cas, cas_home, test_images, tmp_path):
    from support.images import push
    from support.registry import Registry

    with Registry(tmp_path / "gone") as gone:
        push(gone, "app", "latest", test_images.app)
        ref = f"{gone.host}/app:latest"
        cas("pull", ref)
    layer = test_images.app.blobs[4].digest
    _flip_byte(_blob_path(cas_home, layer))
    proc = cas("export", "--pull", ref, "-o", tmp_path / "app.tar", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    error, hint = proc.stderr.splitlines()
    assert error.startswith("error: ") and gone.host in error and hint.startswith("hint: "), proc.stderr
    assert list(tmp_path.glob("*app.tar*")) == []


def test_one_export_pull_fetches_missing_and_changed_blobs_together(
    cas, cas_home, app, registry, test_images, tmp_path
):
    ref, layer, path = app
    base = test_images.ref(registry, "base")  # never pulled; its layers are app's too
    _flip_byte(path)
    mark = registry.mark()
    out = json.loads(cas("export", "--pull", "--json", base, ref, "-o", tmp_path / "both.tar").stdout)
    assert sorted(out["pulled_refs"]) == sorted([base, ref])  # one round: never pulled, and changed
    assert sorted(r.reference for r in registry.blob_gets(mark)) == sorted([test_images.base.blobs[0].digest, layer])
