"""`cas serve` against real clients: the distribution API by hand, then skopeo, docker, containerd and podman.

One store, filled once with `cas pull` from the suite's registry, served by a real `cas serve`
process; every client starts from an empty store of its own. The upstream registry's log
proves the client's bytes came from cas serve, not from the registry.
"""

from __future__ import annotations

import hashlib
import http.client as httpclient
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support.serving import CasServer

from cas.manifest import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

REPO_ROOT = Path(__file__).resolve().parent.parent
ALL = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
HUB_NAME = "library/servedhub"  # pushed to the registry, pulled by cas as docker.io/library/servedhub:1


def _cas(home: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "CAS_HOME": str(home), "NO_PROXY": "127.0.0.1,localhost", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=REPO_ROOT, env=full, capture_output=True, text=True, check=True
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory, registry, test_images):
    """A store holding app, dockermedia, multi (every platform), multidocker and docker.io/library/servedhub:1."""
    from support import images

    home = tmp_path_factory.mktemp("served") / "home"
    home.mkdir()
    for name in ("app", "dockermedia"):
        _cas(home, "pull", "-q", test_images.ref(registry, name))
    for name in ("multi", "multidocker"):
        _cas(home, "pull", "-q", "--all-platforms", test_images.ref(registry, name))
    images.push(registry, HUB_NAME, "1", test_images.dockermedia)
    daemon = home.parent / "daemon.json"
    daemon.write_text(json.dumps({"registry-mirrors": [registry.url]}))
    _cas(home, "pull", "-q", "servedhub:1", env={"CAS_DOCKER_DAEMON_JSON": str(daemon)})
    with CasServer(home, "--offline", "--upstream", f"lab={registry.host}") as server:
        yield server


@pytest.fixture
def http(served):
    with httpx.Client(base_url=served.url, timeout=30, trust_env=False) as client:
        yield client


def test_base_answers_with_the_api_version(http):
    response = http.get("/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_manifest_get_and_head_send_the_stored_bytes_and_headers(http, registry, test_images):
    app = test_images.app
    for path in ("/v2/lab/app/manifests/latest", f"/v2/lab/app/manifests/{app.digest}"):
        got = http.get(path, headers={"Accept": ALL})
        assert got.status_code == 200, got.text
        assert got.content == app.manifest_blob.data
        assert got.headers["Docker-Content-Digest"] == app.digest
        assert got.headers["Content-Type"] == OCI_MANIFEST
        assert int(got.headers["Content-Length"]) == len(app.manifest_blob.data)
        head = http.head(path, headers={"Accept": ALL})
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Docker-Content-Digest"] == app.digest
        assert int(head.headers["Content-Length"]) == len(app.manifest_blob.data)


def test_blobs_whole_ranged_and_past_the_end(http, test_images):
    layer = test_images.app.blobs[-1]
    path = f"/v2/lab/app/blobs/{layer.digest}"
    whole = http.get(path)
    assert whole.status_code == 200 and whole.content == layer.data
    assert whole.headers["Docker-Content-Digest"] == layer.digest
    assert whole.headers["Content-Type"] == "application/octet-stream"
    assert whole.headers["Accept-Ranges"] == "bytes"
    head = http.head(path)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == layer.size and head.content == b""
    part = http.get(path, headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == layer.data[10:100]
    assert part.headers["Content-Range"] == f"bytes 10-99/{layer.size}"
    past = http.get(path, headers={"Range": f"bytes={layer.size + 10}-"})
    assert past.status_code == 416


def test_a_client_that_reads_only_schema2_gets_the_child_of_a_manifest_list(http, test_images):
    index = test_images.multidocker
    amd64 = index.for_platform("linux/amd64")
    got = http.get("/v2/lab/multidocker/manifests/latest", headers={"Accept": DOCKER_MANIFEST})
    assert got.status_code == 200, got.text
    assert got.headers["Docker-Content-Digest"] == amd64.digest and got.content == amd64.manifest_blob.data
    arm = http.get(
        "/v2/lab/multidocker/manifests/latest",
        headers={"Accept": DOCKER_MANIFEST, "User-Agent": "docker/20.10 os/linux arch/arm64"},
    )
    assert arm.headers["Docker-Content-Digest"] == index.for_platform("linux/arm64/v8").digest
    listed = http.get("/v2/lab/multidocker/manifests/latest", headers={"Accept": ALL})
    assert listed.headers["Content-Type"] == DOCKER_LIST and listed.content == index.manifest_blob.data


def test_a_manifest_type_the_client_does_not_accept_is_a_404_saying_why(http):
    got = http.get("/v2/lab/app/manifests/latest", headers={"Accept": DOCKER_MANIFEST})
    assert got.status_code == 404
    error = got.json()["errors"][0]
    assert error["code"] == "MANIFEST_UNKNOWN" and "OCI manifest found" in error["message"]


def test_tags_list_pages_with_a_link(http, registry):
    every = http.get("/v2/lab/app/tags/list").json()
    assert every == {"name": "lab/app", "tags": ["latest"]}
    catalog = http.get("/v2/_catalog").json()["repositories"]
    assert f"{registry.host}/app" in catalog and "docker.io/library/servedhub" in catalog
    first = http.get("/v2/_catalog", params={"n": 2})
    assert first.json()["repositories"] == catalog[:2]
    link = first.headers["Link"]
    assert link.startswith("</v2/_catalog?") and link.endswith('>; rel="next"') and "n=2" in link
    second = http.get(link[1 : link.index(">")])
    assert second.json()["repositories"] == catalog[2:4]
    assert "Link" not in http.get("/v2/_catalog", params={"n": len(catalog)}).headers
    assert http.get("/v2/_catalog", params={"n": "x"}).json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v2/lab/nothing/manifests/latest", 404, "NAME_UNKNOWN"),
        ("/v2/lab/app/manifests/nosuchtag", 404, "MANIFEST_UNKNOWN"),
        ("/v2/lab/app/manifests/sha256:" + "0" * 64, 404, "MANIFEST_UNKNOWN"),
        ("/v2/lab/app/blobs/sha256:" + "0" * 64, 404, "BLOB_UNKNOWN"),
        ("/v2/lab/nothing/tags/list", 404, "NAME_UNKNOWN"),
        ("/v2/lab/app/blobs/sha256:abc", 400, "DIGEST_INVALID"),
        ("/v2/lab/app/blobs/md5:" + "0" * 32, 400, "DIGEST_INVALID"),
        ("/v2/lab/app/blobs/sha256:" + "G" * 64, 400, "DIGEST_INVALID"),
        ("/v2/lab/app/manifests/sha256:../../etc", 400, "NAME_INVALID"),
        ("/v2/lab/../../etc/passwd/blobs/sha256:" + "0" * 64, 400, "NAME_INVALID"),
        ("/v2/lab%2F..%2Fetc/app/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/lab/app%2fx/tags/list", 400, "NAME_INVALID"),
        ("/v2/" + "a/" * 200 + "app/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/Lab/App/manifests/latest", 400, "NAME_INVALID"),
    ],
)
def test_errors_are_the_specs_json(served, path, status, code):
    got, body = raw_get(served, path)
    assert got.status == status, body
    assert got.getheader("Content-Type").startswith("application/json")
    assert json.loads(body)["errors"][0]["code"] == code


