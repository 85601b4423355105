"""Pull-through: `cas serve` fetches what its store lacks through cas pull, and streams it while it arrives.

Each test starts from an empty store. The upstream registry's own log counts what crossed
from the upstream: one download per blob, however many clients ask at once.
"""

from __future__ import annotations

import json
import threading
from collections import Counter

import httpx
import pytest
from support import images
from support.registry import Registry
from support.serving import CasServer
from support.tools import wait_until

from cas.manifest import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

ALL = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))


def blob_downloads(upstream) -> Counter:
    return Counter(r.reference for r in upstream.blob_gets() if r.status in (200, 206))


def test_skopeo_through_an_empty_store_records_the_image(cas, cas_home, registry, test_images, skopeo, tmp_path):
    with CasServer(cas_home, "--upstream", f"lab={registry.host}") as server:
        registry.mark()
        skopeo.copy(f"docker://{server.host}/lab/app:latest", f"dir:{tmp_path / 'app'}")
        skopeo.copy(f"docker://{server.host}/lab/multi:latest", f"dir:{tmp_path / 'multi'}", all=True)
        for name in ("app", "multi"):  # each background pull records its image when it ends
            done = f"pulled through {test_images.ref(registry, name)}"
            wait_until(lambda done=done: done in server.output(), timeout=60, what=f"the record of {name}")
    assert all(n == 1 for n in blob_downloads(registry).values()), blob_downloads(registry)
    assert set(blob_downloads(registry)) >= {b.digest for b in test_images.app.blobs}
    # One upstream request per manifest: the tag the server resolved is not asked again by its pull.
    manifests = Counter((r.repository, r.reference) for r in registry.manifest_requests())
    assert manifests[("app", "latest")] == 1 and manifests[("multi", "latest")] == 1, manifests
    assert all(n == 1 for n in manifests.values()), manifests
    listed = json.loads(cas("images", "--json").stdout)["images"]
    refs = {(row["ref"], row["platform"]) for row in listed}
    assert (test_images.ref(registry, "app"), "linux/amd64") in refs
    assert {p for r, p in refs if r == test_images.ref(registry, "multi")} == {
        "linux/amd64",
        "linux/arm64/v8",
        "linux/arm/v7",
    }
    assert cas("verify").returncode == 0


