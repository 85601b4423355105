"""Self-tests of the FaultProxy: it is transparent when idle, and each knob does what it says."""

from __future__ import annotations

import time

import httpx
import pytest
from support import auth
from support.images import Image, layer, push, random_layer


@pytest.fixture(scope="module")
def big(registry):
    """A 600 KB random blob in the registry, big enough to cut or slow down."""
    image = Image([random_layer(600_000, seed=99)])
    push(registry, "proxy-big", "latest", image)
    return image.layers[0]


def test_idle_proxy_is_transparent_for_pulls_ranges_and_pushes(proxy, registry, test_images, big):
    with httpx.Client(base_url=proxy.url) as c:
        manifest = c.get("/v2/base/manifests/latest", headers={"Accept": auth.MANIFEST_ACCEPT})
        assert manifest.headers["Docker-Content-Digest"] == test_images.base.digest
        assert c.get(f"/v2/proxy-big/blobs/{big.digest}").content == big.data
        part = c.get(f"/v2/proxy-big/blobs/{big.digest}", headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == big.data[10:20]
    image = Image([layer({"through-the-proxy": "yes\n"})])
    push(proxy, "via-proxy", "latest", image)  # POST, Location rewritten to the proxy, PUT
    uploads = [r for r in proxy.requests if r.kind == "upload"]
    assert uploads and all(r.status in (202, 201) for r in uploads)
    assert auth.get_manifest(registry, "via-proxy", "latest").headers["Docker-Content-Digest"] == image.digest
    assert proxy.bytes_sent("blob") == big.size + 10
    assert (proxy.count("manifest", "GET"), proxy.count("manifest", "PUT")) == (1, 1)


def test_drop_after_cuts_one_response_then_recovers(proxy, registry, big):
    proxy.drop_after(1000)
    url = f"{proxy.url}/v2/proxy-big/blobs/{big.digest}"
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url)
    assert httpx.get(url).content == big.data
    first, second = [r for r in proxy.requests if r.kind == "blob"]
    assert (first.fault, first.bytes_sent, second.fault, second.bytes_sent) == ("drop", 1000, None, big.size)


def test_drop_after_applies_to_the_next_k_responses(proxy, big):
    proxy.drop_after(0, times=2)
    url = f"{proxy.url}/v2/proxy-big/blobs/{big.digest}"
    for _ in range(2):
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(url)
    assert httpx.get(url).content == big.data


def test_fail_next_answers_429_with_retry_after_then_passes(proxy, big):
    proxy.fail_next(429, count=2, retry_after=3)
    url = f"{proxy.url}/v2/proxy-big/blobs/{big.digest}"
    statuses = []
    for _ in range(3):
        resp = httpx.get(url)
        statuses.append((resp.status_code, resp.headers.get("Retry-After")))
    assert statuses == [(429, "3"), (429, "3"), (200, None)]
    assert resp.content == big.data


@pytest.mark.parametrize("status", [500, 503])
def test_fail_next_matches_only_its_pattern(proxy, test_images, status):
    proxy.fail_next(status, pattern=r"/manifests/")
    with httpx.Client(base_url=proxy.url) as c:
        assert c.get("/v2/").status_code == 200  # not matched, passes
        assert c.get("/v2/base/manifests/latest", headers={"Accept": auth.MANIFEST_ACCEPT}).status_code == status
        assert c.get("/v2/base/manifests/latest", headers={"Accept": auth.MANIFEST_ACCEPT}).status_code == 200


def test_throttle_slows_blob_bodies(proxy, big):
    proxy.throttle(2_000_000)
    started = time.monotonic()
    assert httpx.get(f"{proxy.url}/v2/proxy-big/blobs/{big.digest}").content == big.data
    assert time.monotonic() - started >= 0.25  # 600 KB at 2 MB/s is 0.3 s


def test_redirect_sends_blob_gets_to_another_origin(proxy, big):
    proxy.redirect_blobs()
    resp = httpx.get(f"{proxy.url}/v2/proxy-big/blobs/{big.digest}")
    assert resp.status_code == 307
    location = resp.headers["Location"]
    assert location.startswith(proxy.origin.url) and not location.startswith(proxy.url)
    followed = httpx.get(location, headers={"Range": "bytes=5-9"})
    assert followed.status_code == 206 and followed.content == big.data[5:10]
    assert httpx.get(location).content == big.data


def test_redirect_origin_records_whether_credentials_were_forwarded(basic_registry, proxy_factory, test_images):
    test_images.push(basic_registry)
    blob = test_images.base.layers[2]
    fp = proxy_factory(basic_registry)
    fp.redirect_blobs()
    url = f"{fp.url}/v2/base/blobs/{blob.digest}"
    assert httpx.get(url).status_code == 401  # no redirect before the registry's auth check
    creds = (basic_registry.username, basic_registry.password)
    resp = httpx.get(url, auth=creds, follow_redirects=True)  # httpx drops auth across origins
    assert resp.content == blob.data and resp.history[0].status_code == 307
    assert fp.origin.authorizations == [None]
    httpx.get(resp.history[0].headers["Location"], auth=creds)  # a leaky client would look like this
    assert fp.origin.authorizations[-1].startswith("Basic ")


def test_strip_range_makes_the_registry_answer_the_whole_blob(proxy, big):
    proxy.strip_range(times=1)
    url = f"{proxy.url}/v2/proxy-big/blobs/{big.digest}"
    stripped = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert (stripped.status_code, stripped.content) == (200, big.data)
    honoured = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert (honoured.status_code, honoured.content) == (206, big.data[10:20])
    assert [r.fault for r in proxy.requests] == ["strip-range", None]


def test_wrong_content_range_shifts_the_header_after_good_ones(proxy, big):
    proxy.wrong_content_range(times=1, after=1)
    url = f"{proxy.url}/v2/proxy-big/blobs/{big.digest}"
    answers = [httpx.get(url, headers={"Range": "bytes=10-19"}) for _ in range(3)]
    assert [a.headers["Content-Range"] for a in answers] == [
        f"bytes 10-19/{big.size}",
        f"bytes 11-20/{big.size}",
        f"bytes 10-19/{big.size}",
    ]
    assert all(a.content == big.data[10:20] for a in answers)  # only the header lies


def test_repeated_request_headers_reach_the_registry_joined(proxy, test_images):
    headers = [("Accept", "application/vnd.oci.image.manifest.v1+json")]
    headers += [("Accept", "application/vnd.docker.distribution.manifest.v2+json")]
    answer = httpx.get(f"{proxy.url}/v2/base/manifests/latest", headers=headers)
    assert answer.status_code == 200  # base is OCI: the first Accept was not lost


def test_corrupt_answers_flips_the_first_byte_of_matching_answers_only(proxy, big, test_images):
    proxy.corrupt_answers(pattern=big.digest, times=1)
    url = f"{proxy.url}/v2/proxy-big/blobs/{big.digest}"
    bad = httpx.get(url)
    assert bad.status_code == 200 and len(bad.content) == big.size
    assert bad.content[0] == big.data[0] ^ 0xFF and bad.content[1:] == big.data[1:]
    assert httpx.get(url).content == big.data  # one turn only
    assert [r.fault for r in proxy.requests if r.kind == "blob"] == ["corrupt", None]
    proxy.corrupt_answers(pattern="/base/manifests/latest", times=1)
    manifest = httpx.get(f"{proxy.url}/v2/base/manifests/latest", headers={"Accept": auth.MANIFEST_ACCEPT})
    assert manifest.content[0] == test_images.base.manifest_blob.data[0] ^ 0xFF
