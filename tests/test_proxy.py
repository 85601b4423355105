"""`cas pull` through a real forward proxy (Debian's squid), counted in squid's own access log.

The registries are on 127.0.0.1, and cas, like docker (Go's net/http), never sends loopback
requests to a proxy. curl does (7.88 here proxies 127.0.0.1 and localhost unless NO_PROXY
says otherwise); cas follows docker. So the proxied registries are named
``registry.cas.test``, a name only squid can resolve (its own hosts file maps it to
127.0.0.1): a request that reaches the registry under that name can only have gone through
squid, and one that skipped squid fails to resolve.
"""

from __future__ import annotations

import json

import pytest
from support import images
from support.squid import Squid, named_tls_registry

NAME = "registry.cas.test"


@pytest.fixture(scope="module")
def squid():
    proxy = Squid({NAME: "127.0.0.1"}).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory):
    registry = named_tls_registry(tmp_path_factory.mktemp("tls"), NAME, "proxied", "1", _image())
    yield registry
    registry.stop()


def _image() -> images.Image:
    return images.Image([images.random_layer(200_000, seed=31), images.layer({"hello.txt": "through squid\n"})])


PROXY_VARIABLES = (
    "NO_PROXY",
    "no_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
)


@pytest.fixture(autouse=True)
def _no_inherited_proxy_settings(cas_home, monkeypatch):
    """Each test sets exactly the variables it names (cas_home's NO_PROXY=127.0.0.1,localhost goes)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _registry_lines(registry, name: str) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in registry.requests() if r.repository == name and r.status < 400]


def test_plain_http_goes_through_http_proxy(cas, registry, squid):
    image = _image()
    images.push(registry, "proxied", "1", image)
    ref = f"{NAME}:{registry.port}/proxied:1"
    squid.mark()
    registry.mark()
    pulled = cas("pull", "--insecure", "--json", ref, env={"http_proxy": squid.url, "https_proxy": squid.url})
    assert json.loads(pulled.stdout)["images"][0]["downloaded_blobs"] == len(image.digests)

    # insecure tries HTTPS first: one tunnel, whose handshake the server answers in plain HTTP; then
    # plain HTTP for every request (the switch is remembered, the tunnel never tried again)
    forwarded = squid.new_requests()
    assert [r.method for r in forwarded].count("CONNECT") == 1, forwarded
    forwarded = [r for r in forwarded if r.method != "CONNECT"]
    prefix = f"http://{NAME}:{registry.port}/v2/"
    assert forwarded and all(r.url.startswith(prefix) for r in forwarded), forwarded
    blobs = sorted(r.url.rsplit("/", 1)[1] for r in forwarded if "/blobs/" in r.url and r.status == 200)
    assert blobs == sorted(b.digest for b in image.blobs)  # config and both layers, once each
    # what squid forwarded is what the registry answered: nothing went around it
    assert sorted((r.method, r.url[len(prefix) - 4 :]) for r in forwarded if r.status < 400) == sorted(
        _registry_lines(registry, "proxied")
    )


def test_https_goes_through_a_connect_tunnel(cas, tls_registry, squid, tmp_path):
    certs = tmp_path / "certs.d" / f"{NAME}:{tls_registry.port}"
    certs.mkdir(parents=True)
    certs.joinpath("ca.crt").write_bytes(tls_registry.tls.ca.read_bytes())
    ref = f"{NAME}:{tls_registry.port}/proxied:1"
    squid.mark()
    tls_registry.mark()
    env = {"HTTPS_PROXY": squid.url, "CAS_CERTS_DIRS": str(tmp_path / "certs.d")}
    pulled = json.loads(cas("pull", "--json", ref, env=env).stdout)["images"][0]
    assert pulled["downloaded_blobs"] == len(_image().digests)

    tunnels = squid.new_requests()
    assert tunnels and {(r.method, r.url) for r in tunnels} == {("CONNECT", f"{NAME}:{tls_registry.port}")}
    served = _registry_lines(tls_registry, "proxied")
    assert sorted(m for m, p in served if "/blobs/" in p) == ["GET"] * 3, served  # all inside the tunnel


@pytest.mark.parametrize(
    ("variable", "no_proxy"),
    [
        ("NO_PROXY", NAME),
        ("no_proxy", NAME),
        ("NO_PROXY", ".cas.test"),
        ("NO_PROXY", "cas.test"),
        ("NO_PROXY", f"localhost, {NAME.upper()}"),
        ("NO_PROXY", "*"),
    ],
)
def test_no_proxy_sends_the_request_direct(variable, no_proxy, cas, registry, squid):
    squid.mark()
    env = {"http_proxy": squid.url, "HTTPS_PROXY": squid.url, variable: no_proxy}
    failed = cas("pull", "--insecure", f"{NAME}:{registry.port}/proxied:1", env=env, check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.startswith(f"error: cannot reach registry {NAME}:{registry.port}"), failed.stderr
    assert squid.new_requests() == []  # direct, and the name only squid knows does not resolve


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_is_never_proxied_like_docker(host, cas, registry, squid):
    image = _image()
    images.push(registry, "proxied", "1", image)
    squid.mark()
    env = {"http_proxy": squid.url, "HTTPS_PROXY": squid.url, "HTTP_PROXY": squid.url}
    pulled = json.loads(cas("pull", "--json", f"{host}:{registry.port}/proxied:1", env=env).stdout)["images"][0]
    assert pulled["manifest"] == image.digest
    assert squid.new_requests() == []


def test_an_unreachable_proxy_is_one_line_naming_it(cas, registry):
    dead = "http://127.0.0.1:9"
    env = {"http_proxy": dead, "https_proxy": dead}  # insecure tries HTTPS first
    failed = cas("pull", "--insecure", f"{NAME}:{registry.port}/proxied:1", env=env, check=False)
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        f"error: cannot reach registry {NAME}:{registry.port}: connection refused (through proxy {dead})",
        "hint: check the proxy in HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, or list the registry in NO_PROXY",
    ]
