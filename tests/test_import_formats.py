"""cas import beyond the round trip: OCI layout directories, --tag, unnamed images, deltas against
the receiver's inventory, and the tar reader on the tar dialects real tools write."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pty
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cas.importer.tarstream import DIR, FILE, HARDLINK, SYMLINK, TarStream, TruncatedArchive, UnsafeArchive


@pytest.fixture
def cas_in(cas):
    return lambda home, *args, **kwargs: cas(*args, env={"CAS_HOME": str(home)}, **kwargs)


def _images(cas_in, home) -> list[dict]:
    return json.loads(cas_in(home, "images", "--json").stdout)["images"]


def test_oci_layout_directory_from_cas_and_from_skopeo(cas, cas_in, registry, test_images, skopeo, tmp_path):
    ref = test_images.ref(registry, "ocidata")
    cas("pull", ref)
    layout = tmp_path / "layout"
    cas("export", ref, "--format", "oci-dir", "-o", layout)
    out = json.loads(cas_in(tmp_path / "b", "import", layout, "--json").stdout)
    assert out["format"] == "oci-dir"
    assert out["images"][0]["refs"] == [ref] and out["images"][0]["manifest"] == test_images.ocidata.digest

    # skopeo names the image with a bare tag ("ocidata"): that is no full name, so --tag names it
    sk = tmp_path / "sk-layout"
    skopeo.copy(f"docker://{ref}", f"oci:{sk}:ocidata", extra=("--preserve-digests",))
    refused = cas_in(tmp_path / "c", "import", sk, "--format", "oci-archive", check=False)
    assert refused.returncode == 2 and "is a directory" in refused.stderr
    out = json.loads(cas_in(tmp_path / "c", "import", sk, "--tag", "mirror.local/ocidata:1", "--json").stdout)
    assert out["images"][0]["refs"] == ["mirror.local/ocidata:1"]
    assert [row["ref"] for row in _images(cas_in, tmp_path / "c")] == ["mirror.local/ocidata:1"]


def test_unnamed_image_is_imported_and_listed_by_digest(cas_in, registry, test_images, skopeo, clean_dockerd, tmp_path):
    pushed = test_images.push(registry)["base"]
    archive = tmp_path / "unnamed.tar"
    skopeo.copy(f"docker://{pushed.ref}", f"oci-archive:{archive}")
    out = json.loads(cas_in(tmp_path / "b", "import", archive, "--json").stdout)
    recorded = f"localhost/imported@{pushed.digest}"
    assert out["images"][0]["names"] == [] and out["images"][0]["refs"] == [recorded]
    assert [row["manifest"] for row in _images(cas_in, tmp_path / "b")] == [pushed.digest]
    again = tmp_path / "again.tar"
    cas_in(tmp_path / "b", "export", recorded, "-o", again)
    loaded = clean_dockerd.load(again).stdout
    assert "Loaded image ID: " in loaded
    assert clean_dockerd.run(loaded.split("Loaded image ID: ")[1].strip()).stdout == "hello from base\n"


def test_tag_needs_exactly_one_image(cas, cas_in, registry, test_images, tmp_path):
    base, app = test_images.ref(registry, "base"), test_images.ref(registry, "app")
    cas("pull", base, app)
    both = tmp_path / "both.tar"
    cas("export", base, app, "-o", both)
    refused = cas_in(tmp_path / "b", "import", both, "--tag", "x:1", check=False)
    assert refused.returncode == 2 and "holds 2" in refused.stderr
    assert _images(cas_in, tmp_path / "b") == []
    out = json.loads(cas_in(tmp_path / "b", "import", both, "--json").stdout)
    assert sorted(ref for image in out["images"] for ref in image["refs"]) == sorted([app, base])


def test_delta_against_the_receivers_inventory(cas, cas_in, registry, test_images, tmp_path):
    base, app = test_images.ref(registry, "base"), test_images.ref(registry, "app")
    cas("pull", base, app)
    full = tmp_path / "base.tar"
    cas("export", base, "-o", full)
    receiver = tmp_path / "receiver"
    cas_in(receiver, "import", full)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(cas_in(receiver, "images", "--json").stdout)

    delta = tmp_path / "app.delta"
    summary = json.loads(cas("export", app, "--since-inventory", inventory, "-o", delta, "--json").stdout)
    assert summary["delta"]["required_blobs"] == 3 and summary["delta"]["carried_blobs"] == 4
    with tarfile.open(delta) as tar:
        description = json.load(tar.extractfile("cas-delta.json"))
    assert {r["from"] for r in description["requires"]} == {f"{base} (inventory)"}
    assert {r["digest"] for r in description["requires"]} == {layer.digest for layer in test_images.base.layers}
    cas_in(receiver, "import", delta)
    assert sorted(row["ref"] for row in _images(cas_in, receiver)) == sorted([app, base])

    refused = cas("export", app, "--since", base, "--format", "oci-archive", "-o", delta, check=False)
    assert refused.returncode == 2 and "own format" in refused.stderr


# --- the tar reader ------------------------------------------------------------------------
def _read_all(data: bytes) -> list[tuple[str, str, bytes, str | None]]:
    stream = TarStream(io.BytesIO(data))
    return [(m.name, m.kind, b"".join(stream.chunks()), m.target) for m in stream]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_dialects_long_names_links_and_directories(fmt):
    name = "p" * 60 + "/" + "q" * 60 + "/layer.tar"  # over 100 bytes: GNU long name, PAX path, ustar prefix
    data = b"x" * 1000

    def add(tar, member, *, kind=tarfile.REGTYPE, target="", content=None):
        info = tarfile.TarInfo(member)
        info.type, info.linkname = kind, target
        if content is not None:
            info.size = len(content)
        tar.addfile(info, io.BytesIO(content) if content is not None else None)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        add(tar, "./sub", kind=tarfile.DIRTYPE)
        add(tar, name, content=data)
        add(tar, "short.tar", content=b"y")
        add(tar, "sub/link.tar", kind=tarfile.SYMTYPE, target="../short.tar")
        add(tar, "hard.tar", kind=tarfile.LNKTYPE, target="short.tar")
        if fmt != tarfile.USTAR_FORMAT:  # a link target over 100 bytes
            add(tar, "sub/long.tar", kind=tarfile.SYMTYPE, target=f"../{name}")
    expected = [
        ("sub", DIR, b"", None),
        (name, FILE, data, None),
        ("short.tar", FILE, b"y", None),
        ("sub/link.tar", SYMLINK, b"", "short.tar"),
        ("hard.tar", HARDLINK, b"", "short.tar"),
    ]
    if fmt != tarfile.USTAR_FORMAT:
        expected.append(("sub/long.tar", SYMLINK, b"", name))
    assert _read_all(buf.getvalue()) == expected


def test_a_stream_cut_anywhere_is_truncated_or_ends_between_members():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(3):
            data = hashlib.sha256(bytes([i])).digest() * 40
            info = tarfile.TarInfo(f"m{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    whole = buf.getvalue()
    clean = []
    for cut in [*range(1, 3 * 2048, 97), 2048, 4096, 3 * 2048]:  # up to the end-of-archive blocks
        stream = TarStream(io.BytesIO(whole[:cut]))
        try:
            for _ in stream:
                pass
        except TruncatedArchive:
            continue
        clean.append(cut)
    assert clean == [2048, 4096, 6144]  # only a cut between members (512-byte header + 1536 of data) ends cleanly


def test_refuses_to_read_an_archive_from_a_terminal(cas_home, tmp_path):
    main, secondary = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "cli", "import", "-"],
            stdin=secondary,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parent.parent,
        )
    finally:
        os.close(main)
        os.close(secondary)
    assert proc.returncode == 2 and proc.stderr.startswith("error: refusing to read an archive from a terminal")


def test_delta_since_several_bases_names_the_base_of_each_required_blob(cas, registry, test_images, tmp_path):
    base, app, dockermedia = (test_images.ref(registry, name) for name in ("base", "app", "dockermedia"))
    cas("pull", base, app, dockermedia)
    delta = tmp_path / "app.delta"
    cas("export", app, "--since", dockermedia, "--since", base, "-o", delta)
    with tarfile.open(delta) as tar:
        description = json.load(tar.extractfile("cas-delta.json"))
        carried = {name.removeprefix("blobs/sha256/") for name in tar.getnames() if name.startswith("blobs/sha256/")}
    busybox, *base_own = (layer.digest for layer in test_images.base.layers)
    assert {r["digest"]: r["from"] for r in description["requires"]} == {
        busybox: dockermedia,  # the first base that holds it
        **dict.fromkeys(base_own, base),
    }
    app_own = [layer.digest for layer in test_images.app.layers[3:]]
    assert carried == {d[7:] for d in [test_images.app.digest, test_images.app.config_blob.digest, *app_own]}
    assert [image["ref"] for image in description["images"]] == [app]
    assert description["images"][0]["manifest"] == test_images.app.digest


def test_a_multi_platform_reference_sent_as_a_delta_keeps_its_index_digest(
    cas, cas_in, registry, test_images, tmp_path
):
    """The receiver records what a pull records: the index as the reference's digest, so its
    `cas images` agrees with the sender's and a later pull from a registry finds everything."""
    base, multi = test_images.ref(registry, "base"), test_images.ref(registry, "multidocker")
    cas("pull", base)
    cas("pull", "--platform", "linux/amd64", multi)
    full, delta = tmp_path / "base.tar", tmp_path / "multi.delta"
    cas("export", base, "-o", full)
    cas("export", multi, "--since", base, "-o", delta)
    with tarfile.open(delta) as tar:
        description = json.load(tar.extractfile("cas-delta.json"))
    assert test_images.multidocker.digest in {blob["digest"] for blob in description["blobs"]}

    receiver = tmp_path / "receiver"
    cas_in(receiver, "import", full)
    imported = json.loads(cas_in(receiver, "import", delta, "--json").stdout)
    assert imported["images"][0]["manifest"] == test_images.multidocker.for_platform("linux/amd64").digest
    (row,) = [r for r in _images(cas_in, receiver) if r["ref"] == multi]
    assert row["digest"] == test_images.multidocker.digest  # before: the amd64 manifest's digest
    raw = cas_in(receiver, "inspect", "--raw", multi, text=False).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == test_images.multidocker.digest
    again = json.loads(cas_in(receiver, "pull", "--json", "--platform", "linux/amd64", multi).stdout)["images"][0]
    assert again["downloaded_blobs"] == 0 and again["digest"] == row["digest"]


