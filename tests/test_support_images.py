"""Self-tests of the in-memory image builder: real tars, true diff_ids, the promised media types."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile

from support import images as im
from support.standard import standard_images


def _tar(lay: im.Layer) -> bytes:
    if lay.compression == "gzip":
        return gzip.decompress(lay.data)
    if lay.compression == "zstd":
        return subprocess.run(["zstd", "-d", "-c"], input=lay.data, capture_output=True, check=True).stdout
    return lay.data


def test_layers_are_deterministic_tars_whose_diff_id_is_the_uncompressed_digest():
    files = {"/etc/hello.txt": "hi\n", "bin/tool": im.File(b"#!/bin/sh\n", 0o755), "bin/link": im.Symlink("tool")}
    for compression in im.COMPRESSIONS:
        lay = im.layer(files, compression=compression)
        assert lay.data == im.layer(files, compression=compression).data
        raw = _tar(lay)
        assert lay.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"bin", "bin/link", "bin/tool", "etc", "etc/hello.txt"}
        assert members["bin"].isdir() and members["bin/link"].linkname == "tool"
        assert members["bin/tool"].mode == 0o755 and members["etc/hello.txt"].mtime == im.EPOCH
    assert im.layer(files, compression="none").data != im.layer(files).data


def test_random_layer_is_incompressible_and_reproducible():
    lay = im.random_layer(300_000, seed=7)
    assert 300_000 <= lay.size < 310_000
    assert lay.digest == im.random_layer(300_000, seed=7).digest != im.random_layer(300_000, seed=8).digest


def test_busybox_layer_holds_an_executable_and_applet_links():
    with tarfile.open(fileobj=io.BytesIO(_tar(im.busybox_layer()))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode & 0o111
    assert members["bin/sh"].linkname == members["bin/cat"].linkname == "busybox"


def test_image_config_and_manifest_agree_for_both_media_flavours():
    lays = [im.layer({"a": "1"}), im.layer({"b": "2"}, compression="none")]
    for media, manifest_type, layer_types in (
        (
            "oci",
            im.OCI_MANIFEST,
            ["application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar"],
        ),
        (
            "docker",
            im.DOCKER_MANIFEST,
            ["application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.diff.tar"],
        ),
    ):
        img = im.Image(lays, media=media, architecture="arm", variant="v7")
        manifest = json.loads(img.manifest_blob.data)
        config = json.loads(img.config_blob.data)
        assert img.media_type == manifest["mediaType"] == manifest_type
        assert [lay["mediaType"] for lay in manifest["layers"]] == layer_types
        assert manifest["config"]["digest"] == img.config_blob.digest
        assert config["rootfs"]["diff_ids"] == [lay.diff_id for lay in lays]
        assert len(config["history"]) == 2 and img.platform == "linux/arm/v7"
    assert "mediaType" not in json.loads(im.Image(lays, omit_media_type=True).manifest_blob.data)


def test_standard_images_have_the_documented_shape():
    s = standard_images()
    assert s.app.layers[:3] == s.base.layers and len(s.app.layers) == 5
    assert s.dockermedia.media_type == im.DOCKER_MANIFEST
    assert {lay.compression for lay in s.ocidata.layers} == {"none"}
    for index, media in ((s.multi, im.OCI_INDEX), (s.multidocker, im.DOCKER_LIST)):
        assert index.media_type == media
        assert [img.platform for img in index.images] == ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]
        assert len({img.digest for img in index.images}) == 3
        entry = json.loads(index.manifest_blob.data)["manifests"][1]
        assert entry["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    small = sum(
        lay.size
        for name in ("base", "app", "dockermedia", "ocidata")
        for lay in s[name].layers
        if lay.comment != "busybox"
    )
    assert small < 1_000_000
