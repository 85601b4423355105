"""RegistryClient against the real registry (distribution 2.8): anonymous, Basic and Bearer.

Counts come from the servers (the registry's access log, the token server), never from
the client under test.
"""

from __future__ import annotations

import json
import threading

import pytest
from support import images
from support.fakes import DictTokenCache, MemorySink

from cas.digest import Digest
from cas.errors import AuthError, DigestMismatch, NotFound
from cas.manifest import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from cas.registry import Credentials, RegistryClient
from cas.store.blobs import BlobStore
from cas.store.ingest import Ingests

FAST = {"retries": 2, "backoff": 0.01}


@pytest.fixture()
def no_docker_config(tmp_path, monkeypatch):
    """An empty DOCKER_CONFIG: tests never read the machine's own docker login."""
    directory = tmp_path / "docker-config"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory


_counter = iter(range(1_000_000))


def unique_image(media: str = "oci", size: int = 200_000, **kwargs) -> images.Image:
    seed = next(_counter) + 1000 * threading.get_ident() % 997
    return images.Image(
        [images.random_layer(size, seed=seed), images.layer({"etc/id": f"{seed}\n"})], media=media, **kwargs
    )


def pull_all(client: RegistryClient, repository: str, tag: str, image: images.Image) -> None:
    """Manifest by tag, then every blob, each checked byte for byte."""
    fetched = client.get_manifest(repository, tag)
    assert fetched.data == image.manifest_blob.data
    assert str(fetched.digest) == image.digest
    for blob in image.blobs:
        sink = MemorySink()
        client.download_blob(repository, Digest.parse(blob.digest), sink)
        assert bytes(sink.data) == blob.data


# --- anonymous --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("media", "omit", "expected"),
    [("oci", False, OCI_MANIFEST), ("docker", False, DOCKER_MANIFEST), ("oci", True, OCI_MANIFEST)],
)
def test_manifest_by_tag_and_by_digest(registry, no_docker_config, media, omit, expected):
    image = unique_image(media, omit_media_type=omit)
    images.push(registry, "cas-test/manifest", f"{media}-{omit}", image)
    with RegistryClient(registry.host, **FAST) as client:
        by_tag = client.get_manifest("cas-test/manifest", f"{media}-{omit}")
        by_digest = client.get_manifest("cas-test/manifest", Digest.parse(image.digest))
    for fetched in (by_tag, by_digest):
        assert fetched.data == image.manifest_blob.data
        assert fetched.media_type == expected
        assert str(fetched.digest) == image.digest


@pytest.mark.parametrize(("media", "expected"), [("oci", OCI_INDEX), ("docker", DOCKER_LIST)])
def test_an_index_comes_back_as_an_index(registry, no_docker_config, media, expected):
    index = images.Index([unique_image(media, architecture="amd64"), unique_image(media, architecture="arm64")])
    images.push(registry, "cas-test/index", media, index)
    with RegistryClient(registry.host, **FAST) as client:
        fetched = client.get_manifest("cas-test/index", media)
    assert fetched.media_type == expected
    assert str(fetched.digest) == index.digest


def test_blobs_stream_byte_identical_with_progress(registry, no_docker_config):
    image = unique_image(size=3_000_000)
    images.push(registry, "cas-test/blobs", "1", image)
    mark = registry.mark()
    with RegistryClient(registry.host, **FAST) as client:
        layer = image.layers[0]
        sink, progress = MemorySink(), []
        client.download_blob("cas-test/blobs", Digest.parse(layer.digest), sink, on_bytes=progress.append)
    assert bytes(sink.data) == layer.data
    assert sum(progress) == layer.size and all(n > 0 for n in progress)
    [get] = registry.blob_gets(mark)
    assert get.status == 200 and get.bytes == layer.size


def test_a_partial_sink_resumes_with_range(registry, no_docker_config):
    image = unique_image(size=1_000_000)
    images.push(registry, "cas-test/blobs", "partial", image)
    layer = image.layers[0]
    mark = registry.mark()
    sink = MemorySink(layer.data[:300_000])
    with RegistryClient(registry.host, **FAST) as client:
        client.download_blob("cas-test/blobs", Digest.parse(layer.digest), sink)
    assert bytes(sink.data) == layer.data and sink.restarts == 0
    [get] = registry.blob_gets(mark)
    assert get.status == 206 and get.bytes == layer.size - 300_000


