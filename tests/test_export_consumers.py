"""cas export, end to end: real pulls from a real registry, archives read by real consumers.

Every docker load goes into a daemon whose image store was just emptied (``clean_dockerd``):
docker skips layers it already holds and never opens their files, which would hide exactly
the missing-layer failure these tests exist to catch.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from test_lifecycle_support import only_record

REPO_ROOT = Path(__file__).resolve().parent.parent


def _blob_names(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        return {m.name for m in tar.getmembers() if m.isfile() and m.name.startswith("blobs/")}


def _tar_json(archive: Path, name: str):
    with tarfile.open(archive) as tar:
        return json.load(tar.extractfile(name))


def _hexes(digests) -> set[str]:
    return {f"blobs/sha256/{d.removeprefix('sha256:')}" for d in digests}


def _store_blob(cas_home: Path, digest: str) -> Path:
    return cas_home / "v1" / "blobs" / "sha256" / digest.removeprefix("sha256:")


def test_seed_scenario_app_after_base_loads_on_a_clean_daemon(
    cas, cas_home, registry, test_images, clean_dockerd, tmp_path
):
    base, app = test_images.ref(registry, "base"), test_images.ref(registry, "app")
    cas("pull", base)
    registry.mark()
    cas("pull", app)
    own = set(test_images.app.digests) - set(test_images.base.digests) - {test_images.app.digest}
    fetched = [r.reference for r in registry.blob_gets()]
    assert sorted(fetched) == sorted(own)  # app's own config and layers, once each; base's came from the store

    registry.mark()
    archive = tmp_path / "app.tar"
    cas("export", app, "-o", archive)
    assert registry.requests() == []  # export reads the store only
    assert _blob_names(archive) == _hexes(test_images.app.digests)
    manifest = _tar_json(archive, "manifest.json")
    assert manifest == [
        {
            "Config": f"blobs/sha256/{test_images.app.config_blob.digest[7:]}",
            "RepoTags": [app],
            "Layers": [f"blobs/sha256/{layer.digest[7:]}" for layer in test_images.app.layers],
        }
    ]

    out = clean_dockerd.load(archive).stdout
    assert f"Loaded image: {app}" in out
    assert clean_dockerd.run(app).stdout == "hello from app\n"
    assert clean_dockerd.run(app, "cat", "/app/VERSION", "/etc/os-release").stdout.startswith("1.0\nID=cas-test")


def test_docker_archive_is_read_by_skopeo_and_podman(cas, registry, test_images, skopeo, clean_podman, tmp_path):
    app = test_images.ref(registry, "app")
    cas("pull", app)
    archive = tmp_path / "app.tar"
    cas("export", app, "-o", archive)
    skopeo.copy(f"docker-archive:{archive}", f"oci:{tmp_path / 'from-docker-archive'}:app")
    index = json.loads((tmp_path / "from-docker-archive" / "index.json").read_text())
    assert len(index["manifests"]) == 1

    assert f"Loaded image: {app}" in clean_podman.load(archive).stdout
    assert clean_podman.run(app).stdout == "hello from app\n"


@pytest.mark.parametrize("name", ["app", "dockermedia", "multi"])
def test_oci_archive_is_read_by_skopeo_and_podman(name, cas, registry, test_images, skopeo, clean_podman, tmp_path):
    ref = test_images.ref(registry, name)
    cas("pull", "--platform", "linux/amd64", ref)
    archive = tmp_path / "oci.tar"
    cas("export", "--format", "oci-archive", ref, "-o", archive)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "manifest.json" not in names and "oci-layout" in names
    index = _tar_json(archive, "index.json")
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == [ref]
    image = test_images[name] if name != "multi" else test_images.multi.for_platform("linux/amd64")
    assert _blob_names(archive) == _hexes(image.digests)

    skopeo.copy(f"oci-archive:{archive}", f"oci:{tmp_path / 'from-oci-archive'}:x")
    if name != "dockermedia":  # skopeo looks names up among OCI-typed index entries only
        skopeo.copy(f"oci-archive:{archive}:{ref}", f"oci:{tmp_path / 'by-name'}:x")
    assert ref in clean_podman.load(archive).stdout
    expected = "linux/amd64\n" if name == "multi" else f"hello from {name}\n"
    assert clean_podman.run(ref).stdout == expected


def test_oci_dir_is_hard_linked_and_read_by_skopeo(cas, cas_home, registry, test_images, skopeo, tmp_path):
    app = test_images.ref(registry, "app")
    cas("pull", app)
    layout = tmp_path / "layout"
    result = cas("export", "--format", "oci-dir", app, "-o", layout, "--json")
    assert json.loads(result.stdout)["linked"] is True
    for digest in test_images.app.digests:
        exported = layout / "blobs" / "sha256" / digest[7:]
        assert exported.stat().st_ino == _store_blob(cas_home, digest).stat().st_ino
    skopeo.copy(f"oci:{layout}:{app}", f"oci:{tmp_path / 'copy'}:app")
    assert skopeo.inspect(f"oci:{layout}:{app}")["Labels"] == {"name": "app"}


def test_multi_image_archive_loads_every_tag(cas, registry, test_images, clean_dockerd, clean_podman, skopeo, tmp_path):
    names = ("base", "app", "dockermedia", "ocidata")
    refs = [test_images.ref(registry, name) for name in names]
    cas("pull", *refs)
    archive = tmp_path / "four.tar"
    cas("export", *refs, "-o", archive)
    every = set().union(*(test_images[name].digests for name in names))
    assert _blob_names(archive) == _hexes(every)  # base's layers are in the tar once
    assert [entry["RepoTags"] for entry in _tar_json(archive, "manifest.json")] == [[ref] for ref in refs]

    loaded = clean_dockerd.load(archive).stdout
    for name, ref in zip(names, refs, strict=True):
        assert f"Loaded image: {ref}" in loaded
        assert clean_dockerd.run(ref).stdout == f"hello from {name}\n"
    podman_loaded = clean_podman.load(archive).stdout
    assert all(ref in podman_loaded for ref in refs)
    skopeo.copy(f"docker-archive:{archive}:{refs[2]}", f"oci:{tmp_path / 'dockermedia'}:x")


@pytest.mark.parametrize("name", ["dockermedia", "ocidata", "multi", "multidocker"])
def test_media_types_and_multi_platform_load_on_a_clean_daemon(
    name, cas, registry, test_images, clean_dockerd, skopeo, tmp_path
):
    ref = test_images.ref(registry, name)
    cas("pull", "--platform", "linux/amd64", ref)
    archive = tmp_path / f"{name}.tar"
    cas("export", ref, "-o", archive)
    image = test_images[name]
    if name.startswith("multi"):
        image = image.for_platform("linux/amd64")
        expected = "linux/amd64\n"
    else:
        expected = f"hello from {name}\n"
    # only the pulled platform: no index blob and no manifest of another platform
    assert _blob_names(archive) == _hexes(image.digests)
    assert [m["digest"] for m in _tar_json(archive, "index.json")["manifests"]] == [image.digest]

    skopeo.copy(f"docker-archive:{archive}", f"oci:{tmp_path / 'skopeo'}:x")
    assert f"Loaded image: {ref}" in clean_dockerd.load(archive).stdout
    assert clean_dockerd.run(ref).stdout == expected


def test_other_platform_of_a_multi_platform_image(cas, registry, test_images, clean_dockerd, skopeo, tmp_path):
    ref = test_images.ref(registry, "multi")
    cas("pull", ref)  # the host's platform
    archive = tmp_path / "arm64.tar"
    failed = cas("export", "--platform", "linux/arm64", ref, "-o", archive, check=False)
    assert failed.returncode != 0 and "cached for linux/amd64" in failed.stderr and "--pull" in failed.stderr
    assert not archive.exists()

    cas("export", "--pull", "--platform", "linux/arm64", ref, "-o", archive)
    arm64 = test_images.multi.for_platform("linux/arm64/v8")
    assert _blob_names(archive) == _hexes(arm64.digests)
    skopeo.copy(f"docker-archive:{archive}", f"oci:{tmp_path / 'skopeo'}:x")
    assert f"Loaded image: {ref}" in clean_dockerd.load(archive).stdout
    assert clean_dockerd.image_inspect(ref)["Architecture"] == "arm64"


def test_stdout_pipes_into_docker_load(cas_home, registry, test_images, cas, clean_dockerd):
    app = test_images.ref(registry, "app")
    cas("pull", app)
    exporter = subprocess.Popen(
        [sys.executable, "-m", "cli", "export", "-q", app, "-o", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        loaded = clean_dockerd.load(exporter.stdout)
    finally:
        exporter.stdout.close()
        err = exporter.stderr.read().decode()
        exporter.stderr.close()
        assert exporter.wait(60) == 0, err
    assert f"Loaded image: {app}" in loaded.stdout
    assert clean_dockerd.run(app).stdout == "hello from app\n"


def test_tag_renames_the_exported_image(cas, registry, test_images, clean_dockerd, tmp_path):
    app = test_images.ref(registry, "app")
    cas("pull", app)
    archive = tmp_path / "renamed.tar"
    cas("export", app, "--tag", "renamed/app:2.0", "-o", archive)
    assert "Loaded image: renamed/app:2.0" in clean_dockerd.load(archive).stdout
    assert clean_dockerd.run("renamed/app:2.0").stdout == "hello from app\n"
    two = cas("export", app, test_images.ref(registry, "base"), "--tag", "x:1", "-o", archive, check=False)
    assert two.returncode == 2 and "--tag renames one image" in two.stderr and "Traceback" not in two.stderr


def test_a_deleted_blob_fails_loudly_leaves_nothing_and_pull_repairs(
    cas, cas_home, registry, test_images, clean_dockerd, tmp_path
):
    app = test_images.ref(registry, "app")
    cas("pull", app)
    layer = test_images.app.layers[3].digest  # layer 4 of 5: app's own
    shared = test_images.app.layers[0].digest  # busybox, shared with base
    _store_blob(cas_home, layer).unlink()
    _store_blob(cas_home, shared).unlink()
    out = tmp_path / "out"
    out.mkdir()

    for fmt in ("docker-archive", "oci-archive", "oci-dir"):
        failed = cas("export", "--format", fmt, app, "-o", out / "app", check=False)
        assert failed.returncode == 1
        assert f"{shared} (layer 1/5 of {app})" in failed.stderr
        assert f"{layer} (layer 4/5 of {app})" in failed.stderr
        assert f"cas pull {app}" in failed.stderr and "--pull" in failed.stderr
        assert "Traceback" not in failed.stderr
        assert os.listdir(out) == []  # no archive, no temp file
    assert cas("export", app, "-o", "-", check=False, text=False).stdout == b""

    registry.mark()
    cas("export", "--pull", app, "-o", out / "app.tar")
    assert sorted(r.reference for r in registry.blob_gets()) == sorted([layer, shared])  # only what was missing
    assert os.listdir(out) == ["app.tar"]
    assert clean_dockerd.load(out / "app.tar").returncode == 0
    assert clean_dockerd.run(app).stdout == "hello from app\n"


def test_never_pulled_is_one_line_with_a_hint(cas, registry, test_images, tmp_path):
    ref = test_images.ref(registry, "base")
    out = tmp_path / "out"
    out.mkdir()
    failed = cas("export", ref, "-o", out / "x.tar", check=False)
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        f"error: not in the cache: {ref}",
        f"hint: run `cas pull {ref}` first, or export with --pull",
    ]
    assert os.listdir(out) == []


def test_pull_flag_on_an_empty_cache(cas, registry, test_images, clean_dockerd, tmp_path):
    ref = test_images.ref(registry, "base")
    result = cas("export", "--pull", ref, "-o", tmp_path / "base.tar", "--json")
    assert json.loads(result.stdout)["pulled_refs"] == [ref]
    assert clean_dockerd.load(tmp_path / "base.tar").returncode == 0
    assert clean_dockerd.run(ref).stdout == "hello from base\n"


def test_refuses_to_write_a_tar_to_a_terminal(cas_home, registry, test_images, cas, tmp_path):
    app = test_images.ref(registry, "app")
    cas("pull", app)
    main, secondary = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "cli", "export", app, "-o", "-"],
            stdout=secondary,
            stderr=subprocess.PIPE,
            cwd=REPO_ROOT,
            timeout=60,
        )
    finally:
        os.close(secondary)
        os.close(main)
    assert proc.returncode == 2  # a usage mistake, like a bad option
    assert b"refusing to write a tar archive to a terminal" in proc.stderr


def test_export_path_imports_no_http_client(cas_home, registry, test_images, cas, tmp_path):
    """No network without --pull, and none of its start-up cost either."""
    app = test_images.ref(registry, "app")
    cas("pull", app)
    probe = (
        "import sys\n"
        "from cli.main import register\n"  # main() ends the process; run the typer app itself
        "app = register('export')\n"
        f"app(args=['export', '-q', {app!r}, '-o', {str(tmp_path / 'x.tar')!r}], standalone_mode=False)\n"
        "print(sorted(m for m in ('httpx', 'httpcore', 'ssl', 'cas.pull', 'cas.registry') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def _push_sha512_image(registry, repository: str, tag: str) -> dict:
    """An OCI image whose config and layer are named by sha512 digests (the manifest's own
    digest is the registry's sha256); returns {"config", "layers", "manifest"} digests."""
    import hashlib

    from support import auth
    from support import images as im

    layer = im.layer({"hello.txt": b"hello from sha512\n"})
    config = im.canonical_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/hello.txt"]},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
    )

    def sha512(data: bytes) -> str:
        return "sha512:" + hashlib.sha512(data).hexdigest()

    manifest = im.Blob(
        im.canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": im.OCI_MANIFEST,
                "config": {"mediaType": im.OCI_CONFIG, "digest": sha512(config), "size": len(config)},
                "layers": [{"mediaType": im.MEDIA["oci"]["gzip"], "digest": sha512(layer.data), "size": layer.size}],
            }
        ),
        im.OCI_MANIFEST,
    )
    with auth.client(registry, push=True) as client:
        for data in (config, layer.data):
            start = client.post(f"/v2/{repository}/blobs/uploads/")
            assert start.status_code == 202, start.text
            location = start.headers["Location"]
            location += ("&" if "?" in location else "?") + "digest=" + sha512(data)
            put = client.put(location, content=data, headers={"Content-Type": "application/octet-stream"})
            assert put.status_code == 201, put.text
        im.put_manifest(client, repository, tag, manifest)
    return {
        "config": sha512(config),
        "layers": [sha512(layer.data)],
        "manifest": manifest.digest,
        "diff_ids": [layer.diff_id],
    }