def test_a_delta_refuses_an_index_whose_stored_bytes_changed(cas, cas_home, registry, test_images, tmp_path):
    """The index a delta carries is read and checked like a manifest: changed bytes fail the export."""
    from test_lifecycle_support import flip_byte

    base, multi = test_images.ref(registry, "base"), test_images.ref(registry, "multidocker")
    cas("pull", base)
    cas("pull", "--platform", "linux/amd64", multi)
    index = test_images.multidocker.digest
    flip_byte(cas_home / "v1" / "blobs" / "sha256" / index.removeprefix("sha256:"), offset=10)
    out = tmp_path / "multi.delta"
    proc = cas("export", multi, "--since", base, "-o", out, check=False)
    assert proc.returncode == 1 and not out.exists()
    assert f"{index} (index of {multi}): content hashes to sha256:" in proc.stderr


def test_extended_headers_are_bounded():
    info = tarfile.TarInfo("m")
    info.pax_headers = {"comment": "c" * 600_000}
    one = info.tobuf(format=tarfile.PAX_FORMAT)
    pax, header = one[:-512], one[-512:]
    assert len(_read_all(pax + header + bytes(1024))) == 1
    with pytest.raises(UnsafeArchive, match="extended headers"):
        _read_all(pax + pax + header + bytes(1024))  # two of them: over 1 MiB before one member


