"""Export against a store built by hand: the completeness check, names, and what is left on disk.

These need no registry: blobs go in through ``store.blobs.put`` and ref records through
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

from cas.digest import Digest, of_bytes
from cas.errors import CasError, MissingBlobs, NotCached
from cas.export import ExportOptions, OutputError, UsageError, export
from cas.manifest import Platform
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


def put_image(store: Store, ref: str, layers: list[dict[str, bytes]], *, platform: str = "linux/amd64", index: bytes | None = None) -> dict:
    """Commit an image's blobs and write the ref record a pull would write; return the record."""
    built = [_layer(files) for files in layers]
    os_, arch = platform.split("/")[:2]
    config = json.dumps({"architecture": arch, "os": os_, "rootfs": {"type": "layers", "diff_ids": [d for _, d in built]}}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": str(of_bytes(config)), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": str(of_bytes(b)), "size": len(b)} for b, _ in built],
        }
    ).encode()
    blobs = [(manifest, OCI_MANIFEST), (config, OCI_CONFIG)] + [(b, OCI_LAYER) for b, _ in built]
    if index is not None:
        blobs.insert(0, (index, "application/vnd.oci.image.index.v1+json"))
    for data, _ in blobs:
        store.blobs.put(of_bytes(data), data)
    record = {
        "ref": ref,
        "registry": ref.split("/")[0],
        "digest": str(of_bytes(index if index is not None else manifest)),
        "media_type": blobs[0][1],
        "manifest": str(of_bytes(manifest)),
        "config": str(of_bytes(config)),
        "platform": platform,
        "blobs": [{"digest": str(of_bytes(d)), "size": len(d), "media_type": m} for d, m in blobs],
        "size": sum(len(d) for d, _ in blobs),
        "pulled": 1000.0,
        "used": 1000.0,
    }
    store.index.put_ref(ref, record)
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
    blob_names = {f"blobs/sha256/{b['digest'][7:]}" for rec in (base, app) for b in rec["blobs"]}
    assert {n for n in members if n.startswith("blobs/sha256/")} == blob_names
    assert len(blob_names) == 7 == result.blobs  # the two shared layers are written once
    manifest = json.loads(members["manifest.json"])
    assert [m["RepoTags"] for m in manifest] == [[BASE], [APP]]
    assert manifest[1]["Config"] == f"blobs/sha256/{app['config'][7:]}"
    assert manifest[1]["Layers"] == [f"blobs/sha256/{b['digest'][7:]}" for b in app["blobs"][2:]]
    index = json.loads(members["index.json"])
    assert [(m["digest"], m["annotations"]["io.containerd.image.name"]) for m in index["manifests"]] == [
        (base["manifest"], BASE),
        (app["manifest"], APP),
    ]
    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    assert set(json.loads(members["repositories"])) == {"127.0.0.1:5000/base", "127.0.0.1:5000/app"}
    assert sorted(os.listdir(out_dir)) == ["both.tar"]


def test_names_are_as_given_and_one_manifest_gets_all_its_tags(store: Store, out_dir: Path) -> None:
    rec = put_image(store, "docker.io/library/alpine:latest", BASE_LAYERS)
    store.index.put_ref("docker.io/library/alpine:3", dict(rec, ref="docker.io/library/alpine:3"))
    export(store, [parse("alpine"), parse("alpine:3")], out_dir / "a.tar")
    manifest = json.loads(_members(out_dir / "a.tar")["manifest.json"])
    assert manifest == [dict(manifest[0], RepoTags=["alpine:latest", "alpine:3"])]


def test_digest_only_ref_has_no_repo_tag(store: Store, out_dir: Path) -> None:
    rec = put_image(store, APP, APP_LAYERS)
    # pulled by tag, exported by digest: found through the record's manifest digest
    export(store, [parse(f"127.0.0.1:5000/app@{rec['manifest']}")], out_dir / "d.tar")
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
    shared, own = Digest.parse(app["blobs"][3]["digest"]), Digest.parse(app["blobs"][4]["digest"])
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
    assert base["used"] == store.index.get_ref(BASE)["used"]  # a failed export is not a use


def test_wrong_size_counts_as_missing(store: Store, out_dir: Path) -> None:
    rec = put_image(store, APP, APP_LAYERS)
    entry = rec["blobs"][2]
    rec["blobs"][2] = dict(entry, size=entry["size"] + 1)
    # the manifest is the truth: a record that disagrees with it does not hide a bad blob,
    # but a blob file of the wrong size does count as missing
    path = store.blobs.path(Digest.parse(entry["digest"]))
    os.chmod(path, 0o644)
    with open(path, "ab") as fh:
        fh.write(b"!")
    with pytest.raises(MissingBlobs, match=r"layer 1/3 of"):
        export(store, [parse(APP)], out_dir / "x.tar")
    assert os.listdir(out_dir) == []


