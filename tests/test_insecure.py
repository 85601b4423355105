""" "Insecure" as docker, podman, skopeo and crane mean it, end to end against real registries.

An insecure registry is tried over HTTPS without verifying its certificate, and over plain HTTP
when its server answers the TLS handshake in plain HTTP. The TLS registry here serves a
certificate from a test CA nobody trusts, and nothing but TLS: a request it logged arrived over
HTTPS. Loopback registries are plain HTTP unless marked insecure, so a loopback registry needs
the mark (``--insecure``, registries.conf, a daemon.json CIDR range) to be reached over TLS at
all. A name that is not loopback (``registry.cas.test``) reaches 127.0.0.1 only through squid,
which alone resolves it (tests/support/squid.py): its access log shows which scheme went out.
"""

from __future__ import annotations

import json

import pytest
from support import images
from support.registry import Registry
from support.squid import Squid, named_tls_registry
from support.tools import free_port

NAME = "registry.cas.test"
NO_CONFIG = {"CAS_HOSTS_DIR": "", "CAS_REGISTRIES_CONF": "", "CAS_DOCKER_DAEMON_JSON": ""}


def _image() -> images.Image:
    return images.Image([images.random_layer(100_000, seed=47), images.layer({"a.txt": "insecure\n"})])


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory):
    registry = named_tls_registry(tmp_path_factory.mktemp("tls"), NAME, "app", "1", _image())
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def squid():
    proxy = Squid({NAME: "127.0.0.1"}).start()
    yield proxy
    proxy.stop()


@pytest.fixture(autouse=True)
def _isolated(cas_home, monkeypatch):
    for name, value in NO_CONFIG.items():
        monkeypatch.setenv(name, value)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def _pulled(cas, ref: str, *args: str, env: dict[str, str] | None = None) -> dict:
    return json.loads(cas("pull", "--json", *args, ref, env=env).stdout)["images"][0]


def _served_over_tls(registry: Registry, repository: str) -> list[str]:
    """The blobs the TLS-only registry served with 200: each one went over HTTPS."""
    return sorted(r.reference for r in registry.blob_gets() if r.repository == repository and r.status == 200)


def _via_squid(squid: Squid) -> dict[str, str]:
    return {"HTTPS_PROXY": squid.url, "HTTP_PROXY": squid.url, "NO_PROXY": "", "no_proxy": ""}


def test_untrusted_certificate_fails_with_a_hint_and_insecure_pulls_over_https(cas, tls_registry, squid):
    ref = f"{NAME}:{tls_registry.port}/app:1"
    env = _via_squid(squid)
    failed = cas("pull", ref, env=env, check=False)
    lines = failed.stderr.splitlines()
    assert failed.returncode == 1 and len(lines) == 2, failed.stderr
    assert lines[0].startswith(f"error: cannot reach registry {NAME}:{tls_registry.port}: TLS certificate not trusted")
    assert "--insecure" in lines[1], lines

    squid.mark()
    tls_registry.mark()
    pulled = _pulled(cas, ref, "--insecure", env=env)
    assert pulled["downloaded_blobs"] == len(_image().digests)
    assert _served_over_tls(tls_registry, "app") == sorted(b.digest for b in _image().blobs)
    assert {(r.method, r.url) for r in squid.new_requests()} == {("CONNECT", f"{NAME}:{tls_registry.port}")}


def test_insecure_on_loopback_tries_https_first(cas, tls_registry):
    ref = f"{tls_registry.host}/app:1"
    failed = cas("pull", ref, check=False)  # loopback is plain HTTP by default: the TLS server refuses it
    assert failed.stderr.splitlines() == [
        f"error: registry {tls_registry.host} speaks HTTPS, not plain HTTP ({ref}): "
        "Client sent an HTTP request to an HTTPS server.",
        "hint: mark it insecure (--insecure) to use HTTPS without verifying its certificate, "
        "or write https:// with its CA where it is configured",
    ]
    tls_registry.mark()
    assert _pulled(cas, ref, "--insecure")["manifest"] == _image().digest
    assert _served_over_tls(tls_registry, "app") == sorted(b.digest for b in _image().blobs)