def test_sha512_image_exports_and_loads(cas, registry, skopeo, clean_dockerd, tmp_path):
    ref = f"{registry.host}/sha512app:1"
    pushed = _push_sha512_image(registry, "sha512app", "1")
    cas("pull", ref)
    blobs = {f"blobs/sha512/{d[7:]}" for d in (pushed["config"], *pushed["layers"])}
    assert all(len(name) > 100 for name in blobs)

    for fmt in ("docker-archive", "oci-archive"):
        archive = tmp_path / f"{fmt}.tar"
        result = cas("export", "--format", fmt, ref, "-o", archive, check=False)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert _blob_names(archive) == blobs | {f"blobs/sha256/{pushed['manifest'][7:]}"}
        listed = subprocess.run(["tar", "-tf", str(archive)], capture_output=True, text=True, check=True).stdout.split()
        assert blobs <= set(listed)  # GNU tar reads the PAX path records too
    docker_archive = tmp_path / "docker-archive.tar"
    assert _tar_json(docker_archive, "manifest.json")[0]["Layers"] == [
        f"blobs/sha512/{d[7:]}" for d in pushed["layers"]
    ]

    # skopeo 1.9 reads sha512 blobs from a docker-archive (it hashes them itself) but from no
    # OCI source at all, not even a plain oci: directory; the oci-archive is checked by tar above.
    skopeo.copy(f"docker-archive:{docker_archive}", f"oci:{tmp_path / 'from-docker-archive'}:x")
    assert f"Loaded image: {ref}" in clean_dockerd.load(docker_archive).stdout
    assert clean_dockerd.image_inspect(ref)["RootFS"]["Layers"] == pushed["diff_ids"]


