"""`cas pull`, `export` and `push` over HTTPS end to end, against the real registry serving a
certificate from a test CA on 127.0.0.1.

Loopback registries are plain HTTP unless configured otherwise; a containerd ``hosts.toml``
whose ``server`` is ``https://127.0.0.1:PORT`` (with ``ca``, ``client`` or ``skip_verify``)
makes cas speak TLS to them, as it does for any registry that is not on loopback. The
registry's own access log proves each request arrived (over TLS: it serves nothing else).
"""

from __future__ import annotations

import json
import shutil
import ssl
from pathlib import Path

import pytest
from support import images
from support.pki import make_pki
from support.registry import Registry

HELLO = "hello over tls\n"


def _image() -> images.Image:
    return images.Image([images.busybox_layer(), images.layer({"hello.txt": HELLO})], cmd=("/bin/cat", "/hello.txt"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _context(pki, client: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if client:
        context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    return context


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory, pki):
    registry = Registry(tmp_path_factory.mktemp("tls-e2e"), tls=pki).start()
    images.push(registry, "app", "1", _image(), verify=_context(pki))
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def mtls_registry(tmp_path_factory, pki):
    registry = Registry(tmp_path_factory.mktemp("mtls-e2e"), tls=pki, client_certs=True).start()
    images.push(registry, "app", "1", _image(), verify=_context(pki, client=True))
    yield registry
    registry.stop()


@pytest.fixture
def hosts(tmp_path, monkeypatch, pki):
    """Write DIR/HOST:PORT/hosts.toml (the CA and client pair beside it) and point $CAS_HOSTS_DIR at DIR."""
    root = tmp_path / "hosts.d"

    def write(registry: Registry, body: str) -> Path:
        directory = root / registry.host
        directory.mkdir(parents=True, exist_ok=True)
        for source, name in ((pki.ca, "ca.pem"), (pki.client.cert, "client.cert"), (pki.client.key, "client.key")):
            shutil.copy(source, directory / name)
        path = directory / "hosts.toml"
        path.write_text(f'server = "https://{registry.host}"\n{body}')
        return path

    monkeypatch.setenv("CAS_HOSTS_DIR", str(root))
    return write


def _served(registry: Registry, repository: str) -> list[tuple[str, str, int]]:
    return [(r.method, r.kind, r.status) for r in registry.requests() if r.repository == repository]


def test_pull_export_and_push_over_tls_with_a_private_ca(cas, tls_registry, hosts, clean_dockerd, tmp_path):
    hosts(tls_registry, 'ca = "ca.pem"\n')
    ref = f"{tls_registry.host}/app:1"
    image = _image()
    tls_registry.mark()
    pulled = json.loads(cas("pull", "--json", ref).stdout)["images"][0]
    assert pulled["manifest"] == image.digest and pulled["downloaded_blobs"] == len(image.digests)
    blob_gets = sorted(r.reference for r in tls_registry.blob_gets() if r.status == 200)
    assert blob_gets == sorted(b.digest for b in image.blobs)

    archive = tmp_path / "app.tar"
    cas("export", ref, "-o", archive)
    assert f"Loaded image: {ref}" in clean_dockerd.load(archive).stdout
    assert clean_dockerd.run(ref).stdout == HELLO

    tls_registry.mark()
    cas("push", ref, f"{tls_registry.host}/pushed:1")
    served = _served(tls_registry, "pushed")
    assert ("PUT", "manifest", 201) in served, served
    fetched = json.loads(cas("pull", "--json", f"{tls_registry.host}/pushed:1").stdout)["images"][0]
    assert fetched["manifest"] == image.digest  # byte for byte, over TLS both ways


def test_mutual_tls_presents_the_client_certificate_from_hosts_toml(cas, mtls_registry, hosts):
    ref = f"{mtls_registry.host}/app:1"
    path = hosts(mtls_registry, 'ca = "ca.pem"\n')
    refused = cas("pull", ref, check=False)  # no client certificate: the handshake fails
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    lines = refused.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"error: cannot reach registry {mtls_registry.host}: "), lines

    path.write_text(path.read_text() + 'client = ["client.cert", "client.key"]\n')
    pulled = json.loads(cas("pull", "--json", ref).stdout)["images"][0]
    assert pulled["manifest"] == _image().digest
    cas("push", ref, f"{mtls_registry.host}/pushed:1")
    assert ("PUT", "manifest", 201) in _served(mtls_registry, "pushed")


def test_an_untrusted_certificate_is_one_line_naming_the_host(cas, tls_registry, hosts):
    path = hosts(tls_registry, "")  # https, but the test CA is not trusted
    for args in (
        ["pull", f"{tls_registry.host}/app:1"],
        ["push", f"{tls_registry.host}/app:1", f"{tls_registry.host}/x:1"],
    ):
        if args[0] == "push":
            hosts(tls_registry, 'ca = "ca.pem"\n')
            cas("pull", args[1])  # something to push
            hosts(tls_registry, "")
        failed = cas(*args, check=False)
        assert failed.returncode == 1, failed.stderr
        lines = failed.stderr.splitlines()
        assert len(lines) == 2 and "Traceback" not in failed.stderr, lines
        assert lines[0].startswith(f"error: cannot reach registry {tls_registry.host}: TLS certificate not trusted")
        assert lines[1].startswith("hint: ") and str(path) in lines[1], lines


def test_skip_verify_accepts_any_certificate(cas, tls_registry, hosts):
    hosts(tls_registry, "skip_verify = true\n")
    pulled = json.loads(cas("pull", "--json", f"{tls_registry.host}/app:1").stdout)["images"][0]
    assert pulled["manifest"] == _image().digest
