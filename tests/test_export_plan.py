"""Export against a store built by hand: the completeness check, names, and what is left on disk.

These need no registry: blobs go in through ``store.ingests.put`` and ref records through
``index.put_ref``, exactly what a pull leaves behind. Consumers (docker, podman, skopeo)
are in test_export_consumers.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pty
import tarfile
import time
from pathlib import Path

import pytest
from test_lifecycle_support import only_record

from cas.digest import Digest, of_bytes
from cas.errors import CasError, MissingBlobs, NotCached
from cas.export import ExportOptions, OutputError, UsageError, export
from cas.manifest import Platform
from cas.records import BlobEntry, RefRecord
from cas.reference import parse
from cas.store import Store

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0), "sha256:" + hashlib.sha256(raw).hexdigest()


def put_image(
    store: Store,
    ref: str,
    layers: list[dict[str, bytes]],
    *,
    platform: str = "linux/amd64",
    index: bytes | None = None,
    algorithm: str = "sha256",
) -> RefRecord:
    """Commit an image's blobs and write the ref record a pull would write; return the record.

    ``algorithm`` names every blob (manifest, config, layers); diff_ids stay sha256.
    """
    built = [_layer(files) for files in layers]
    os_, arch = platform.split("/")[:2]
    config = json.dumps(
        {"architecture": arch, "os": os_, "rootfs": {"type": "layers", "diff_ids": [d for _, d in built]}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": str(of_bytes(config, algorithm)), "size": len(config)},
            "layers": [
                {"mediaType": OCI_LAYER, "digest": str(of_bytes(b, algorithm)), "size": len(b)} for b, _ in built
            ],
        }
    ).encode()
    blobs = [(manifest, OCI_MANIFEST), (config, OCI_CONFIG)] + [(b, OCI_LAYER) for b, _ in built]
    if index is not None:
        blobs.insert(0, (index, "application/vnd.oci.image.index.v1+json"))
    for data, _ in blobs:
        store.ingests.put(of_bytes(data, algorithm), data)
    record = RefRecord(
        ref=ref,
        registry=ref.split("/")[0],
        digest=of_bytes(index if index is not None else manifest, algorithm),
        media_type=blobs[0][1],
        manifest=of_bytes(manifest, algorithm),
        config=of_bytes(config, algorithm),
        platform=platform,
        blobs=tuple(BlobEntry(of_bytes(d, algorithm), len(d), m) for d, m in blobs),
        pulled=1000.0,
        used=1000.0,
    )
    store.metadata.put_ref(record)
    return record


BASE = "127.0.0.1:5000/base:1.0"
APP = "127.0.0.1:5000/app:1.0"
BASE_LAYERS = [{"etc/os-release": b"ID=test\n"}, {"bin/tool": b"x" * 70000}]
APP_LAYERS = BASE_LAYERS + [{"app/main": b"print('hi')\n"}]


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()}


def test_docker_archive_layout(store: Store, out_dir: Path) -> None:
    base = put_image(store, BASE, BASE_LAYERS)
    app = put_image(store, APP, APP_LAYERS)
    result = export(store, [parse(BASE), parse(APP)], out_dir / "both.tar")

    members = _members(out_dir / "both.tar")
    assert not any(":" in name for name in members)
    blob_names = {f"blobs/sha256/{b.digest.hex}" for rec in (base, app) for b in rec.blobs}
    assert {n for n in members if n.startswith("blobs/sha256/")} == blob_names
    assert len(blob_names) == 7 == result.blobs  # the two shared layers are written once
    manifest = json.loads(members["manifest.json"])
    assert [m["RepoTags"] for m in manifest] == [[BASE], [APP]]
    assert manifest[1]["Config"] == f"blobs/sha256/{app.config.hex}"
    assert manifest[1]["Layers"] == [f"blobs/sha256/{b.digest.hex}" for b in app.blobs[2:]]
    index = json.loads(members["index.json"])
    assert [(m["digest"], m["annotations"]["io.containerd.image.name"]) for m in index["manifests"]] == [
        (str(base.manifest), BASE),
        (str(app.manifest), APP),
    ]
    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    assert set(json.loads(members["repositories"])) == {"127.0.0.1:5000/base", "127.0.0.1:5000/app"}
    assert sorted(os.listdir(out_dir)) == ["both.tar"]


def test_names_are_as_given_and_one_manifest_gets_all_its_tags(store: Store, out_dir: Path) -> None:
    rec = put_image(store, "docker.io/library/alpine:latest", BASE_LAYERS)
    store.metadata.put_ref(rec.replace(ref="docker.io/library/alpine:3", registry="docker.io"))
    export(store, [parse("alpine"), parse("alpine:3")], out_dir / "a.tar")
    manifest = json.loads(_members(out_dir / "a.tar")["manifest.json"])
    assert manifest == [dict(manifest[0], RepoTags=["alpine:latest", "alpine:3"])]


def test_digest_only_ref_has_no_repo_tag(store: Store, out_dir: Path) -> None:
    rec = put_image(store, APP, APP_LAYERS)
    # pulled by tag, exported by digest: found through the record's manifest digest
    export(store, [parse(f"127.0.0.1:5000/app@{rec.manifest}")], out_dir / "d.tar")
    members = _members(out_dir / "d.tar")
    assert json.loads(members["manifest.json"])[0]["RepoTags"] == []
    assert "annotations" not in json.loads(members["index.json"])["manifests"][0]


def test_tag_renames_one_image_only(store: Store, out_dir: Path) -> None:
    put_image(store, BASE, BASE_LAYERS)
    put_image(store, APP, APP_LAYERS)
    export(store, [parse(APP)], out_dir / "t.tar", ExportOptions(tag="myapp:2"))
    assert json.loads(_members(out_dir / "t.tar")["manifest.json"])[0]["RepoTags"] == ["myapp:2"]
    with pytest.raises(UsageError, match="--tag renames one image"):
        export(store, [parse(APP), parse(BASE)], out_dir / "u.tar", ExportOptions(tag="myapp:2"))
    assert sorted(os.listdir(out_dir)) == ["t.tar"]


def test_missing_blobs_are_all_named_and_nothing_is_written(store: Store, out_dir: Path) -> None:
    base = put_image(store, BASE, BASE_LAYERS)
    app = put_image(store, APP, APP_LAYERS)
    shared, own = app.blobs[3].digest, app.blobs[4].digest
    store.blobs.delete(shared)  # layer 2 of both images
    store.blobs.delete(own)  # layer 3 of app
    with pytest.raises(MissingBlobs) as info:
        export(store, [parse(BASE), parse(APP)], out_dir / "x.tar")
    err = info.value
    assert err.missing == [
        f"{shared} (layer 2/2 of {BASE})",
        f"{shared} (layer 2/3 of {APP})",
        f"{own} (layer 3/3 of {APP})",
    ]
    assert f"cas pull {BASE} {APP}" in err.hint and "--pull" in err.hint
    assert os.listdir(out_dir) == []  # no file, no temp file
    assert base.used == only_record(store, BASE).used  # a failed export is not a use


def test_wrong_size_counts_as_missing(store: Store, out_dir: Path) -> None:
    rec = put_image(store, APP, APP_LAYERS)
    entry = rec.blobs[2]
    store.metadata.put_ref(
        rec.replace(blobs=(*rec.blobs[:2], entry.__class__(entry.digest, entry.size + 1, ""), *rec.blobs[3:]))
    )
    # the manifest is the truth: a record that disagrees with it does not hide a bad blob,
    # but a blob file of the wrong size does count as missing
    path = store.blobs.path(entry.digest)
    os.chmod(path, 0o644)
    with open(path, "ab") as fh:
        fh.write(b"!")
    with pytest.raises(MissingBlobs, match=r"layer 1/3 of"):
        export(store, [parse(APP)], out_dir / "x.tar")
    assert os.listdir(out_dir) == []


def test_missing_manifest_falls_back_to_the_record(store: Store, out_dir: Path) -> None:
    rec = put_image(store, APP, APP_LAYERS)
    store.blobs.delete(rec.manifest)
    store.blobs.delete(rec.config)
    with pytest.raises(MissingBlobs) as info:
        export(store, [parse(APP)], out_dir / "x.tar", ExportOptions(format="oci-archive"))
    assert info.value.missing == [f"{rec.manifest} (manifest of {APP})", f"{rec.config} (config of {APP})"]
    assert os.listdir(out_dir) == []


def test_never_pulled_is_not_cached(store: Store, out_dir: Path) -> None:
    put_image(store, BASE, BASE_LAYERS)
    with pytest.raises(NotCached, match="127.0.0.1:5000/nope:1") as info:
        export(store, [parse(BASE), parse("127.0.0.1:5000/nope:1"), parse("alpine")], out_dir / "x.tar")
    assert "docker.io/library/alpine:latest" in info.value.message
    assert "cas pull" in info.value.hint and "--pull" in info.value.hint
    assert os.listdir(out_dir) == []


def test_other_platform_than_cached_is_not_cached(store: Store, out_dir: Path) -> None:
    put_image(store, APP, APP_LAYERS, platform="linux/arm64")
    with pytest.raises(NotCached, match="cached for linux/arm64, not linux/amd64"):
        export(store, [parse(APP)], out_dir / "x.tar", ExportOptions(platform=Platform.parse("linux/amd64")))
    export(store, [parse(APP)], out_dir / "x.tar", ExportOptions(platform=Platform.parse("linux/arm64")))


def test_multi_platform_ref_exports_only_the_pulled_manifest(store: Store, out_dir: Path) -> None:
    other = "sha256:" + "1" * 64  # an arm64 manifest the store never held
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": other,
                    "size": 100,
                    "platform": {"os": "linux", "architecture": "arm64"},
                },
            ],
        }
    ).encode()
    rec = put_image(store, APP, APP_LAYERS, index=index)
    for fmt in ("docker-archive", "oci-archive"):
        export(store, [parse(APP)], out_dir / f"{fmt}.tar", ExportOptions(format=fmt))
        members = _members(out_dir / f"{fmt}.tar")
        assert f"blobs/sha256/{rec.digest.hex}" not in members  # the index blob is not exported
        entries = json.loads(members["index.json"])["manifests"]
        assert [e["digest"] for e in entries] == [str(rec.manifest)]
        for entry in entries:
            assert f"blobs/sha256/{entry['digest'][7:]}" in members


def test_oci_dir_hard_links_into_the_store(store: Store, tmp_path: Path) -> None:
    rec = put_image(store, APP, APP_LAYERS)
    target = tmp_path / "layout"
    result = export(store, [parse(APP)], target, ExportOptions(format="oci-dir"))
    assert result.linked
    for blob in rec.blobs:
        exported = target / "blobs" / "sha256" / blob.digest.hex
        assert exported.stat().st_ino == store.blobs.path(blob.digest).stat().st_ino
    index = json.loads((target / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == APP
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "layout"]
    with pytest.raises(OutputError, match="not an empty directory"):
        export(store, [parse(APP)], target, ExportOptions(format="oci-dir"))


def test_oci_dir_copies_with_one_warning_when_links_fail(store: Store, tmp_path: Path, monkeypatch) -> None:
    import errno

    rec = put_image(store, APP, APP_LAYERS)

    def cross_device(src, dst, **kwargs):  # os.link(src, dst, follow_symlinks=False)
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    warnings: list[str] = []
    result = export(store, [parse(APP)], tmp_path / "layout", ExportOptions(format="oci-dir", warn=warnings.append))
    assert not result.linked
    assert len(warnings) == 1 and "copying instead" in warnings[0]
    for blob in rec.blobs:
        assert (tmp_path / "layout" / "blobs" / "sha256" / blob.digest.hex).read_bytes() == store.blobs.read(
            blob.digest
        )


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive", "oci-dir"])
@pytest.mark.parametrize(("exc", "expected"), [(KeyboardInterrupt, KeyboardInterrupt), (OSError, OutputError)])
def test_interrupted_export_leaves_nothing(store: Store, out_dir: Path, fmt: str, exc: type, expected: type) -> None:
    put_image(store, APP, APP_LAYERS)
    written = []

    def on_blob(blob) -> None:
        written.append(blob)
        if len(written) == 3:
            raise exc()

    with pytest.raises(expected):
        export(store, [parse(APP)], out_dir / "x", ExportOptions(format=fmt, on_blob=on_blob))
    assert os.listdir(out_dir) == []
    assert store.metadata.leased_digests() == set()


def test_lease_is_held_while_writing_and_used_time_is_updated(store: Store, out_dir: Path) -> None:
    rec = put_image(store, APP, APP_LAYERS)
    seen: list[set[str]] = []
    before = time.time()
    export(
        store,
        [parse(APP)],
        out_dir / "x.tar",
        ExportOptions(on_blob=lambda b: seen.append(store.metadata.leased_digests())),
    )
    assert seen and all(s == {str(b.digest) for b in rec.blobs} for s in seen)
    assert store.metadata.leased_digests() == set()
    assert only_record(store, APP).used >= before


def test_replaces_an_existing_file_only_on_success(store: Store, out_dir: Path) -> None:
    rec = put_image(store, APP, APP_LAYERS)
    target = out_dir / "x.tar"
    target.write_bytes(b"old")
    store.blobs.delete(rec.blobs[-1].digest)
    with pytest.raises(MissingBlobs):
        export(store, [parse(APP)], target)
    assert target.read_bytes() == b"old" and os.listdir(out_dir) == ["x.tar"]


def test_refuses_a_terminal_and_bad_outputs(store: Store, out_dir: Path) -> None:
    put_image(store, APP, APP_LAYERS)
    main, secondary = pty.openpty()
    try:
        with pytest.raises(UsageError, match="terminal"):
            export(store, [parse(APP)], secondary)
    finally:
        os.close(main)
        os.close(secondary)
    with pytest.raises(OutputError, match="is a directory"):
        export(store, [parse(APP)], out_dir)
    with pytest.raises(OutputError, match="No such file"):
        export(store, [parse(APP)], out_dir / "nodir" / "x.tar")
    with pytest.raises(UsageError, match="oci-dir"):
        export(store, [parse(APP)], 1, ExportOptions(format="oci-dir"))
    with pytest.raises(UsageError, match="unknown export format"):
        export(store, [parse(APP)], out_dir / "x.tar", ExportOptions(format="zip"))
    assert os.listdir(out_dir) == []
    assert all(isinstance(e, CasError) for e in (OutputError("x"), UsageError("x")))


def test_a_blob_that_shrinks_after_the_check_is_a_store_error(store: Store, out_dir: Path) -> None:
    from cas.errors import StoreError

    rec = put_image(store, APP, APP_LAYERS)
    victim = store.blobs.path(rec.blobs[-1].digest)

    def damage(plan) -> None:
        data = victim.read_bytes()
        victim.unlink()
        victim.write_bytes(data[:-10])

    with pytest.raises(StoreError, match="changed while it was exported") as info:
        export(store, [parse(APP)], out_dir / "x.tar", ExportOptions(on_plan=damage))
    assert "cas verify" in info.value.hint
    assert os.listdir(out_dir) == []


def test_a_device_or_fifo_is_written_in_place(store: Store, out_dir: Path) -> None:
    import threading

    put_image(store, APP, APP_LAYERS)
    export(store, [parse(APP)], Path("/dev/null"))
    assert Path("/dev/null").is_char_device()
    fifo = out_dir / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    export(store, [parse(APP)], fifo)
    reader.join(10)
    with tarfile.open(fileobj=io.BytesIO(received[0])) as tar:
        assert "manifest.json" in tar.getnames()
    assert os.listdir(out_dir) == ["fifo"]


def test_the_same_image_named_twice_is_reported_and_written_once(store: Store, out_dir: Path) -> None:
    rec = put_image(store, APP, APP_LAYERS)
    store.blobs.delete(rec.config)
    with pytest.raises(MissingBlobs) as info:
        export(store, [parse(APP), parse(APP)], out_dir / "x.tar")
    assert info.value.missing == [f"{rec.config} (config of {APP})"]
    assert info.value.hint.count(APP) == 1


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive", "oci-dir"])
def test_sha512_blobs_are_exported_under_their_full_names(store: Store, tmp_path: Path, fmt: str) -> None:
    import subprocess

    rec = put_image(store, APP, APP_LAYERS, algorithm="sha512")
    names = {f"blobs/sha512/{b.digest.hex}": store.blobs.read(b.digest) for b in rec.blobs}
    assert all(len(name) == 141 for name in names)  # over ustar's 100 bytes
    target = tmp_path / "out"
    export(store, [parse(APP)], target, ExportOptions(format=fmt))
    if fmt == "oci-dir":
        assert {name: (target / name).read_bytes() for name in names} == names
        return
    members = _members(target)
    assert {name: members[name] for name in names} == names
    assert not any(name.startswith("blobs/sha256/") for name in members)
    listed = subprocess.run(["tar", "-tf", str(target)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert set(names) <= set(listed)
    if fmt == "docker-archive":
        entry = json.loads(members["manifest.json"])[0]
        assert entry["Config"] == f"blobs/sha512/{rec.config.hex}"
        assert entry["Layers"] == [f"blobs/sha512/{b.digest.hex}" for b in rec.blobs[2:]]


def test_every_exported_name_of_one_manifest_is_marked_used(store: Store, out_dir: Path) -> None:
    latest = "127.0.0.1:5000/app:latest"
    rec = put_image(store, APP, APP_LAYERS)
    store.metadata.put_ref(rec.replace(ref=latest))  # app:1.0 and app:latest: one manifest, two records
    other = put_image(store, BASE, BASE_LAYERS)
    before = time.time()
    result = export(store, [parse(APP), parse(latest)], out_dir / "x.tar")
    assert [image.names for image in result.images] == [["127.0.0.1:5000/app:1.0", "127.0.0.1:5000/app:latest"]]
    assert only_record(store, APP).used >= before
    assert only_record(store, latest).used >= before  # not only the first name
    assert only_record(store, BASE).used == other.used  # not exported, not used


def _plant_symlink(store: Store, digest: str, outside: Path) -> Path:
    """Replace a blob file by a symlink to a file of the same size outside the store."""
    path = store.blobs.path(Digest.parse(digest))
    outside.write_bytes(b"S" * path.stat().st_size)  # same size: the completeness check passes
    path.unlink()
    path.symlink_to(outside)
    return path


EXPORTS = [("docker-archive", False), ("oci-archive", False), ("oci-dir", False), ("oci-dir", True)]
EXPORT_IDS = ["docker-archive", "oci-archive", "oci-dir", "oci-dir-copying"]


def _cross_device(monkeypatch) -> None:
    import errno

    def cross_device(src, dst, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)


@pytest.mark.parametrize(("fmt", "copying"), EXPORTS, ids=EXPORT_IDS)
def test_a_symlinked_blob_is_never_followed(
    store: Store, tmp_path: Path, out_dir: Path, monkeypatch, fmt: str, copying: bool
) -> None:
    from cas.errors import StoreError

    rec = put_image(store, APP, APP_LAYERS)
    planted = _plant_symlink(store, str(rec.blobs[-1].digest), tmp_path / "secret")
    if copying:
        _cross_device(monkeypatch)
    with pytest.raises(StoreError, match="is a symlink") as info:
        export(store, [parse(APP)], out_dir / "x", ExportOptions(format=fmt))
    assert str(planted) in info.value.message and "cas verify --repair" in info.value.hint
    assert os.listdir(out_dir) == []  # no archive, no layout, no temp file
    assert store.metadata.leased_digests() == set()
    assert only_record(store, APP).used == rec.used


@pytest.mark.parametrize(("fmt", "copying"), EXPORTS, ids=EXPORT_IDS)
def test_a_symlinked_algorithm_directory_is_never_followed(
    store: Store, tmp_path: Path, out_dir: Path, monkeypatch, fmt: str, copying: bool
) -> None:
    from cas.errors import StoreError

    put_image(store, APP, APP_LAYERS)
    real = store.blobs.blobs_dir / "sha256"
    outside = tmp_path / "elsewhere"
    real.rename(outside)
    real.symlink_to(outside)
    if copying:
        _cross_device(monkeypatch)
    with pytest.raises(StoreError, match="blobs/sha256 is a symlink"):
        export(store, [parse(APP)], out_dir / "x", ExportOptions(format=fmt))
    assert os.listdir(out_dir) == []


def test_refusals_come_before_any_pull(store: Store, out_dir: Path, monkeypatch) -> None:
    import cas.export

    def no_pull(*args, **kwargs):
        raise AssertionError("nothing may be pulled")

    monkeypatch.setattr(cas.export, "_pull_missing", no_pull)
    never = [parse("127.0.0.1:1/a:1"), parse("127.0.0.1:1/b:1")]
    with pytest.raises(UsageError, match="--tag renames one image, but 2 references were given"):
        export(store, never, out_dir / "x.tar", ExportOptions(tag="x:1", pull=True))
    main, secondary = pty.openpty()
    try:
        with pytest.raises(UsageError, match="terminal"):
            export(store, never[:1], secondary, ExportOptions(pull=True))
    finally:
        os.close(main)
        os.close(secondary)
    assert os.listdir(out_dir) == []


def test_pull_flag_plans_once_when_everything_is_cached(store: Store, out_dir: Path, monkeypatch) -> None:
    import cas.export

    put_image(store, BASE, BASE_LAYERS)
    put_image(store, APP, APP_LAYERS)
    plans, reads = [], []
    real_plan, real_read = cas.export.plan, store.blobs.read
    monkeypatch.setattr(cas.export, "plan", lambda *a, **k: plans.append(a[1]) or real_plan(*a, **k))
    monkeypatch.setattr(store.blobs, "read", lambda digest: reads.append(digest) or real_read(digest))
    result = export(store, [parse(BASE), parse(APP)], out_dir / "x.tar", ExportOptions(pull=True))
    assert result.pulled == []
    assert plans == [[parse(BASE), parse(APP)]]  # one check of both, no per-reference pre-check
    assert len(reads) == 4  # each manifest and each config, once
    assert sorted(os.listdir(out_dir)) == ["x.tar"]


@pytest.mark.parametrize("copying", [False, True], ids=["linked", "copying"])
def test_oci_dir_fsyncs_every_file_it_writes_then_its_directories_before_the_rename(
    store: Store, tmp_path: Path, monkeypatch, copying: bool
) -> None:
    rec = put_image(store, APP, APP_LAYERS)
    if copying:
        _cross_device(monkeypatch)
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src, dst) -> None:
        events.append(("rename", str(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    target = tmp_path / "layout"
    result = export(store, [parse(APP)], target, ExportOptions(format="oci-dir"))
    assert result.linked is not copying

    renamed = events.index(("rename", str(target)))
    partial = [path for kind, path in events[:renamed] if kind == "fsync" and ".cas-partial" in path]
    tmp = partial[-1]  # the temp directory itself is fsynced last, just before the rename
    synced = [os.path.relpath(path, tmp) for path in partial]
    blobs = [f"blobs/sha256/{b.digest.hex}" for b in rec.blobs]
    files = ["oci-layout", "index.json"] + (blobs if copying else [])
    directories = ["blobs/sha256", "blobs", "."]
    assert sorted(synced) == sorted(files + directories)
    assert set(synced[: len(files)]) == set(files)  # every file before any directory
    assert synced[len(files) :] == directories  # deepest first
    assert ("fsync", str(tmp_path)) in events[renamed:]  # the parent, after the rename


def test_plan_returns_what_is_missing_instead_of_raising(store: Store) -> None:
    """Export planning says which references lack what; ``--pull`` then fetches exactly those."""
    from cas.export.plan import plan

    put_image(store, BASE, BASE_LAYERS)
    rec = put_image(store, APP, APP_LAYERS)
    store.blobs.delete(rec.blobs[-1].digest)
    checked = plan(store, [parse(BASE), parse(APP), parse("127.0.0.1:5000/never:1")], platform=None)
    assert [image.ref for image in checked.images] == [BASE]
    assert [(str(m.reference), m.cached, len(m.blobs)) for m in checked.missing] == [
        (APP, ["linux/amd64"], 1),
        ("127.0.0.1:5000/never:1", [], 0),
    ]
    assert [m.platforms for m in checked.missing] == [(Platform.parse("linux/amd64"),), ()]
    with pytest.raises(NotCached, match="never:1") as info:
        checked.check()
    assert "--pull" in info.value.hint
    with pytest.raises(NotCached) as info:
        checked.check(pulled=True)  # after --pull, never send the user round to --pull again
    assert "--pull" not in info.value.hint

    wrong = plan(store, [parse(BASE)], platform=Platform.parse("linux/arm64"))
    assert [(str(m.reference), m.cached, m.platforms) for m in wrong.missing] == [
        (BASE, ["linux/amd64"], (Platform.parse("linux/arm64"),))
    ]
    with pytest.raises(NotCached) as info:
        wrong.check(pulled=True)
    assert "--pull" not in info.value.hint and "--platform linux/amd64" in info.value.hint