def test_a_complete_sink_needs_no_bytes(registry, no_docker_config):
    image = unique_image(size=10_000)
    images.push(registry, "cas-test/blobs", "complete", image)
    layer = image.layers[0]
    sink = MemorySink(layer.data)
    with RegistryClient(registry.host, **FAST) as client:
        client.download_blob("cas-test/blobs", Digest.parse(layer.digest), sink)
    assert bytes(sink.data) == layer.data and sink.restarts == 0


def test_the_stores_ingest_is_a_sink(registry, no_docker_config, tmp_path):
    image = unique_image(size=500_000)
    images.push(registry, "cas-test/blobs", "ingest", image)
    layer = image.layers[0]
    store = BlobStore(tmp_path / "v1")
    digest = Digest.parse(layer.digest)
    sink = Ingests(tmp_path / "v1", store).open(digest, layer.size)
    with RegistryClient(registry.host, **FAST) as client, sink as ingest:
        client.download_blob("cas-test/blobs", digest, ingest)
        ingest.commit()
    assert store.read(digest) == layer.data


def test_parallel_downloads_share_one_client(registry, no_docker_config):
    image = images.Image([images.random_layer(400_000, seed=s) for s in range(70, 76)])
    images.push(registry, "cas-test/parallel", "1", image)
    results: dict[str, bytes] = {}
    errors: list[BaseException] = []
    with RegistryClient(registry.host, **FAST) as client:

        def fetch(layer: images.Layer) -> None:
            try:
                sink = MemorySink()
                client.download_blob("cas-test/parallel", Digest.parse(layer.digest), sink)
                results[layer.digest] = bytes(sink.data)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=fetch, args=(lay,)) for lay in image.layers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert results == {lay.digest: lay.data for lay in image.layers}


# --- not found ----------------------------------------------------------------------------


def test_unknown_tag_is_not_found(registry, no_docker_config):
    images.push(registry, "cas-test/known", "1", unique_image())
    with RegistryClient(registry.host, **FAST) as client, pytest.raises(NotFound) as info:
        client.get_manifest("cas-test/known", "nope")
    assert info.value.message == f"image {registry.host}/cas-test/known:nope not found: manifest unknown"
    assert info.value.hint


def test_unknown_repository_is_not_found(registry, no_docker_config):
    with RegistryClient(registry.host, **FAST) as client, pytest.raises(NotFound) as info:
        client.get_manifest("cas-test/never-pushed", "latest")
    assert info.value.message.startswith(f"image {registry.host}/cas-test/never-pushed:latest not found: ")


def test_unknown_digest_is_not_found(registry, no_docker_config):
    images.push(registry, "cas-test/known", "2", unique_image())
    missing = Digest("sha256", "0" * 64)
    with RegistryClient(registry.host, **FAST) as client:
        with pytest.raises(NotFound) as info:
            client.get_manifest("cas-test/known", missing)
        assert f"cas-test/known@{missing} not found" in info.value.message
        with pytest.raises(NotFound) as info:
            client.download_blob("cas-test/known", missing, MemorySink())
        assert (
            info.value.message
            == f"blob {missing} of {registry.host}/cas-test/known not found: blob unknown to registry"
        )


# --- integrity: the client checks manifests, the store checks blobs -------------------------


def test_a_corrupted_blob_reaches_the_sink_unverified(registry, no_docker_config):
    image = unique_image(size=100_000)
    images.push(registry, "cas-test/corrupt", "blob", image)
    layer = image.layers[0]
    registry.corrupt_blob(layer.digest)
    try:
        sink = MemorySink()
        with RegistryClient(registry.host, **FAST) as client:
            client.download_blob("cas-test/corrupt", Digest.parse(layer.digest), sink)
    finally:
        registry.restore_blob(layer.digest)
    assert len(sink.data) == layer.size
    assert sink.digest != layer.digest  # the store's Ingest.commit is what refuses it


def test_a_corrupted_manifest_is_a_digest_mismatch(registry, no_docker_config):
    image = unique_image()
    images.push(registry, "cas-test/corrupt", "manifest", image)
    registry.corrupt_blob(image.digest)  # manifests live in blob storage too
    try:
        with RegistryClient(registry.host, **FAST) as client:
            with pytest.raises(DigestMismatch) as by_tag:  # against Docker-Content-Digest
                client.get_manifest("cas-test/corrupt", "manifest")
            with pytest.raises(DigestMismatch) as by_digest:
                client.get_manifest("cas-test/corrupt", Digest.parse(image.digest))
    finally:
        registry.restore_blob(image.digest)
    for info in (by_tag, by_digest):
        assert str(info.value.expected) == image.digest
        assert info.value.message.startswith(f"manifest digest mismatch: expected {image.digest}, got sha256:")