def test_missing_manifest_falls_back_to_the_record(store: Store, out_dir: Path) -> None:
    rec = put_image(store, APP, APP_LAYERS)
    store.blobs.delete(Digest.parse(rec["manifest"]))
    store.blobs.delete(Digest.parse(rec["config"]))
    with pytest.raises(MissingBlobs) as info:
        export(store, [parse(APP)], out_dir / "x.tar", ExportOptions(format="oci-archive"))
    assert info.value.missing == [f"{rec['manifest']} (manifest of {APP})", f"{rec['config']} (config of {APP})"]
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
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": other, "size": 100, "platform": {"os": "linux", "architecture": "arm64"}},
    ]}).encode()
    rec = put_image(store, APP, APP_LAYERS, index=index)
    for fmt in ("docker-archive", "oci-archive"):
        export(store, [parse(APP)], out_dir / f"{fmt}.tar", ExportOptions(format=fmt))
        members = _members(out_dir / f"{fmt}.tar")
        assert f"blobs/sha256/{rec['digest'][7:]}" not in members  # the index blob is not exported
        entries = json.loads(members["index.json"])["manifests"]
        assert [e["digest"] for e in entries] == [rec["manifest"]]
        for entry in entries:
            assert f"blobs/sha256/{entry['digest'][7:]}" in members


def test_oci_dir_hard_links_into_the_store(store: Store, tmp_path: Path) -> None:
    rec = put_image(store, APP, APP_LAYERS)
    target = tmp_path / "layout"
    result = export(store, [parse(APP)], target, ExportOptions(format="oci-dir"))
    assert result.linked
    for blob in rec["blobs"]:
        exported = target / "blobs" / "sha256" / blob["digest"][7:]
        assert exported.stat().st_ino == store.blobs.path(Digest.parse(blob["digest"])).stat().st_ino
    index = json.loads((target / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == APP
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "layout"]
    with pytest.raises(OutputError, match="not an empty directory"):
        export(store, [parse(APP)], target, ExportOptions(format="oci-dir"))


def test_oci_dir_copies_with_one_warning_when_links_fail(store: Store, tmp_path: Path, monkeypatch) -> None:
    import errno

    rec = put_image(store, APP, APP_LAYERS)

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    warnings: list[str] = []
    result = export(store, [parse(APP)], tmp_path / "layout", ExportOptions(format="oci-dir", warn=warnings.append))
    assert not result.linked
    assert len(warnings) == 1 and "copying instead" in warnings[0]
    for blob in rec["blobs"]:
        assert (tmp_path / "layout" / "blobs" / "sha256" / blob["digest"][7:]).read_bytes() == store.blobs.read(
            Digest.parse(blob["digest"])
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
    assert store.index.leased_digests() == set()


def test_lease_is_held_while_writing_and_used_time_is_updated(store: Store, out_dir: Path) -> None:
    rec = put_image(store, APP, APP_LAYERS)
    seen: list[set[str]] = []
    before = time.time()
    export(store, [parse(APP)], out_dir / "x.tar", ExportOptions(on_blob=lambda b: seen.append(store.index.leased_digests())))
    assert seen and all(s == {b["digest"] for b in rec["blobs"]} for s in seen)
    assert store.index.leased_digests() == set()
    assert store.index.get_ref(APP)["used"] >= before


def test_replaces_an_existing_file_only_on_success(store: Store, out_dir: Path) -> None:
    rec = put_image(store, APP, APP_LAYERS)
    target = out_dir / "x.tar"
    target.write_bytes(b"old")
    store.blobs.delete(Digest.parse(rec["blobs"][-1]["digest"]))
    with pytest.raises(MissingBlobs):
        export(store, [parse(APP)], target)
    assert target.read_bytes() == b"old" and os.listdir(out_dir) == ["x.tar"]


def test_refuses_a_terminal_and_bad_outputs(store: Store, out_dir: Path) -> None:
    put_image(store, APP, APP_LAYERS)
    main, secondary = pty.openpty()
    try:
        with pytest.raises(OutputError, match="terminal"):
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
    victim = store.blobs.path(Digest.parse(rec["blobs"][-1]["digest"]))

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
    store.blobs.delete(Digest.parse(rec["config"]))
    with pytest.raises(MissingBlobs) as info:
        export(store, [parse(APP), parse(APP)], out_dir / "x.tar")
    assert info.value.missing == [f"{rec['config']} (config of {APP})"]
    assert info.value.hint.count(APP) == 1