def test_every_platform_an_archive_carries_is_recorded_under_its_index(cas_in, registry, test_images, skopeo, tmp_path):
    pushed = test_images.push(registry)["multi"]
    archive = tmp_path / "multi.tar"
    skopeo.copy(f"docker://{pushed.ref}", f"oci-archive:{archive}:{pushed.ref}", all=True)
    out = json.loads(cas_in(tmp_path / "b", "import", archive, "--json").stdout)
    assert sorted(image["platform"] for image in out["images"]) == ["linux/amd64", "linux/arm/v7", "linux/arm64/v8"]
    rows = [row for row in _images(cas_in, tmp_path / "b") if row["ref"] == pushed.ref]
    assert sorted(row["platform"] for row in rows) == ["linux/amd64", "linux/arm/v7", "linux/arm64/v8"]
    assert {row["digest"] for row in rows} == {pushed.digest}  # the index, as a pull records it
    assert {row["manifest"] for row in rows} == {image.digest for image in test_images.multi.images}


def test_forced_format_refuses_another_layout(cas, cas_in, registry, test_images, tmp_path):
    ref = test_images.ref(registry, "base")
    cas("pull", ref)
    oci_archive = tmp_path / "base-oci.tar"
    cas("export", ref, "--format", "oci-archive", "-o", oci_archive)
    refused = cas_in(tmp_path / "b", "import", oci_archive, "--format", "docker-archive", check=False)
    assert refused.returncode == 1 and "not a docker-archive: it has no manifest.json" in refused.stderr
    assert _images(cas_in, tmp_path / "b") == []
    out = json.loads(cas_in(tmp_path / "b", "import", oci_archive, "--format", "oci-archive", "--json").stdout)
    assert out["format"] == "oci-archive"


