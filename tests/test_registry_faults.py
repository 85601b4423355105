"""RegistryClient through the FaultProxy: dropped streams, 429/5xx, 403, CDN redirects, outages.

The proxy and the blob origin record what they received, so "resumed with Range" and "no
Authorization to the CDN" are checked on the server side.
"""

from __future__ import annotations

import hashlib
import socket
import time

import pytest
from support import images
from support.fakes import MemorySink
from support.tools import free_port

from cas.digest import Digest
from cas.errors import AuthError, RateLimited, ServerError, Unreachable
from cas.registry import Credentials, RegistryClient

FAST = {"retries": 3, "backoff": 0.01}


@pytest.fixture()
def no_docker_config(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))


@pytest.fixture(scope="module")
def big(registry):
    """A 3 MB single-layer image pushed to the plain registry."""
    image = images.Image([images.random_layer(3_000_000, seed=4242)])
    images.push(registry, "cas-test/faults", "big", image)
    return image


def blob_requests(proxy):
    return [r for r in proxy.requests if r.kind == "blob" and r.method == "GET"]


# --- dropped connections --------------------------------------------------------------------


def test_a_dropped_stream_resumes_with_range_byte_identical(proxy, big, no_docker_config):
    layer = big.layers[0]
    proxy.drop_after(1_000_000, times=2)
    sink, progress = MemorySink(), []
    with RegistryClient(proxy.host, **FAST) as client:
        client.download_blob("cas-test/faults", Digest.parse(layer.digest), sink, on_bytes=progress.append)
    assert hashlib.sha256(sink.data).hexdigest() == layer.digest.removeprefix("sha256:")
    assert sink.restarts == 0 and sum(progress) == layer.size
    gets = blob_requests(proxy)
    assert [r.fault for r in gets] == ["drop", "drop", None]
    assert "range" not in gets[0].headers
    assert gets[1].headers["range"] == "bytes=1000000-"
    assert gets[2].headers["range"] == "bytes=2000000-"
    assert [r.status for r in gets] == [200, 206, 206]


def test_progress_resets_the_resume_budget(proxy, big, no_docker_config):
    layer = big.layers[0]
    proxy.drop_after(400_000, times=None)  # every response is cut: 8 drops, each one makes progress
    sink = MemorySink()
    with RegistryClient(proxy.host, retries=1, backoff=0.001) as client:
        client.download_blob("cas-test/faults", Digest.parse(layer.digest), sink)
    assert bytes(sink.data) == layer.data
    assert len(blob_requests(proxy)) == 8


def test_a_stream_that_never_progresses_gives_up(proxy, big, no_docker_config):
    layer = big.layers[0]
    proxy.drop_after(0, times=None)
    with RegistryClient(proxy.host, retries=2, backoff=0.001) as client, pytest.raises(Unreachable) as info:
        client.download_blob("cas-test/faults", Digest.parse(layer.digest), MemorySink())
    assert info.value.message.startswith(f"cannot reach registry {proxy.host}: connection dropped while downloading")
    assert "resumes" in info.value.hint
    assert len(blob_requests(proxy)) == 3


# --- 429 and 5xx ------------------------------------------------------------------------------


def test_429_honours_retry_after_then_succeeds(proxy, big, no_docker_config):
    proxy.fail_next(429, count=1, pattern="/manifests/", retry_after=1)
    started = time.monotonic()
    with RegistryClient(proxy.host, **FAST) as client:
        fetched = client.get_manifest("cas-test/faults", "big")
    assert time.monotonic() - started >= 1.0  # backoff alone would be ~0.01 s
    assert str(fetched.digest) == big.digest
    assert [r.status for r in proxy.requests if r.kind == "manifest"] == [429, 200]


def test_503_on_blobs_is_retried_then_succeeds(proxy, big, no_docker_config):
    layer = big.layers[0]
    proxy.fail_next(503, count=2)
    sink = MemorySink()
    with RegistryClient(proxy.host, **FAST) as client:
        client.download_blob("cas-test/faults", Digest.parse(layer.digest), sink)
    assert bytes(sink.data) == layer.data
    assert [r.status for r in blob_requests(proxy)] == [503, 503, 200]


@pytest.mark.parametrize(("status", "error"), [(503, ServerError), (500, ServerError), (429, RateLimited)])
def test_retries_are_bounded(proxy, big, no_docker_config, status, error):
    proxy.fail_next(status, count=100, pattern="/manifests/", retry_after=0 if status == 429 else None)
    with RegistryClient(proxy.host, retries=2, backoff=0.001) as client, pytest.raises(error) as info:
        client.get_manifest("cas-test/faults", "big")
    assert f"injected {status} by the fault proxy" in info.value.message
    assert info.value.hint
    assert proxy.count("manifest") == 3


