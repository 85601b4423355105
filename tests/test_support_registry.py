"""Self-tests of the registry, token server and standard images: the infrastructure the other
tests measure with must itself be right."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from support import auth
from support.images import Image, layer, push
from support.standard import NAMES

MODES = ["registry", "basic_registry", "token_registry"]


@pytest.mark.parametrize("mode", MODES)
def test_every_standard_image_reads_back_with_its_digest_and_media_type(request, mode, test_images):
    reg = request.getfixturevalue(mode)
    pushed = test_images.push(reg)
    assert sorted(pushed) == sorted(NAMES)
    for name, p in pushed.items():
        resp = auth.get_manifest(reg, p.repository, p.tag)
        assert resp.status_code == 200, (name, resp.text)
        assert resp.headers["Docker-Content-Digest"] == p.digest == test_images[name].digest
        assert resp.headers["Content-Type"] == test_images[name].media_type
        assert hashlib.sha256(resp.content).hexdigest() == p.digest.split(":")[1]
        assert p.ref == f"{reg.host}/{name}:latest"


def test_anonymous_is_refused_by_the_basic_registry(basic_registry, test_images):
    test_images.push(basic_registry)
    resp = auth.get_manifest(basic_registry, "base", "latest", credentials=False)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")
    wrong = httpx.get(f"{basic_registry.url}/v2/base/manifests/latest", auth=(basic_registry.username, "wrong"))
    assert wrong.status_code == 401


def test_token_registry_lets_anonymous_pull_but_not_push(token_registry, token_server, test_images):
    test_images.push(token_registry)
    resp = auth.get_manifest(token_registry, "base", "latest", credentials=False)
    assert resp.status_code == 200
    assert token_server.requests[-1].user is None
    assert token_server.requests[-1].granted == (("base", ("pull",)),)
    with pytest.raises(Exception, match="401"):
        push(token_registry, "anonymous-push", "latest", Image([layer({"x": "anonymous\n"})]), credentials=False)


def test_token_server_rejects_wrong_credentials_and_counts_requests(token_registry, token_server):
    ts = token_registry.token_server
    assert ts is token_server and token_server.token_requests == 0
    params = {"service": ts.service, "scope": "repository:base:pull,push"}
    assert httpx.get(ts.realm, params=params, auth=(token_registry.username, "wrong")).status_code == 401
    ok = httpx.get(ts.realm, params=params, auth=(token_registry.username, token_registry.password))
    assert ok.status_code == 200
    body = ok.json()
    assert body["token"] == body["access_token"] and body["expires_in"] > 0 and body["issued_at"]
    assert token_server.token_requests == 2
    assert token_server.requests[-1].granted == (("base", ("pull", "push")),)


def test_bearer_challenge_names_the_realm_and_scope(token_registry):
    resp = httpx.get(f"{token_registry.url}/v2/base/manifests/latest")
    scheme, params = auth.parse_challenge(resp.headers["WWW-Authenticate"])
    assert resp.status_code == 401 and scheme == "bearer"
    assert params == {
        "realm": token_registry.token_server.realm,
        "service": token_registry.token_server.service,
        "scope": "repository:base:pull",
    }


def test_log_counts_one_blob_get_exactly(registry, test_images):
    blob = test_images.base.layers[1]
    mark = registry.mark()
    resp = httpx.get(f"{registry.url}/v2/base/blobs/{blob.digest}")
    assert resp.content == blob.data
    [get] = registry.blob_gets(mark)
    assert (get.method, get.status, get.bytes, get.reference, get.repository) == (
        "GET",
        200,
        blob.size,
        blob.digest,
        "base",
    )
    assert registry.blob_bytes_served(mark) == blob.size
    assert registry.manifest_requests(mark) == []


def test_log_counts_ranges_heads_and_manifests(registry, test_images):
    blob = test_images.base.layers[1]
    mark = registry.mark()
    with httpx.Client(base_url=registry.url) as c:
        assert c.get(f"/v2/base/blobs/{blob.digest}", headers={"Range": "bytes=100-199"}).status_code == 206
        assert c.head(f"/v2/base/blobs/{blob.digest}").status_code == 200
        assert c.get("/v2/base/manifests/latest", headers={"Accept": auth.MANIFEST_ACCEPT}).status_code == 200
        assert c.get(f"/v2/base/blobs/sha256:{'0' * 64}").status_code == 404
    assert registry.blob_bytes_served(mark) == 100  # the 206; HEAD and 404 add nothing
    assert [(r.method, r.status) for r in registry.blob_gets(mark)] == [("GET", 206), ("GET", 404)]
    assert [(r.method, r.status) for r in registry.manifest_requests(mark)] == [("GET", 200)]
    assert registry.requests(registry.mark()) == []  # a new mark starts from nothing


def test_the_default_mark_is_the_start_of_the_test(registry, test_images):
    blob = test_images.base.layers[2]
    httpx.get(f"{registry.url}/v2/base/blobs/{blob.digest}")
    assert registry.blob_bytes_served() == blob.size


def test_auth_challenges_are_logged(basic_registry):
    mark = basic_registry.mark()
    assert httpx.get(f"{basic_registry.url}/v2/").status_code == 401
    assert [(r.kind, r.status) for r in basic_registry.requests(mark)] == [("base", 401)]


def test_corrupt_blob_serves_wrong_bytes_of_the_right_length_until_restored(registry, test_images):
    blob = test_images.base.layers[2]
    url = f"{registry.url}/v2/base/blobs/{blob.digest}"
    registry.corrupt_blob(blob.digest)
    try:
        bad = httpx.get(url)
        assert bad.status_code == 200 and len(bad.content) == blob.size
        assert "sha256:" + hashlib.sha256(bad.content).hexdigest() != blob.digest
    finally:
        registry.restore_blob(blob.digest)
    assert httpx.get(url).content == blob.data


def test_a_token_server_without_anonymous_access_refuses_anonymous_pulls(tmp_path, test_images):
    from support.registry import Registry
    from support.tokenserver import TokenServer

    ts = TokenServer(tmp_path / "ts", users={"casuser": "caspassword"}, anonymous=False)
    with Registry(tmp_path / "reg", "token", token_server=ts) as reg:
        push(reg, "private", "latest", test_images.base)
        assert auth.get_manifest(reg, "private", "latest").status_code == 200
        with pytest.raises(httpx.HTTPStatusError, match="401"):
            auth.get_manifest(reg, "private", "latest", credentials=False)
        assert [r.status for r in ts.requests][-1] == 401
    assert not ts.running


def test_token_server_fail_next_injects_an_outage(token_server):
    token_server.fail_next(503)
    params = {"service": token_server.service, "scope": "repository:base:pull"}
    assert httpx.get(token_server.realm, params=params).status_code == 503
    assert httpx.get(token_server.realm, params=params).status_code == 200