def raw_get(served, path: str) -> tuple[httpclient.HTTPResponse, bytes]:
    """A GET sent exactly as written: no client normalizes ``..`` or ``%2F`` away."""
    connection = httpclient.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize(
    "path", ["/v2/lab/app/blobs/uploads/", "/v2/lab/app/manifests/latest", "/v2/lab/app/blobs/sha256:" + "0" * 64]
)
def test_every_write_is_a_405_unsupported(http, method, path, served, test_images):
    got = http.request(method, path, content=b"{}")
    assert got.status_code == 405 and got.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert (
        http.get("/v2/lab/app/manifests/latest", headers={"Accept": ALL}).content == test_images.app.manifest_blob.data
    )


def test_skopeo_copies_every_image_and_checks_every_digest(served, skopeo, tmp_path, registry, test_images):
    registry.mark()
    for name, extra in (("app", ()), ("dockermedia", ()), ("multi", ("--all",))):
        out = tmp_path / name
        skopeo.copy(f"docker://{served.host}/lab/{name}:latest", f"dir:{out}", extra=extra)  # dir: keeps the bytes
        assert "sha256:" + hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest() == test_images[name].digest
    assert registry.requests() == []  # every byte came from cas serve


def test_docker_pulls_and_runs_through_an_alias(served, clean_dockerd, registry):
    registry.mark()
    clean_dockerd.docker("pull", f"{served.host}/lab/app:latest")
    assert clean_dockerd.run(f"{served.host}/lab/app:latest", "/bin/cat", "/hello.txt").stdout == "hello from app\n"
    assert registry.requests() == []


def test_containerd_with_hosts_toml_sends_ns(served, clean_dockerd, registry, tmp_path, test_images):
    hosts = tmp_path / "hosts.d" / registry.host
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        f'server = "{registry.url}"\n\n[host."{served.url}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    ctr = ["ctr", "-a", str(clean_dockerd.workdir / "exec" / "containerd" / "containerd.sock"), "-n", "serve-test"]
    ref = f"{registry.host}/app:latest"
    registry.mark()
    subprocess.run([*ctr, "images", "rm", "--sync", ref], capture_output=True)
    pulled = subprocess.run(
        [*ctr, "content", "fetch", "--hosts-dir", str(tmp_path / "hosts.d"), ref], capture_output=True, text=True
    )
    assert pulled.returncode == 0, pulled.stderr
    assert registry.requests() == []
    listed = subprocess.run([*ctr, "images", "ls", "-q"], capture_output=True, text=True, check=True).stdout.split()
    assert ref in listed
    subprocess.run([*ctr, "images", "rm", "--sync", ref], capture_output=True)


def test_podman_pulls_through_a_registries_conf_mirror(served, clean_podman, registry, tmp_path):
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n\n'
        f'[[registry.mirror]]\nlocation = "{served.host}/lab"\ninsecure = true\n'
    )
    clean_podman.env["CONTAINERS_REGISTRIES_CONF"] = str(conf)
    try:
        registry.mark()
        clean_podman.podman("pull", f"{registry.host}/app:latest")
        assert registry.requests() == []
        assert clean_podman.run(f"{registry.host}/app:latest", "/bin/cat", "/hello.txt").stdout == "hello from app\n"
    finally:
        del clean_podman.env["CONTAINERS_REGISTRIES_CONF"]


def test_sha256_of_every_served_blob_matches(http, test_images):
    for blob in test_images.app.blobs:
        data = http.get(f"/v2/lab/app/blobs/{blob.digest}").content
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob.digest