def test_a_long_retry_after_is_not_waited_for(proxy, big, no_docker_config, monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # the client's only way to wait
    proxy.fail_next(429, count=1, pattern="/manifests/", retry_after=3600)
    with RegistryClient(proxy.host, **FAST) as client, pytest.raises(RateLimited) as info:
        client.get_manifest("cas-test/faults", "big")
    assert slept == []  # failed at once: no backoff, no hour-long wait
    assert "3600 s" in info.value.hint
    assert proxy.count("manifest") == 1


def test_403_is_access_denied(proxy, big, no_docker_config):
    proxy.fail_next(403, pattern="/manifests/")
    with RegistryClient(proxy.host, **FAST) as client, pytest.raises(AuthError) as info:
        client.get_manifest("cas-test/faults", "big")
    assert info.value.message.startswith(f"access denied to cas-test/faults on {proxy.host}")
    assert proxy.count("manifest") == 1  # not retried


def test_a_token_server_outage_is_retried(token_registry, token_server, no_docker_config):
    image = images.Image([images.random_layer(10_000, seed=99)])
    images.push(token_registry, "cas-test/outage", "1", image)
    token_server.reset()
    token_server.fail_next(503, count=2)
    with RegistryClient(token_registry.host, **FAST) as client:
        assert str(client.get_manifest("cas-test/outage", "1").digest) == image.digest
    assert [r.status for r in token_server.requests] == [503, 503, 200]


# --- unreachable -------------------------------------------------------------------------------


def test_connection_refused_is_unreachable_after_retries(no_docker_config):
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with RegistryClient(host, retries=2, backoff=0.05) as client, pytest.raises(Unreachable) as info:
        client.get_manifest("cas-test/faults", "big")
    assert time.monotonic() - started >= 0.07  # two backoffs: at least 0.025 + 0.05 s with jitter
    assert info.value.message == f"cannot reach registry {host}: connection refused"
    assert info.value.hint == "check that the registry is running at that host and port"  # --insecure cannot help
    assert not isinstance(info.value.__cause__, Unreachable) and info.value.__cause__ is not None


# --- redirects to another origin ---------------------------------------------------------------


@pytest.mark.parametrize("which", ["basic", "token"])
def test_a_cdn_redirect_does_not_carry_authorization(request, proxy_factory, no_docker_config, which):
    upstream = request.getfixturevalue(f"{which}_registry")
    image = images.Image([images.random_layer(300_000, seed=7 if which == "basic" else 8)])
    images.push(upstream, "cas-test/cdn", which, image)
    front = proxy_factory(upstream)
    front.redirect_blobs()
    creds = Credentials(upstream.username, upstream.password)
    with RegistryClient(front.host, credentials=creds, **FAST) as client:
        assert str(client.get_manifest("cas-test/cdn", which).digest) == image.digest
        for blob in image.blobs:
            sink = MemorySink()
            client.download_blob("cas-test/cdn", Digest.parse(blob.digest), sink)
            assert bytes(sink.data) == blob.data
    redirected = [r for r in front.requests if r.fault == "redirect"]
    assert len(redirected) == len(image.blobs)
    assert all(r.headers["authorization"].startswith(("Basic ", "Bearer ")) for r in redirected)
    assert [r.status for r in front.origin.requests] == [200] * len(image.blobs)
    assert front.origin.authorizations == [None] * len(image.blobs)


@pytest.mark.parametrize(
    ("error", "attempts"),
    [(socket.EAI_NONAME, 1), (socket.EAI_AGAIN, 1 + FAST["retries"])],
    ids=["unknown-name", "temporary-failure"],
)
def test_an_unknown_host_name_fails_at_once_and_a_temporary_dns_failure_is_retried(
    monkeypatch, no_docker_config, error, attempts
):
    lookups = []

    def resolve(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(error, "Name or service not known" if error == socket.EAI_NONAME else "Temporary failure")

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with RegistryClient("registry.cas.test:5000", insecure=True, **FAST) as client, pytest.raises(Unreachable) as info:
        client.get_manifest("x", "1")
    assert info.value.message == "cannot reach registry registry.cas.test:5000: cannot resolve the host name"
    assert lookups == ["registry.cas.test"] * attempts