# --- basic auth --------------------------------------------------------------------------


def test_basic_with_explicit_credentials(basic_registry, no_docker_config):
    image = unique_image()
    images.push(basic_registry, "cas-test/basic", "1", image)
    creds = Credentials(basic_registry.username, basic_registry.password)
    mark = basic_registry.mark()
    with RegistryClient(basic_registry.host, credentials=creds, token_cache=DictTokenCache(), **FAST) as client:
        pull_all(client, "cas-test/basic", "1", image)
    statuses = [r.status for r in basic_registry.requests(mark)]
    assert statuses.count(401) == 1  # one challenge, then Basic is sent up front


def test_basic_from_the_docker_config(basic_registry, no_docker_config):
    image = unique_image()
    images.push(basic_registry, "cas-test/basic", "2", image)
    auth = f"{basic_registry.username}:{basic_registry.password}"
    import base64

    (no_docker_config / "config.json").write_text(
        json.dumps({"auths": {f"http://{basic_registry.host}/v2/": {"auth": base64.b64encode(auth.encode()).decode()}}})
    )
    with RegistryClient(basic_registry.host, **FAST) as client:
        pull_all(client, "cas-test/basic", "2", image)


def test_basic_without_credentials_says_how_to_log_in(basic_registry, no_docker_config):
    with RegistryClient(basic_registry.host, **FAST) as client, pytest.raises(AuthError) as info:
        client.get_manifest("cas-test/basic", "1")
    assert info.value.message == f"registry {basic_registry.host} requires authentication"
    assert f"cas login {basic_registry.host}" in info.value.hint and "--password-stdin" in info.value.hint


def test_basic_bad_password_is_an_auth_error(basic_registry, no_docker_config):
    creds = Credentials(basic_registry.username, "wrong-password")
    with RegistryClient(basic_registry.host, credentials=creds, **FAST) as client, pytest.raises(AuthError) as info:
        client.get_manifest("cas-test/basic", "1")
    assert info.value.message.startswith(f"authentication failed for {basic_registry.host}: ")


# --- bearer tokens -------------------------------------------------------------------------


def test_bearer_anonymous(token_registry, no_docker_config):
    image = unique_image()
    images.push(token_registry, "cas-test/bearer", "anon", image)
    before = len(token_registry.token_server.requests)
    with RegistryClient(token_registry.host, **FAST) as client:
        pull_all(client, "cas-test/bearer", "anon", image)
    assert [r.user for r in token_registry.token_server.requests[before:]] == [None]  # one anonymous token


def test_bearer_with_credentials_and_a_warm_pull_is_one_request(token_registry, no_docker_config):
    image = unique_image()
    images.push(token_registry, "cas-test/bearer", "creds", image)
    creds = Credentials(token_registry.username, token_registry.password)
    cache = DictTokenCache()
    tokens = token_registry.token_server
    before, mark = tokens.token_requests, token_registry.mark()
    with RegistryClient(token_registry.host, credentials=creds, token_cache=cache, **FAST) as client:
        pull_all(client, "cas-test/bearer", "creds", image)
    assert tokens.token_requests == before + 1  # one token for the manifest and every blob
    assert tokens.requests[-1].user == token_registry.username
    assert [r.status for r in token_registry.requests(mark)].count(401) == 1

    # A new client (a new process) with the same cache: no token request, one registry request.
    mark = token_registry.mark()
    with RegistryClient(token_registry.host, credentials=creds, token_cache=cache, **FAST) as client:
        assert str(client.get_manifest("cas-test/bearer", "creds").digest) == image.digest
    assert tokens.token_requests == before + 1
    assert [(r.kind, r.status) for r in token_registry.requests(mark)] == [("manifest", 200)]


def test_bearer_bad_password_is_an_auth_error(token_registry, no_docker_config):
    creds = Credentials(token_registry.username, "wrong-password")
    with RegistryClient(token_registry.host, credentials=creds, **FAST) as client, pytest.raises(AuthError) as info:
        client.get_manifest("cas-test/bearer", "creds")
    assert info.value.message.startswith(f"authentication failed for {token_registry.host}: ")
    assert "username and password" in info.value.hint
