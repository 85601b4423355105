"""RegistryClient against canned answers the real registry never gives: schema1, bad
Docker-Content-Digest, huge manifests, servers that ignore Range, TLS where none is spoken,
redirect loops. A small HTTP server in a thread on 127.0.0.1 plays the registry.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import pytest
from support.fakes import MemorySink
from support.tools import LocalServer

from cas import manifest
from cas.digest import Digest
from cas.errors import ManifestError, RegistryError, Unreachable, UnsupportedManifest
from cas.registry import Credentials, RegistryClient

FAST = {"retries": 2, "backoff": 0.001}
BLOB = bytes(range(256)) * 400  # 102400 bytes
BLOB_DIGEST = Digest("sha256", hashlib.sha256(BLOB).hexdigest())


class Answer:
    def __init__(
        self, status: int = 200, headers: dict[str, str] | None = None, body: bytes = b"", cut_after: int | None = None
    ) -> None:
        self.status, self.headers, self.body, self.cut_after = status, dict(headers or {}), body, cut_after


class Seen:
    def __init__(self, method: str, path: str, headers: dict[str, str]) -> None:
        self.method, self.path, self.headers = method, path, headers


class Canned:
    """Routes ``path -> fn(seen) -> Answer``; records every request it parsed."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[Seen], Answer]] = {}
        self.seen: list[Seen] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                canned.seen.append(seen)
                route = canned.routes.get(self.path.split("?")[0])
                answer = (
                    route(seen) if route else Answer(404, body=b'{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}')
                )
                self.send_response_only(answer.status)
                headers = {"Content-Length": str(len(answer.body)), **answer.headers}
                for name, value in headers.items():
                    if value is not None:
                        self.send_header(name, value)
                self.end_headers()
                if answer.cut_after is not None:
                    self.wfile.write(answer.body[: answer.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(answer.body)

        self.server = LocalServer(Handler, self, "canned", poll_interval=0.02)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def canned(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    servers: list[Canned] = []

    def make() -> Canned:
        servers.append(Canned())
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


def manifest_answer(body: bytes, content_type: str = manifest.OCI_MANIFEST, digest: str | None = "auto") -> Callable:
    if digest == "auto":
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
    return lambda seen: Answer(200, {"Content-Type": content_type, "Docker-Content-Digest": digest}, body)


OCI_BODY = json.dumps(
    {
        "schemaVersion": 2,
        "config": {"mediaType": manifest.OCI_CONFIG, "size": 2, "digest": "sha256:" + "a" * 64},
        "layers": [],
    }
).encode()


# --- manifests ---------------------------------------------------------------------------------


def test_the_full_accept_list_is_always_sent(canned):
    server = canned()
    server.routes["/v2/app/manifests/1"] = manifest_answer(OCI_BODY)
    with RegistryClient(server.host, **FAST) as client:
        client.get_manifest("app", "1")
    assert server.seen[0].headers["accept"] == manifest.ACCEPT


def test_schema1_comes_back_as_schema1_and_is_refused_by_the_parser(canned):
    server = canned()
    body = json.dumps({"schemaVersion": 1, "name": "old", "tag": "1", "fsLayers": [], "signatures": []}).encode()
    server.routes["/v2/old/manifests/1"] = manifest_answer(body, manifest.DOCKER_SCHEMA1[1])
    with RegistryClient(server.host, **FAST) as client:
        fetched = client.get_manifest("old", "1")
    assert fetched.media_type in manifest.DOCKER_SCHEMA1
    with pytest.raises(UnsupportedManifest):
        manifest.parse(fetched.data, fetched.media_type)


@pytest.mark.parametrize("header", [None, "sha256:not-hex", "md5:abc", "garbage"])
def test_a_missing_or_invalid_docker_content_digest_is_ignored(canned, header):
    server = canned()
    server.routes["/v2/app/manifests/1"] = manifest_answer(OCI_BODY, digest=header)
    with RegistryClient(server.host, **FAST) as client:
        fetched = client.get_manifest("app", "1")
    assert fetched.digest == Digest("sha256", hashlib.sha256(OCI_BODY).hexdigest())
    assert fetched.media_type == manifest.OCI_MANIFEST  # from Content-Type: the body has no mediaType


def test_a_sha512_docker_content_digest_is_verified_and_returned(canned):
    server = canned()
    server.routes["/v2/app/manifests/1"] = manifest_answer(
        OCI_BODY, digest="sha512:" + hashlib.sha512(OCI_BODY).hexdigest()
    )
    with RegistryClient(server.host, **FAST) as client:
        assert client.get_manifest("app", "1").digest.algorithm == "sha512"


@pytest.mark.parametrize("declared", [True, False])
def test_manifests_over_4_mib_are_refused(canned, declared):
    server = canned()
    huge = b'{"schemaVersion": 2, "pad": "' + b"x" * (4 << 20) + b'"}'
    headers = {"Content-Type": manifest.OCI_MANIFEST}
    if not declared:
        headers["Content-Length"] = None  # the answer ends when the connection closes
        headers["Connection"] = "close"
    server.routes["/v2/app/manifests/huge"] = lambda seen: Answer(200, headers, huge)
    with RegistryClient(server.host, **FAST) as client, pytest.raises(ManifestError) as info:
        client.get_manifest("app", "huge")
    assert "larger than 4 MiB" in info.value.message


def test_a_gzip_encoded_manifest_is_decoded_before_hashing(canned):
    server = canned()
    digest = "sha256:" + hashlib.sha256(OCI_BODY).hexdigest()
    server.routes["/v2/app/manifests/1"] = lambda seen: Answer(
        200,
        {"Content-Type": manifest.OCI_MANIFEST, "Content-Encoding": "gzip", "Docker-Content-Digest": digest},
        gzip.compress(OCI_BODY),
    )
    with RegistryClient(server.host, **FAST) as client:
        fetched = client.get_manifest("app", "1")
    assert fetched.data == OCI_BODY and str(fetched.digest) == digest


def test_a_manifest_cut_mid_body_is_fetched_again(canned):
    server = canned()
    calls = []

    def flaky(seen: Seen) -> Answer:
        calls.append(seen)
        cut = 10 if len(calls) == 1 else None
        return Answer(200, {"Content-Type": manifest.OCI_MANIFEST}, OCI_BODY, cut_after=cut)

    server.routes["/v2/app/manifests/1"] = flaky
    with RegistryClient(server.host, **FAST) as client:
        assert client.get_manifest("app", "1").data == OCI_BODY
    assert len(calls) == 2


# --- blobs: servers that do not honour Range properly --------------------------------------------


BLOB_PATH = f"/v2/app/blobs/{BLOB_DIGEST}"


def test_a_server_that_ignores_range_restarts_the_sink(canned):
    server = canned()
    server.routes[BLOB_PATH] = lambda seen: Answer(200, {}, BLOB)  # always the whole blob
    sink, progress = MemorySink(BLOB[:5000]), []
    with RegistryClient(server.host, **FAST) as client:
        client.download_blob("app", BLOB_DIGEST, sink, on_bytes=progress.append)
    assert bytes(sink.data) == BLOB and sink.restarts == 1
    assert server.seen[0].headers["range"] == "bytes=5000-"
    assert progress[0] == -5000 and sum(progress) == len(BLOB) - 5000  # the bar rolls back, then fills


def test_a_wrong_content_range_starts_over(canned):
    server = canned()

    def wrong(seen: Seen) -> Answer:
        if "range" in seen.headers:
            return Answer(206, {"Content-Range": f"bytes 0-{len(BLOB) - 1}/{len(BLOB)}"}, BLOB)
        return Answer(200, {}, BLOB)

    server.routes[BLOB_PATH] = wrong
    sink = MemorySink(BLOB[:5000])
    with RegistryClient(server.host, **FAST) as client:
        client.download_blob("app", BLOB_DIGEST, sink)
    assert bytes(sink.data) == BLOB and sink.restarts == 1
    assert ["range" in s.headers for s in server.seen] == [True, False]


@pytest.mark.parametrize(("total", "restarted"), [(len(BLOB), False), (len(BLOB) - 1, True)])
def test_416_means_complete_only_when_the_total_matches(canned, total, restarted):
    server = canned()
    server.routes[BLOB_PATH] = lambda seen: (
        Answer(416, {"Content-Range": f"bytes */{total}"}) if "range" in seen.headers else Answer(200, {}, BLOB)
    )
    sink = MemorySink(BLOB)
    with RegistryClient(server.host, **FAST) as client:
        client.download_blob("app", BLOB_DIGEST, sink)
    assert bytes(sink.data) == BLOB and (sink.restarts == 1) is restarted


def test_blobs_ask_for_no_content_encoding(canned):
    server = canned()
    server.routes[BLOB_PATH] = lambda seen: Answer(200, {}, BLOB)
    with RegistryClient(server.host, **FAST) as client:
        client.download_blob("app", BLOB_DIGEST, MemorySink())
    assert server.seen[0].headers["accept-encoding"] == "identity"


# --- redirects ----------------------------------------------------------------------------------


def test_a_resumed_download_follows_a_cdn_redirect_with_range_and_without_credentials(canned):
    registry, cdn = canned(), canned()
    basic = "Basic " + base64.b64encode(b"alice:pw").decode()

    def guarded(seen: Seen) -> Answer:
        if seen.headers.get("authorization") != basic:
            return Answer(401, {"WWW-Authenticate": 'Basic realm="r"'})
        return Answer(307, {"Location": f"http://{cdn.host}/cdn/blob?sig=1"})

    def cdn_blob(seen: Seen) -> Answer:
        start = int(seen.headers["range"].removeprefix("bytes=").rstrip("-"))
        return Answer(206, {"Content-Range": f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}"}, BLOB[start:])

    registry.routes[BLOB_PATH] = guarded
    cdn.routes["/cdn/blob"] = cdn_blob
    sink = MemorySink(BLOB[:777])
    with RegistryClient(registry.host, credentials=Credentials("alice", "pw"), **FAST) as client:
        client.download_blob("app", BLOB_DIGEST, sink)
    assert bytes(sink.data) == BLOB
    [at_cdn] = cdn.seen
    assert at_cdn.headers["range"] == "bytes=777-"
    assert "authorization" not in at_cdn.headers


def test_a_redirect_loop_is_an_error(canned):
    server = canned()
    server.routes[BLOB_PATH] = lambda seen: Answer(302, {"Location": BLOB_PATH})
    with RegistryClient(server.host, **FAST) as client, pytest.raises(RegistryError) as info:
        client.download_blob("app", BLOB_DIGEST, MemorySink())
    assert "more than 5 redirects" in info.value.message


def test_tls_to_a_plain_http_server_is_unreachable_with_a_hint_and_not_retried(canned):
    server = canned()
    server.routes[BLOB_PATH] = lambda seen: Answer(307, {"Location": f"https://{server.host}/cdn/blob"})
    with RegistryClient(server.host, **FAST) as client, pytest.raises(Unreachable) as info:
        client.download_blob("app", BLOB_DIGEST, MemorySink())
    assert (
        info.value.message
        == f"cannot reach registry {server.host}: TLS handshake failed: it looks like a plain-HTTP registry"
    )
    assert info.value.hint == "the server answered in plain HTTP, not TLS"  # on loopback --insecure cannot help
    assert [s.path for s in server.seen] == [BLOB_PATH]  # a TLS failure is not retried
