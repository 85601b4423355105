"""TLS trust as docker has it: certs.d CAs and client certificates, against a real TLS registry.

cas reaches loopback registries over plain HTTP, so these tests drive the client's
transport directly with https URLs; a registry elsewhere gets exactly this transport.
"""

from __future__ import annotations

import httpx
import pytest
from support.pki import make_pki
from support.registry import Registry

from cas.errors import RegistryError
from cas.registry import transport


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory, pki):
    with Registry(tmp_path_factory.mktemp("tls-registry"), tls=pki) as registry:
        yield registry


@pytest.fixture(scope="module")
def mtls_registry(tmp_path_factory, pki):
    with Registry(tmp_path_factory.mktemp("mtls-registry"), tls=pki, client_certs=True) as registry:
        yield registry


@pytest.fixture
def certs_d(tmp_path, monkeypatch):
    """An empty certs.d root of our own, and no TLS context cached from an earlier test."""
    root = tmp_path / "certs.d"
    root.mkdir()
    monkeypatch.setenv("CAS_CERTS_DIRS", str(root))
    monkeypatch.setattr(transport, "_tls_contexts", {})
    return root


def _get(registry: Registry) -> int:
    with httpx.Client(transport=transport.LazyTLSTransport()) as client:
        return client.get(f"https://{registry.host}/v2/").status_code


def test_an_unknown_ca_is_refused(certs_d, tls_registry):
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(tls_registry)


def test_a_ca_in_certs_d_is_trusted_for_that_registry_only(certs_d, tls_registry, mtls_registry, pki):
    (certs_d / tls_registry.host).mkdir()
    (certs_d / tls_registry.host / "ca.crt").write_bytes(pki.ca.read_bytes())
    assert _get(tls_registry) == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(mtls_registry)  # another host:port: its own certs.d directory, which does not exist


def test_a_client_certificate_in_certs_d_is_presented(certs_d, mtls_registry, pki):
    directory = certs_d / mtls_registry.host
    directory.mkdir()
    (directory / "ca.crt").write_bytes(pki.ca.read_bytes())
    with pytest.raises(httpx.HTTPError):
        _get(mtls_registry)  # the server wants a client certificate
    transport._tls_contexts.clear()
    (directory / "client.cert").write_bytes(pki.client.cert.read_bytes())
    (directory / "client.key").write_bytes(pki.client.key.read_bytes())
    assert _get(mtls_registry) == 200


def test_a_broken_certs_d_file_is_a_clear_error(certs_d, tls_registry):
    (certs_d / tls_registry.host).mkdir()
    (certs_d / tls_registry.host / "ca.crt").write_text("not a certificate\n")
    with pytest.raises(RegistryError) as info:
        _get(tls_registry)
    assert "ca.crt" in info.value.message and tls_registry.host in info.value.message and info.value.hint
