"""Layer and manifest kinds beyond gzip images, pulled from the real registry and exported to
real consumers: zstd layers (pushed by skopeo), non-distributable (foreign) layers, a nested
index, and artifacts that must be refused as "not a container image".

What each consumer accepts is in docs/integrity.md ("Layer kinds"): zstd layers load in podman and
skopeo, and not in docker 20.10 (Debian 12's docker.io), which the test below pins down.
"""

from __future__ import annotations

import json

import pytest
from support import auth, images
from support.registry import Registry


def _zstd_image(registry) -> str:
    """base's content with zstd layers (OCI media types: Docker's have no zstd), compressed by the zstd
    tool and pushed with plain PUTs. skopeo --dest-compress-format zstd was tried first: its blob-info
    cache (root's, shared by every test) made it keep gzip layers depending on what ran before."""
    img = images.Image(
        [
            images.busybox_layer(compression="zstd"),
            images.layer({"hello.txt": "hello from base\n"}, compression="zstd"),
        ],
        media="oci",
        cmd=("/bin/cat", "/hello.txt"),
    )
    images.push(registry, "base-zstd", "latest", img)
    return f"{registry.host}/base-zstd:latest"


def test_zstd_layers_pull_export_and_load_where_zstd_is_understood(
    cas, registry, skopeo, clean_podman, clean_dockerd, tmp_path
):
    ref = _zstd_image(registry)
    manifest = skopeo.inspect(f"docker://{ref}", raw=True)
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}

    pulled = json.loads(cas("pull", "--json", ref).stdout)["images"][0]
    assert pulled["downloaded_blobs"] == 2 + len(manifest["layers"])  # manifest, config, every layer again: new bytes
    for fmt in ("docker-archive", "oci-archive"):
        archive = tmp_path / f"{fmt}.tar"
        cas("export", "--format", fmt, ref, "-o", archive)
        skopeo.copy(f"{fmt}:{archive}", f"oci:{tmp_path / fmt}-layout:x")  # verifies every digest
    exported = json.loads((tmp_path / "docker-archive-layout" / "index.json").read_text())
    assert len(exported["manifests"]) == 1
    podman_loaded = clean_podman.load(tmp_path / "docker-archive.tar")
    assert ref in podman_loaded.stdout
    assert clean_podman.run(ref).stdout == "hello from base\n"
    # Docker 20.10 has no zstd decompressor (docker 23.0 added it)
    refused = clean_dockerd.load(tmp_path / "docker-archive.tar", check=False)
    assert refused.returncode != 0, "docker loaded zstd layers: update the consumer table in docs/integrity.md"


URLS_ALLOWED = "validation:\n  manifests:\n    urls:\n      allow:\n        - ^https?://\n"


@pytest.fixture(scope="module")
def foreign_registry(tmp_path_factory):
    """Distribution refuses foreign-layer URLs unless its config allows them."""
    reg = Registry(tmp_path_factory.mktemp("registry-foreign"), extra_config=URLS_ALLOWED).start()
    yield reg
    reg.stop()


def _foreign_image(media: str, media_type: str, urls: list[str] | None) -> images.Image:
    img = images.Image(
        [images.busybox_layer(), images.layer({"hello.txt": f"hello from {media} foreign\n"})],
        media=media,
        cmd=("/bin/cat", "/hello.txt"),
    )
    img.manifest["layers"][1]["mediaType"] = media_type
    if urls:
        img.manifest["layers"][1]["urls"] = urls
    img.manifest_blob = images.Blob(images.canonical_json(img.manifest), img.manifest_blob.media_type)
    return img


