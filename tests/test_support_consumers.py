"""Self-tests of the consumers (skopeo, dockerd, podman) and of the cas fixtures: each one runs
for real, and the validators really reject an archive with a missing layer."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from support.tools import CommandFailed


@pytest.fixture(scope="module")
def base_archive(skopeo, test_images, registry, tmp_path_factory) -> Path:
    """A docker-archive of ``base`` written by skopeo: a known-good input for the daemons."""
    out = tmp_path_factory.mktemp("archives") / "base.tar"
    skopeo.copy(f"docker://{test_images.ref(registry, 'base')}", f"docker-archive:{out}:base:latest")
    return out


@pytest.fixture(scope="module")
def archive_missing_a_layer(base_archive, tmp_path_factory) -> Path:
    """``base_archive`` minus one layer file that its manifest.json still lists: the archive cas must never write."""
    out = tmp_path_factory.mktemp("archives") / "missing-layer.tar"
    with tarfile.open(base_archive) as src, tarfile.open(out, "w") as dst:
        manifest = json.load(src.extractfile("manifest.json"))
        dropped = manifest[0]["Layers"][-1]
        for member in src.getmembers():
            if member.name != dropped:
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    return out


@pytest.mark.parametrize("mode", ["registry", "basic_registry", "token_registry"])
def test_skopeo_copies_a_pushed_image_to_an_oci_dir(request, mode, skopeo, test_images, tmp_path):
    reg = request.getfixturevalue(mode)
    creds = f"{reg.username}:{reg.password}" if reg.username else None
    skopeo.copy(f"docker://{test_images.ref(reg, 'base')}", f"oci:{tmp_path / 'oci'}:base", src_creds=creds)
    index = json.loads((tmp_path / "oci" / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    assert manifest_digest == test_images.base.digest  # OCI to OCI: copied byte for byte
    for lay in test_images.base.layers:
        assert (tmp_path / "oci/blobs/sha256" / lay.digest.split(":")[1]).stat().st_size == lay.size


def test_skopeo_without_credentials_fails_loudly_on_basic(skopeo, basic_registry, test_images, tmp_path):
    with pytest.raises(CommandFailed, match="401|unauthorized|authentication required"):
        skopeo.copy(f"docker://{test_images.ref(basic_registry, 'base')}", f"oci:{tmp_path / 'oci'}:base")


def test_dockerd_starts_empty_and_runs_a_loaded_image(clean_dockerd, base_archive, test_images):
    assert clean_dockerd.images() == []
    assert "Server" in clean_dockerd.docker("version").stdout
    assert "Loaded image: base:latest" in clean_dockerd.load(base_archive).stdout
    assert [row["Repository"] for row in clean_dockerd.images()] == ["base"]
    assert clean_dockerd.run("base:latest", "cat", "/hello.txt").stdout == "hello from base\n"
    assert clean_dockerd.run("base:latest").stdout == "hello from base\n"  # the image's Cmd
    assert clean_dockerd.image_inspect("base:latest")["RootFS"]["Layers"] == test_images.base.diff_ids
    clean_dockerd.wipe()
    assert clean_dockerd.images() == []


def test_dockerd_loads_from_stdin(clean_dockerd, base_archive):
    with open(base_archive, "rb") as f:
        assert "Loaded image: base:latest" in clean_dockerd.load(f).stdout


def test_an_empty_dockerd_rejects_an_archive_missing_a_layer(clean_dockerd, archive_missing_a_layer):
    result = clean_dockerd.load(archive_missing_a_layer, check=False)
    assert result.returncode != 0
    assert "no such file or directory" in result.stderr


def test_podman_loads_runs_and_wipes(clean_podman, base_archive):
    assert clean_podman.images() == []
    clean_podman.load(base_archive)
    assert clean_podman.run("base:latest", "cat", "/hello.txt").stdout == "hello from base\n"
    assert len(clean_podman.images()) == 1
    clean_podman.wipe()
    assert clean_podman.images() == []


def test_podman_rejects_an_archive_missing_a_layer(clean_podman, archive_missing_a_layer):
    assert clean_podman.load(archive_missing_a_layer, check=False).returncode == 125


def test_skopeo_rejects_an_archive_missing_a_layer(skopeo, archive_missing_a_layer, tmp_path):
    result = skopeo.copy(f"docker-archive:{archive_missing_a_layer}", f"oci:{tmp_path / 'out'}", check=False)
    assert result.returncode != 0 and "Some layer tarfiles are missing in the tarball" in result.stderr


def test_cas_home_is_fresh_and_set(cas_home):
    assert os.environ["CAS_HOME"] == str(cas_home)
    assert cas_home.is_dir() and list(cas_home.iterdir()) == []
    assert list(Path(os.environ["DOCKER_CONFIG"]).iterdir()) == []


def test_cas_runs_the_cli_with_cas_home(cas, cas_home):
    result = cas("--help")
    assert result.returncode == 0 and "pull" in result.stdout
    with pytest.raises(CommandFailed, match="exited"):
        cas("no-such-command")
    assert cas("no-such-command", check=False).returncode != 0