def test_two_clients_one_upstream_download_streamed_while_it_arrives(cas, cas_home, registry, proxy_factory):
    big = images.Image([images.random_layer(6 << 20, seed=4242)])
    images.push(registry, "throughbig", "1", big)
    upstream = proxy_factory(registry)
    upstream.throttle(2_000_000)  # ~3 s for the layer: both clients ask while it is on its way
    layer = big.blobs[-1]
    committed = cas_home / "v1" / "blobs" / "sha256" / layer.digest[7:]
    with CasServer(cas_home, "--upstream", f"lab={upstream.host}") as server:
        registry.mark()
        with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as http:
            assert http.get("/v2/lab/throughbig/manifests/1", headers={"Accept": ALL}).status_code == 200
        bodies: dict[int, bytes] = {}
        early: list[bool] = []

        def fetch(n: int) -> None:
            with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as http:
                with http.stream("GET", f"/v2/lab/throughbig/blobs/{layer.digest}") as response:
                    chunks = response.iter_bytes()
                    first = next(chunks)
                    early.append(not committed.exists())  # a first byte before the blob was whole
                    bodies[n] = first + b"".join(chunks)

        clients = [threading.Thread(target=fetch, args=(n,)) for n in range(2)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(90)
    assert bodies[0] == layer.data and bodies[1] == layer.data
    assert any(early), "no client got a byte before the download ended: nothing was streamed"
    assert blob_downloads(registry)[layer.digest] == 1
    assert cas("verify").returncode == 0


def test_tag_ttl_and_a_cached_tag_served_when_the_upstream_is_down(cas, cas_home, tmp_path, test_images):
    upstream = Registry(tmp_path / "upstream", "none").start()
    try:
        images.push(upstream, "ttl", "1", test_images.base)
        with CasServer(cas_home, "--tag-ttl", "3600", "--upstream", f"up={upstream.host}") as server:
            with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as http:
                first = http.get("/v2/up/ttl/manifests/1", headers={"Accept": ALL})
                wait_until(lambda: "pulled through" in server.output(), timeout=30, what="the record")
                upstream.mark()
                again = http.get("/v2/up/ttl/manifests/1", headers={"Accept": ALL})
                assert upstream.manifest_requests() == []  # within --tag-ttl: the store's record
        assert first.content == again.content == test_images.base.manifest_blob.data
        with CasServer(cas_home, "--tag-ttl", "0", "--upstream", f"up={upstream.host}") as server:
            with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as http:
                upstream.mark()
                assert http.get("/v2/up/ttl/manifests/1", headers={"Accept": ALL}).status_code == 200
                assert [r.reference for r in upstream.manifest_requests()] == ["1"]  # re-resolved
                upstream.stop()
                stale = http.get("/v2/up/ttl/manifests/1", headers={"Accept": ALL})
                assert stale.status_code == 200 and stale.content == test_images.base.manifest_blob.data
                missing = http.get("/v2/up/other/manifests/1", headers={"Accept": ALL})
                assert missing.status_code == 503 and missing.json()["errors"][0]["code"] == "UNAVAILABLE"
            assert "unreachable" in server.output() and f"serving the cached {upstream.host}/ttl:1" in server.output()
    finally:
        upstream.stop()


def test_two_clients_through_a_token_auth_registry_one_download(
    cas, cas_home, token_registry, test_images, skopeo, tmp_path
):
    test_images.push(token_registry)
    with CasServer(cas_home, "--upstream", f"tok={token_registry.host}") as server:
        token_registry.mark()
        copies = [
            threading.Thread(
                target=skopeo.copy, args=(f"docker://{server.host}/tok/app:latest", f"dir:{tmp_path / str(n)}")
            )
            for n in range(2)
        ]
        for thread in copies:
            thread.start()
        for thread in copies:
            thread.join(120)
    for n in range(2):
        assert (tmp_path / str(n) / "manifest.json").read_bytes() == test_images.app.manifest_blob.data
    assert set(blob_downloads(token_registry)) >= {b.digest for b in test_images.app.blobs}
    assert all(n == 1 for n in blob_downloads(token_registry).values()), blob_downloads(token_registry)


def test_offline_serves_only_the_store(cas, cas_home, registry):
    with CasServer(cas_home, "--offline", "--upstream", f"lab={registry.host}") as server:
        registry.mark()
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
            got = http.get("/v2/lab/app/manifests/latest", headers={"Accept": ALL})
            blob = http.get("/v2/lab/app/blobs/sha256:" + "1" * 64)
    assert got.status_code == 404 and got.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    assert blob.status_code == 404 and blob.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert registry.requests() == []


def test_a_blob_asked_for_before_any_manifest_has_the_upstreams_content_length(cas, cas_home, registry):
    """No manifest fetched through the server yet, so no lease and no size from one: the upstream's HEAD gives it."""
    image = images.Image([images.random_layer(3 << 20, seed=4343)])
    images.push(registry, "nomanifest", "1", image)
    layer = image.blobs[-1]
    with CasServer(cas_home, "--upstream", f"lab={registry.host}") as server:
        with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as http:
            head = http.head(f"/v2/lab/nomanifest/blobs/{layer.digest}")
            with http.stream("GET", f"/v2/lab/nomanifest/blobs/{layer.digest}") as got:
                headers, body = got.headers, got.read()
            missing = http.get("/v2/lab/nomanifest/blobs/sha256:" + "2" * 64)
    assert head.status_code == 200 and head.headers["content-length"] == str(layer.size)
    assert got.status_code == 200 and headers["content-length"] == str(layer.size)
    assert "transfer-encoding" not in headers and body == layer.data
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert (cas_home / "v1" / "blobs" / "sha256" / layer.digest[7:]).read_bytes() == layer.data  # committed


def test_wrong_bytes_from_the_upstream_cut_the_client_never_a_whole_wrong_blob(cas, cas_home, registry, proxy_factory):
    image = images.Image([images.random_layer(3 << 20, seed=4747)])
    images.push(registry, "corrupted", "1", image)
    layer = image.blobs[-1]
    upstream = proxy_factory(registry)
    upstream.corrupt_answers(rf"/blobs/{layer.digest}")  # every answer for the layer: no good copy anywhere
    with CasServer(cas_home, "--upstream", f"lab={upstream.host}") as server:
        with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as http:
            assert http.get("/v2/lab/corrupted/manifests/1", headers={"Accept": ALL}).status_code == 200
            received = bytearray()
            with pytest.raises(httpx.HTTPError):  # the connection is cut before the last chunk
                with http.stream("GET", f"/v2/lab/corrupted/blobs/{layer.digest}") as got:
                    for chunk in got.iter_bytes():
                        received += chunk
            assert len(received) < layer.size
            assert http.get("/v2/").status_code == 200  # the server lives on
    assert not (cas_home / "v1" / "blobs" / "sha256" / layer.digest[7:]).exists()
    assert cas("verify").returncode == 0