def test_plain_http_registry_marked_insecure_falls_back_once(cas, registry):
    images.push(registry, "plain", "1", _image())
    ref = f"{registry.host}/plain:1"
    registry.mark()
    done = cas("pull", "-v", "--json", "--insecure", ref)
    assert json.loads(done.stdout)["images"][0]["manifest"] == _image().digest
    log = done.stderr.splitlines()
    switched = [line for line in log if "answered TLS in plain HTTP" in line]
    assert len(switched) == 1, log  # probed once, remembered for every later request
    assert not [line for line in log if "https://" in line and " 200" in line], log
    assert {r.reference for r in registry.blob_gets() if r.repository == "plain"} == {b.digest for b in _image().blobs}


def test_registries_conf_insecure_registry_and_mirror(cas, tls_registry, tmp_path):
    conf = tmp_path / "registries.conf"
    ref = f"{tls_registry.host}/app:1"
    conf.write_text(f'[[registry]]\nlocation = "{tls_registry.host}"\n')
    env = {"CAS_REGISTRIES_CONF": str(conf)}
    assert cas("pull", ref, env=env, check=False).returncode == 1  # not insecure: plain HTTP to a TLS server

    conf.write_text(f'[[registry]]\nlocation = "{tls_registry.host}"\ninsecure = true\n')
    tls_registry.mark()
    assert _pulled(cas, ref, env=env)["downloaded_blobs"] == len(_image().digests)
    assert _served_over_tls(tls_registry, "app") == sorted(b.digest for b in _image().blobs)

    dead = f"127.0.0.1:{free_port()}"
    conf.write_text(
        f'[[registry]]\nlocation = "{dead}"\n[[registry.mirror]]\nlocation = "{tls_registry.host}"\ninsecure = true\n'
    )
    tls_registry.mark()
    pulled = _pulled(cas, f"{dead}/app:1", env={**env, "CAS_HOME": str(tmp_path / "fresh")})
    assert pulled["manifest_endpoint"] == f"https://{tls_registry.host}"
    assert _served_over_tls(tls_registry, "app") == sorted(b.digest for b in _image().blobs)


def test_daemon_json_insecure_registries_by_name_and_by_range(cas, tls_registry, squid, tmp_path):
    daemon = tmp_path / "daemon.json"
    env = {**_via_squid(squid), "CAS_DOCKER_DAEMON_JSON": str(daemon)}
    daemon.write_text(json.dumps({"insecure-registries": [f"{NAME}:{tls_registry.port}"]}))
    squid.mark()
    tls_registry.mark()
    assert _pulled(cas, f"{NAME}:{tls_registry.port}/app:1", env=env)["downloaded_blobs"] == len(_image().digests)
    assert {r.method for r in squid.new_requests()} == {"CONNECT"}
    assert _served_over_tls(tls_registry, "app") == sorted(b.digest for b in _image().blobs)

    ref = f"{tls_registry.host}/app:1"
    env = {"CAS_DOCKER_DAEMON_JSON": str(daemon), "CAS_HOME": str(tmp_path / "fresh")}
    daemon.write_text(json.dumps({"insecure-registries": ["10.0.0.0/8"]}))
    assert cas("pull", ref, env=env, check=False).returncode == 1  # 127.0.0.1 is not in the range
    daemon.write_text(json.dumps({"insecure-registries": ["127.0.0.0/8"]}))
    tls_registry.mark()
    assert _pulled(cas, ref, env=env)["downloaded_blobs"] == len(_image().digests)
    assert _served_over_tls(tls_registry, "app") == sorted(b.digest for b in _image().blobs)


def test_push_with_insecure_to_an_untrusted_registry(cas, tls_registry, registry):
    images.push(registry, "src", "1", _image())
    cas("pull", f"{registry.host}/src:1")
    tls_registry.mark()
    cas("push", "--insecure", f"{registry.host}/src:1", f"{tls_registry.host}/pushed:1")
    served = [(r.method, r.kind, r.status) for r in tls_registry.requests() if r.repository == "pushed"]
    assert ("PUT", "manifest", 201) in served, served
    assert _pulled(cas, f"{tls_registry.host}/pushed:1", "--insecure")["manifest"] == _image().digest