def test_both_tags_of_one_manifest_are_kept_by_prune_after_an_export(cas, cas_home, registry, test_images, tmp_path):
    from support import auth
    from support import images as im

    from cas.store import Store

    im.push(registry, "twotags", "1", test_images.app)
    with auth.client(registry, push=True) as client:
        im.put_manifest(client, "twotags", "latest", test_images.app.manifest_blob)
    one, latest = f"{registry.host}/twotags:1", f"{registry.host}/twotags:latest"
    cas("pull", one, latest)
    store = Store(cas_home)
    try:
        for ref in (one, latest):  # both pulled long ago, never used since
            store.metadata.put_ref(only_record(store, ref).replace(pulled=1000.0, used=1000.0))
    finally:
        store.close()

    cas("export", one, latest, "-o", tmp_path / "app.tar")
    cas("prune", "--older-than", "1h")
    listed = [row["ref"] for row in json.loads(cas("images", "--json").stdout)["images"]]
    assert sorted(listed) == sorted([one, latest])  # the export used both names


def _plant_symlink(cas_home: Path, digest: str, outside: Path) -> None:
    path = _store_blob(cas_home, digest)
    outside.write_bytes(b"S" * path.stat().st_size)  # same size: the completeness check passes
    path.unlink()
    path.symlink_to(outside)


