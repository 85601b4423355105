"""cas import, end to end: archives written by cas, dockerd and skopeo into a fresh store, then out
again to a daemon whose image store was just emptied (docker skips layers it holds, which would
hide a missing layer file).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest


@pytest.fixture
def cas_in(cas):
    """cas with its own CAS_HOME: several stores in one test (the sender and the receivers)."""
    return lambda home, *args, **kwargs: cas(*args, env={"CAS_HOME": str(home)}, **kwargs)


def refs_of(cas_in, home: Path) -> list[str]:
    return [row["ref"] for row in json.loads(cas_in(home, "images", "--json").stdout)["images"]]


def store_debris(home: Path) -> list[str]:
    ingest = home / "v1" / "ingest"
    return sorted(os.listdir(ingest)) if ingest.exists() else []


def test_round_trip_pull_export_import_export_loads_and_runs(
    cas, cas_in, cas_home, registry, test_images, clean_dockerd, tmp_path
):
    app = test_images.ref(registry, "app")
    cas("pull", app)
    first = tmp_path / "app.tar"
    cas("export", app, "-o", first)

    other = tmp_path / "store-b"
    out = json.loads(cas_in(other, "import", first, "--json").stdout)
    assert out["format"] == "docker-archive"
    assert out["images"][0]["refs"] == [app]
    assert out["images"][0]["manifest"] == test_images.app.digest  # the registry's own manifest
    assert out["stored_blobs"] == len(test_images.app.digests)
    assert refs_of(cas_in, other) == [app]
    assert store_debris(other) == []
    cas_in(other, "verify", "--deep")  # every blob indexed, with the fingerprint of its bytes

    registry.mark()
    second = tmp_path / "again.tar"
    cas_in(other, "export", app, "-o", second)
    assert registry.requests() == []
    with tarfile.open(first) as a, tarfile.open(second) as b:
        assert {m.name for m in a} == {m.name for m in b}

    assert f"Loaded image: {app}" in clean_dockerd.load(second).stdout
    assert clean_dockerd.run(app).stdout == "hello from app\n"


def test_import_from_stdin_of_every_cas_format(cas, cas_in, registry, test_images, tmp_path):
    ref = test_images.ref(registry, "dockermedia")
    cas("pull", ref)
    for fmt in ("docker-archive", "oci-archive"):
        archive = tmp_path / f"{fmt}.tar"
        cas("export", ref, "--format", fmt, "-o", archive)
        home = tmp_path / f"from-{fmt}"
        with open(archive, "rb") as fh:
            out = json.loads(cas_in(home, "import", "-", "--json", stdin=fh).stdout)
        assert out["images"][0]["manifest"] == test_images.dockermedia.digest
        assert refs_of(cas_in, home) == [ref]
        inspect = json.loads(cas_in(home, "inspect", ref, "--json").stdout)
        assert inspect["media_type"] == "application/vnd.docker.distribution.manifest.v2+json"


def _seed_images(registry):
    """The seed's case: an old and a new image of 25 layers, the new one sharing 21 of the old's."""
    from support.images import Image, busybox_layer, push, random_layer

    shared = [random_layer(30_000 + i, seed=100 + i) for i in range(21)]
    old = Image([busybox_layer(), *shared, *(random_layer(40_000, seed=200 + i) for i in range(3))], cmd=("/bin/ls",))
    new_layers = [random_layer(50_000 + i, seed=300 + i, path=f"new{i}.bin") for i in range(3)]
    new = Image([busybox_layer(), *shared, *new_layers], cmd=("/bin/sha256sum", "/new2.bin"))
    push(registry, "seed", "old", old)
    push(registry, "seed", "new", new)
    return old, new, new_layers


def test_seed_case_across_a_gap_with_a_delta(cas_in, registry, clean_dockerd, tmp_path):
    old, new, new_layers = _seed_images(registry)
    old_ref, new_ref = f"{registry.host}/seed:old", f"{registry.host}/seed:new"
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    cas_in(a, "pull", old_ref, new_ref)
    full = tmp_path / "old.tar"
    cas_in(a, "export", old_ref, "-o", full)
    cas_in(b, "import", full)

    delta = tmp_path / "new-since-old.tar"
    summary = json.loads(cas_in(a, "export", new_ref, "--since", old_ref, "-o", delta, "--json").stdout)
    new_bytes = sum(layer.size for layer in new_layers)
    assert summary["delta"]["carried_blobs"] == 2 + len(new_layers)  # manifest, config, the new layers
    assert summary["delta"]["required_blobs"] == 22
    # manifest and config, then per member a header and at most 4 KiB of alignment padding
    overhead = new.manifest_blob.size + new.config_blob.size + 8192 * (summary["delta"]["carried_blobs"] + 3)
    assert new_bytes < delta.stat().st_size <= new_bytes + overhead
    assert delta.stat().st_size * 5 < new.size  # the full image is several times larger
    with tarfile.open(delta) as tar:
        names = tar.getnames()
    assert names[0] == "cas-delta.json"
    assert not {"manifest.json", "index.json", "oci-layout"} & set(names)
    # not an image archive for anyone else: docker load refuses it outright
    refused = clean_dockerd.load(delta, check=False)
    assert refused.returncode != 0 and clean_dockerd.images() == []

    # an empty store refuses it, naming every missing digest and its base, and writes nothing
    refusal = cas_in(c, "import", delta, check=False)
    err = refusal.stderr
    assert refusal.returncode == 1
    assert "22 required blob(s) missing" in err
    for layer in [*old.layers[:22]]:
        assert f"{layer.digest} ({layer.size} bytes, from {old_ref})" in err
    assert refs_of(cas_in, c) == []
    assert not (c / "v1" / "blobs").exists() or not any((c / "v1" / "blobs").rglob("*"))
    assert store_debris(c) == []

    out = json.loads(cas_in(b, "import", delta, "--json").stdout)
    assert out["format"] == "delta"
    assert out["stored_blobs"] == 2 + len(new_layers)
    assert sorted(refs_of(cas_in, b)) == sorted([old_ref, new_ref])
    rebuilt = tmp_path / "new.tar"
    cas_in(b, "export", new_ref, "-o", rebuilt)
    assert f"Loaded image: {new_ref}" in clean_dockerd.load(rebuilt).stdout
    from support.images import random_bytes

    assert clean_dockerd.run(new_ref).stdout.split()[0] == hashlib.sha256(random_bytes(50_002, seed=302)).hexdigest()


def test_import_of_docker_save_legacy_layout_streamed_from_stdin(
    cas, cas_in, registry, test_images, clean_dockerd, tmp_path
):
    app, base = test_images.ref(registry, "app"), test_images.ref(registry, "base")
    cas("pull", app, base)
    archive = tmp_path / "both.tar"
    cas("export", app, base, "-o", archive)
    clean_dockerd.load(archive)
    saved = tmp_path / "saved.tar"
    clean_dockerd.docker("save", "-o", str(saved), app, base)
    with tarfile.open(saved) as tar:
        names = tar.getnames()
    assert "index.json" not in names and any(n.endswith("/layer.tar") for n in names)  # dockerd 20.10: legacy
    assert names.index("manifest.json") > max(i for i, n in enumerate(names) if n.endswith("/layer.tar"))

    home = tmp_path / "from-docker-save"
    save = subprocess.Popen([clean_dockerd.client, "save", app, base], stdout=subprocess.PIPE, env=clean_dockerd.env)
    proc = cas_in(home, "import", "-", stdin=save.stdout)
    assert save.wait() == 0
    err = proc.stderr
    assert f"imported {app}" in err and f"imported {base}" in err
    assert "differs from the registry's" in err
    assert sorted(refs_of(cas_in, home)) == sorted([app, base])
    inspect = json.loads(cas_in(home, "inspect", app, "--json").stdout)
    assert inspect["manifest"] != test_images.app.digest  # a manifest cas built for the uncompressed layers
    assert inspect["config"]["digest"] == test_images.app.config_blob.digest  # the same image
    assert [layer["media_type"] for layer in inspect["layers"]] == ["application/vnd.oci.image.layer.v1.tar"] * 5
    assert [layer["digest"] for layer in inspect["layers"]] == test_images.app.diff_ids
    assert store_debris(home) == []
    cas_in(home, "verify", "--deep")  # staged layers too: indexed, fingerprinted while they were written

    again = tmp_path / "again.tar"
    cas_in(home, "export", app, "-o", again)
    clean_dockerd.wipe()
    assert f"Loaded image: {app}" in clean_dockerd.load(again).stdout
    assert clean_dockerd.run(app).stdout == "hello from app\n"


def test_import_of_skopeo_docker_archive(cas_in, registry, test_images, skopeo, clean_dockerd, tmp_path):
    pushed = test_images.push(registry)["base"]
    archive = tmp_path / "skopeo.tar"
    skopeo.copy(f"docker://{pushed.ref}", f"docker-archive:{archive}:cas-test/base:1.0")
    home = tmp_path / "from-skopeo"
    out = json.loads(cas_in(home, "import", archive, "--json").stdout)
    assert out["format"] == "docker-archive (legacy)"
    assert out["images"][0]["names"] == ["cas-test/base:1.0"]
    assert out["images"][0]["built_manifest"] is True
    again = tmp_path / "again.tar"
    cas_in(home, "export", "cas-test/base:1.0", "-o", again)
    assert "Loaded image: cas-test/base:1.0" in clean_dockerd.load(again).stdout
    assert clean_dockerd.run("cas-test/base:1.0").stdout == "hello from base\n"


def test_import_of_docker_save_counts_every_blob_it_stored(cas, cas_in, registry, test_images, clean_dockerd, tmp_path):
    """The config and the manifest cas builds for a legacy image are stored blobs too."""
    app = test_images.ref(registry, "app")
    cas("pull", app)
    exported = tmp_path / "app.tar"
    cas("export", app, "-o", exported)
    clean_dockerd.load(exported)
    saved = tmp_path / "saved.tar"
    clean_dockerd.docker("save", "-o", str(saved), app)

    home = tmp_path / "from-docker-save"
    out = json.loads(cas_in(home, "import", saved, "--json").stdout)
    files = [p for p in (home / "v1" / "blobs").rglob("*") if p.is_file()]
    assert out["stored_blobs"] == len(files) == len(test_images.app.layers) + 2  # layers, config, manifest
    assert out["stored_bytes"] == sum(p.stat().st_size for p in files)
    again = json.loads(cas_in(home, "import", saved, "--json").stdout)
    assert (again["stored_blobs"], again["reused_blobs"]) == (0, len(test_images.app.layers))
