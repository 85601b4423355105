"""`GET /archive/...`: complete archives over HTTP, `curl | docker load`, and refusals before the first byte."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile

import httpx
import pytest
from support.serving import CasServer


@pytest.fixture
def served(cas, cas_home, registry, test_images):
    for name in ("app", "multi"):
        cas("pull", "-q", "--all-platforms", test_images.ref(registry, name))
    with CasServer(cas_home, "--offline", "--upstream", f"lab={registry.host}") as server:
        yield server


def get(server: CasServer, path: str, **params: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as http:
        return http.get(path, params=params)


def test_curl_into_docker_load_on_an_empty_daemon(served, clean_dockerd, registry):
    url = f"{served.url}/archive/lab/app:latest"
    loaded = subprocess.run(
        f"curl -fsS '{url}' | docker load", shell=True, env=clean_dockerd.env, capture_output=True, text=True
    )
    assert loaded.returncode == 0, loaded.stderr
    assert f"{registry.host}/app:latest" in loaded.stdout
    assert clean_dockerd.run(f"{registry.host}/app:latest", "/bin/cat", "/hello.txt").stdout == "hello from app\n"


def test_formats_and_platforms(served, test_images):
    oci = get(served, "/archive/lab/multi:latest", format="oci-archive")
    assert oci.status_code == 200 and oci.headers["Content-Type"] == "application/x-tar"
    names = tarfile.open(fileobj=io.BytesIO(oci.content)).getnames()
    assert "index.json" in names
    for platform in ("linux/amd64", "linux/arm64/v8", "linux/arm/v7"):  # every cached platform
        assert f"blobs/sha256/{test_images.multi.for_platform(platform).digest[7:]}" in names
    arm = get(served, "/archive/lab/multi:latest", platform="linux/arm64/v8")
    with tarfile.open(fileobj=io.BytesIO(arm.content)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert (
        manifest[0]["Config"]
        == f"blobs/sha256/{test_images.multi.for_platform('linux/arm64/v8').config_blob.digest[7:]}"
    )
    by_digest = get(served, f"/archive/lab/app@{test_images.app.digest}")
    assert (
        by_digest.status_code == 200
        and "manifest.json" in tarfile.open(fileobj=io.BytesIO(by_digest.content)).getnames()
    )


def test_offline_missing_blobs_are_an_error_naming_every_one(served, cas_home, test_images):
    layers = test_images.app.blobs[-2:]
    for blob in layers:
        (cas_home / "v1" / "blobs" / "sha256" / blob.digest[7:]).unlink()
    refused = get(served, "/archive/lab/app:latest")
    assert refused.status_code == 404 and refused.headers["Content-Type"].startswith("application/json")
    error = refused.json()["errors"][0]
    assert error["code"] == "BLOB_UNKNOWN"
    assert sorted(error["detail"]["missing"]) == sorted(b.digest for b in layers)


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/archive/lab/nothing:1", {}, 404, "MANIFEST_UNKNOWN"),
        ("/archive/lab/app:latest", {"format": "oci-dir"}, 400, "PARAMETER_INVALID"),
        ("/archive/lab/app:latest", {"platform": "linux"}, 400, "PARAMETER_INVALID"),
        ("/archive/lab/multi:latest", {"platform": "linux/s390x"}, 404, "MANIFEST_UNKNOWN"),
        ("/archive/lab/App:latest", {}, 400, "NAME_INVALID"),
    ],
)
def test_refusals_before_the_first_byte(served, path, params, status, code):
    refused = get(served, path, **params)
    assert refused.status_code == status, refused.text
    assert refused.json()["errors"][0]["code"] == code


def test_without_offline_a_missing_image_is_pulled_first(cas, cas_home, registry, test_images):
    with CasServer(cas_home, "--upstream", f"lab={registry.host}") as server:
        registry.mark()
        got = get(server, "/archive/lab/base:latest")
        absent = get(server, "/archive/lab/nothing:1")
    assert absent.status_code == 404 and absent.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert got.status_code == 200
    assert {r.reference for r in registry.blob_gets()} >= {b.digest for b in test_images.base.blobs}
    assert test_images.ref(registry, "base") in cas("images").stdout
    assert cas("verify").returncode == 0


def test_a_client_that_goes_away_mid_archive_stops_the_export_quietly(served):
    with httpx.Client(base_url=served.url, timeout=60, trust_env=False) as http:
        with http.stream("GET", "/archive/lab/app:latest") as response:
            assert response.status_code == 200
            next(response.iter_raw(1024))
        assert get(served, "/archive/lab/app:latest").status_code == 200  # and it goes on serving
    assert "Traceback" not in served.output()