def test_a_symlink_in_the_store_fails_export_with_one_error(cas, cas_home, registry, test_images, tmp_path):
    app = test_images.ref(registry, "app")
    cas("pull", app)
    layer = test_images.app.layers[3].digest  # app's own, 120 KB
    _plant_symlink(cas_home, layer, tmp_path / "secret")
    out = tmp_path / "out"
    out.mkdir()
    for fmt in ("docker-archive", "oci-archive", "oci-dir"):
        failed = cas("export", "--format", fmt, app, "-o", out / "app", check=False)
        assert failed.returncode == 1, failed.stderr
        assert "Traceback" not in failed.stderr
        lines = failed.stderr.splitlines()
        assert lines[0].startswith("error: refusing to export from the store: ") and layer[7:] in lines[0]
        assert "is a symlink; it was not followed" in lines[0]
        assert lines[1].startswith("hint: run `cas verify --repair`")
        assert os.listdir(out) == []
    streamed = cas("export", app, "-o", "-", check=False, text=False)
    secret = (tmp_path / "secret").read_bytes()
    assert streamed.returncode == 1 and secret not in streamed.stdout  # the outside bytes never went out


def test_pull_flag_plans_once_and_again_only_after_a_pull(cas_home, registry, test_images, tmp_path, monkeypatch):
    import cas.export
    from cas.export import ExportOptions, export
    from cas.reference import parse
    from cas.store import Store

    ref, app = parse(test_images.ref(registry, "base")), parse(test_images.ref(registry, "app"))
    plans = []
    real_plan = cas.export.plan
    monkeypatch.setattr(cas.export, "plan", lambda *a, **k: plans.append([str(r) for r in a[1]]) or real_plan(*a, **k))
    store = Store(cas_home)
    try:
        from cas.pull import pull

        pull(store, app)
        first = export(store, [ref, app], tmp_path / "first.tar", ExportOptions(pull=True))
        assert first.pulled == [str(ref)]  # exactly what the check found missing: app was cached
        assert plans == [[str(ref), str(app)]] * 2  # the check, then the check after the pull; never per reference
        plans.clear()
        registry.mark()
        second = export(store, [ref], tmp_path / "second.tar", ExportOptions(pull=True))
        assert second.pulled == [] and plans == [[str(ref)]]  # cached: one check, no pull
        assert registry.requests() == []
    finally:
        store.close()