@pytest.mark.parametrize(
    ("media", "media_type", "urls"),
    [
        ("oci", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", None),
        ("docker", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", ["https://example.invalid/l.tgz"]),
    ],
    ids=["oci-nondistributable", "docker-foreign"],
)
def test_non_distributable_layers_are_pulled_from_the_registry_and_load(
    media, media_type, urls, cas, foreign_registry, skopeo, clean_dockerd, tmp_path
):
    """Pushed with its blob (what ``--allow-nondistributable-artifacts`` does); its URLs are never followed."""
    img = _foreign_image(media, media_type, urls)
    images.push(foreign_registry, f"foreign-{media}", "1", img)
    ref = f"{foreign_registry.host}/foreign-{media}:1"

    info = json.loads(cas("pull", "--json", ref).stdout)["images"][0]
    assert info["manifest"] == img.digest and info["downloaded_blobs"] == len(img.digests)
    archive = tmp_path / "foreign.tar"
    cas("export", ref, "-o", archive)
    skopeo.copy(f"docker-archive:{archive}", f"oci:{tmp_path / 'layout'}:x")
    assert f"Loaded image: {ref}" in clean_dockerd.load(archive).stdout
    assert clean_dockerd.run(ref).stdout == f"hello from {media} foreign\n"


def test_a_foreign_layer_the_registry_lacks_is_one_error_naming_it(cas, foreign_registry):
    img = _foreign_image("docker", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", ["https://x.invalid/l"])
    with auth.client(foreign_registry, push=True) as c:
        for blob in img.blobs[:2]:  # config and busybox: not the foreign layer
            images.push_blob(c, "foreign-absent", blob)
        images.put_manifest(c, "foreign-absent", "1", img.manifest_blob)
    ref = f"{foreign_registry.host}/foreign-absent:1"
    failed = cas("pull", ref, check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    lines = failed.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and img.layers[1].digest in lines[0], lines
    assert json.loads(cas("images", "--json").stdout)["images"] == []


def test_a_nested_index_resolves_to_the_platform_and_exports(cas, registry, test_images, clean_dockerd, tmp_path):
    """index -> index -> manifest: containerd walks nested indexes, so does cas."""
    inner = test_images.multi  # an OCI index of three platforms
    images.push(registry, "nested", None, inner)
    outer = images.Index([inner.for_platform("linux/amd64")])  # an index naming ...
    outer.manifest["manifests"] = [
        {**inner.manifest_blob.descriptor(), "platform": {"os": "linux", "architecture": "amd64"}}  # ... an index
    ]
    outer.manifest_blob = images.Blob(images.canonical_json(outer.manifest), images.OCI_INDEX)
    images.push(registry, "nested", "1", outer)
    ref = f"{registry.host}/nested:1"

    pulled = json.loads(cas("pull", "--json", "--platform", "linux/amd64", ref).stdout)["images"][0]
    amd64 = inner.for_platform("linux/amd64")
    assert (pulled["digest"], pulled["manifest"], pulled["platform"]) == (outer.digest, amd64.digest, "linux/amd64")
    archive = tmp_path / "nested.tar"
    cas("export", ref, "-o", archive)
    assert f"Loaded image: {ref}" in clean_dockerd.load(archive).stdout
    assert clean_dockerd.run(ref).stdout == "linux/amd64\n"
    wrong = cas("pull", "--platform", "linux/s390x", ref, check=False)
    assert wrong.returncode == 1 and "linux/s390x" in wrong.stderr and "Traceback" not in wrong.stderr


ARTIFACTS = {
    "helm chart": "application/vnd.cncf.helm.config.v1+json",
    "oci 1.1 artifact": "application/vnd.oci.empty.v1+json",
    "signature": "application/vnd.dev.cosign.simplesigning.v1+json",
}


@pytest.mark.parametrize("kind", ARTIFACTS)
def test_an_artifact_is_refused_as_not_a_container_image(kind, cas, registry):
    config_type = ARTIFACTS[kind]
    payload = images.Blob(f"{kind} payload\n".encode(), "application/octet-stream")
    config = images.Blob(b"{}", config_type)
    manifest = {
        "schemaVersion": 2,
        "mediaType": images.OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [payload.descriptor()],
    }
    if kind == "oci 1.1 artifact":
        manifest["artifactType"] = "application/vnd.example.sbom+json"
    blob = images.Blob(images.canonical_json(manifest), images.OCI_MANIFEST)
    repository = "artifact-" + kind.replace(" ", "-").replace(".", "")
    with auth.client(registry, push=True) as c:
        for b in (config, payload):
            images.push_blob(c, repository, b)
        images.put_manifest(c, repository, "1", blob)
    ref = f"{registry.host}/{repository}:1"

    refused = cas("pull", ref, check=False)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"error: {ref} is not a container image: config media type {config_type!r}",
        "hint: cas caches container images; artifacts such as charts or signatures are not supported",
    ]
    assert json.loads(cas("images", "--json").stdout)["images"] == []
