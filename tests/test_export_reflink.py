"""Exports that share extents with the store: aligned tar members, clones on XFS (reflink=1).

Every blob's data in an archive starts at a 4 KiB boundary (a PAX comment pads the header);
the consumers still read it. On a filesystem with reflinks, ``copy_file_range`` then clones
the store's extents: the archive costs (almost) no disk space. The XFS tests loop-mount a
filesystem of their own and fail loudly when the machine cannot (``XfsUnavailable``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tarfile

import pytest
from support import images
from support.xfs import reflink_xfs, used_bytes

from cas.export import tarwriter
from cas.store.fs import Linker


def _check_aligned_blobs(archive) -> int:
    """Every blobs/ member is 4 KiB-aligned and hashes to its name; returns how many there were."""
    count = 0
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith("blobs/sha256/"):
                assert member.offset_data % tarwriter.DATA_ALIGN == 0, member.name
                data = tar.extractfile(member).read()
                assert hashlib.sha256(data).hexdigest() == member.name.rsplit("/", 1)[1]
                count += 1
    return count


def test_aligned_archive_is_read_by_tarfile_skopeo_podman_and_docker(
    cas, registry, test_images, skopeo, clean_podman, clean_dockerd, tmp_path
):
    app = test_images.ref(registry, "app")
    cas("pull", "-q", app)
    archive = tmp_path / "app.tar"
    summary = json.loads(cas("export", app, "-o", archive, "--json").stdout)
    assert summary["copy_method"] == tarwriter.COPY_FILE_RANGE
    assert _check_aligned_blobs(archive) == len(test_images.app.digests)
    skopeo.copy(f"docker-archive:{archive}", f"oci:{tmp_path / 'copy'}:app")
    assert f"Loaded image: {app}" in clean_podman.load(archive).stdout
    assert clean_podman.run(app).stdout == "hello from app\n"
    assert f"Loaded image: {app}" in clean_dockerd.load(archive).stdout
    assert clean_dockerd.run(app).stdout == "hello from app\n"


@pytest.fixture
def xfs(tmp_path):
    with reflink_xfs(tmp_path, size="1G") as mountpoint:
        yield mountpoint


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_export_on_xfs_clones_the_store_extents(fmt, cas, registry, xfs):
    image = images.Image([images.busybox_layer()] + [images.random_layer(12 << 20, seed=70 + i) for i in range(3)])
    images.push(registry, "reflink/big", "1", image)
    ref = f"{registry.host}/reflink/big:1"
    env = {"CAS_HOME": str(xfs / "home")}
    cas("pull", "-q", ref, env=env)
    archive = xfs / "big.tar"
    before = used_bytes(xfs)
    summary = json.loads(cas("export", "--format", fmt, ref, "-o", archive, "--json", env=env).stdout)
    grown = used_bytes(xfs) - before
    size = archive.stat().st_size
    assert size > 36 << 20
    assert summary["copy_method"] == tarwriter.COPY_FILE_RANGE
    assert grown < size * 0.05, f"the archive added {grown} bytes for {size}: its blobs were copied, not cloned"
    assert _check_aligned_blobs(archive) == len(image.digests)


def test_oci_dir_clones_when_it_cannot_hard_link(xfs, monkeypatch):
    src = xfs / "blob"
    data = os.urandom(24 << 20)
    src.write_bytes(data)
    warnings: list[str] = []
    linker = Linker(warnings.append)

    def no_links(*args, **kwargs):
        raise OSError(errno.EMLINK, "Too many links")

    monkeypatch.setattr(os, "link", no_links)
    before = used_bytes(xfs)
    linker.link(src, xfs / "copy")
    assert used_bytes(xfs) - before < len(data) * 0.05  # a clone, not a copy
    assert linker.copying and len(warnings) == 1
    assert (xfs / "copy").read_bytes() == data


def test_copies_across_filesystems_are_whole(xfs, tmp_path):
    src = tmp_path / "blob"  # not on the XFS: no clone, no hard link possible
    data = os.urandom((3 << 20) + 5)
    src.write_bytes(data)
    linker = Linker(lambda message: None)
    linker.link(src, xfs / "copy")
    assert linker.copying
    assert (xfs / "copy").read_bytes() == data