def test_a_delta_is_no_image_archive_for_skopeo_or_podman(cas, registry, test_images, skopeo, clean_podman, tmp_path):
    base, app = test_images.ref(registry, "base"), test_images.ref(registry, "app")
    cas("pull", base, app)
    delta = tmp_path / "app.delta"
    cas("export", app, "--since", base, "-o", delta)
    for transport in ("docker-archive", "oci-archive"):
        refused = skopeo.copy(f"{transport}:{delta}", f"oci:{tmp_path / transport}:app", check=False)
        assert refused.returncode != 0, transport
    assert clean_podman.load(delta, check=False).returncode != 0
    assert clean_podman.images() == []


def test_legacy_archive_with_compressed_layers_named_by_digest(cas_in, test_images, clean_dockerd, tmp_path):
    """go-containerregistry's tarball: config `sha256:<hex>`, layers `<hex>.tar.gz`, manifest.json only."""
    app = test_images.app
    entry = {
        "Config": app.config_blob.digest,
        "RepoTags": ["ggcr.local/app:1"],
        "Layers": [f"{layer.digest[7:]}.tar.gz" for layer in app.layers],
    }
    archive = _write_tar(
        tmp_path / "ggcr.tar",
        [
            (app.config_blob.digest, app.config_blob.data),
            *((f"{layer.digest[7:]}.tar.gz", layer.data) for layer in app.layers),
            ("manifest.json", json.dumps([entry]).encode()),
        ],
    )
    home = tmp_path / "b"
    out = json.loads(cas_in(home, "import", archive, "--json").stdout)
    assert out["images"][0]["refs"] == ["ggcr.local/app:1"] and out["images"][0]["built_manifest"]
    inspect = json.loads(cas_in(home, "inspect", "ggcr.local/app:1", "--json").stdout)
    assert [layer["digest"] for layer in inspect["layers"]] == [layer.digest for layer in app.layers]
    assert {layer["media_type"] for layer in inspect["layers"]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    # the same image as blobs/ members the store already holds: their first bytes are read from the store
    blobs_only = tmp_path / "blobs-only.tar"
    entry = {
        "Config": f"blobs/sha256/{app.config_blob.digest[7:]}",
        "RepoTags": ["ggcr.local/app:2"],
        "Layers": [f"blobs/sha256/{layer.digest[7:]}" for layer in app.layers],
    }
    _write_tar(
        blobs_only,
        [
            (entry["Config"], app.config_blob.data),
            *((f"blobs/sha256/{layer.digest[7:]}", layer.data) for layer in app.layers),
            ("manifest.json", json.dumps([entry]).encode()),
        ],
    )
    second = json.loads(cas_in(home, "import", blobs_only, "--json").stdout)
    assert second["reused_blobs"] == len(app.layers) + 1 and second["stored_blobs"] == 0
    assert second["images"][0]["manifest"] == out["images"][0]["manifest"]  # the same built manifest

    again = tmp_path / "again.tar"
    cas_in(home, "export", "ggcr.local/app:1", "-o", again)
    assert "Loaded image: ggcr.local/app:1" in clean_dockerd.load(again).stdout
    assert clean_dockerd.run("ggcr.local/app:1").stdout == "hello from app\n"


def _write_tar(path, members: list[tuple[str, bytes]]):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
