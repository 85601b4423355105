"""Which CAs cas trusts for an https registry, against the real registry serving TLS from a test CA.

The system's hashed CA directory is read lazily (no certificate parsed before a handshake
needs it); SSL_CERT_FILE and SSL_CERT_DIR are honoured as OpenSSL's defaults are.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess

import httpx
import pytest
from support import images
from support.pki import make_pki
from support.registry import Registry
from support.tools import require

from cas.registry import transport


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


IMAGE = images.Image([images.layer({"hello.txt": "trusted\n"})])


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory, pki):
    registry = Registry(tmp_path_factory.mktemp("tls-trust"), tls=pki).start()
    images.push(registry, "app", "1", IMAGE, verify=ssl.create_default_context(cafile=str(pki.ca)))
    yield registry
    registry.stop()


def _hashed_dir(path, ca) -> str:
    """A CA directory in OpenSSL's layout: the certificate under its subject hash, as update-ca-certificates makes."""
    path.mkdir()
    shutil.copy(ca, path / "ca.pem")
    subprocess.run([require("openssl", "openssl"), "rehash", str(path)], check=True, capture_output=True)
    return str(path)


def _system(capath: str) -> ssl.DefaultVerifyPaths:
    """The system's default paths, with ``capath`` as its CA directory and no bundle file."""
    return ssl.DefaultVerifyPaths(None, capath, "SSL_CERT_FILE", "", "SSL_CERT_DIR", capath)


def test_the_system_ca_directory_is_read_lazily_and_still_verifies(tls_registry, pki, tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    transport._trust_system_store(context, _system(_hashed_dir(tmp_path / "certs", pki.ca)))
    assert context.cert_store_stats()["x509_ca"] == 0  # nothing parsed up front
    with httpx.Client(verify=context) as client:
        assert client.get(f"https://{tls_registry.host}/v2/").status_code == 200
    assert context.cert_store_stats()["x509_ca"] == 1  # looked up by the handshake

    stranger = make_pki(tmp_path / "other")  # same CA name, so the same hash: a lookup that finds the wrong key
    wrong = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    transport._trust_system_store(wrong, _system(_hashed_dir(tmp_path / "wrong", stranger.ca)))
    with httpx.Client(verify=wrong) as client, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client.get(f"https://{tls_registry.host}/v2/")


def test_ssl_cert_file_and_ssl_cert_dir_choose_what_a_pull_trusts(cas, tls_registry, pki, tmp_path, monkeypatch):
    hosts = tmp_path / "hosts.d" / tls_registry.host
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(f'server = "https://{tls_registry.host}"\n')  # no ca: the system's trust
    ref = f"{tls_registry.host}/app:1"
    env = {"CAS_HOSTS_DIR": str(tmp_path / "hosts.d"), "CAS_CERTS_DIRS": str(tmp_path / "no-certs.d")}
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    monkeypatch.setenv("SSL_CERT_FILE", ssl.get_default_verify_paths().openssl_cafile)  # the system bundle alone
    refused = cas("pull", ref, env=env, check=False)
    assert refused.returncode == 1 and "not trusted" in refused.stderr, refused.stderr

    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    assert json.loads(cas("pull", "--json", ref, env=env).stdout)["images"][0]["downloaded_blobs"] == len(IMAGE.digests)
    cas("rm", ref)
    cas("prune")

    monkeypatch.delenv("SSL_CERT_FILE")
    monkeypatch.setenv("SSL_CERT_DIR", _hashed_dir(tmp_path / "dir", pki.ca))
    assert json.loads(cas("pull", "--json", ref, env=env).stdout)["images"][0]["downloaded_blobs"] == len(IMAGE.digests)
