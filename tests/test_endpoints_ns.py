"""containerd's ``?ns=`` on the URLs cas builds for an endpoint: which endpoints get it, and how.

containerd adds ``ns=<the reference's registry>`` to manifest and blob requests sent to a
host that is not that registry; registries.conf (containers/image) and daemon.json (docker)
mirrors get none, as their own clients send none.
"""

from __future__ import annotations

from test_endpoints_config import sources

from cas.reference import parse
from cas.registry.endpoints.model import proxy_namespace, with_query

DIGEST = "sha256:" + "ab" * 32


def test_a_query_already_there_is_kept_and_the_value_is_encoded():
    assert with_query("https://m/v2/a/blobs/x", "ns", "docker.io") == "https://m/v2/a/blobs/x?ns=docker.io"
    assert with_query("https://m/v2/a?x=1", "ns", "localhost:5000") == "https://m/v2/a?x=1&ns=localhost:5000"
    assert with_query("https://m/v2/a?", "ns", "r.example") == "https://m/v2/a?ns=r.example"
    assert with_query("https://m/v2/a", "ns", "a b&c") == "https://m/v2/a?ns=a%20b%26c"


def test_only_another_host_is_a_proxy_and_registry_1_docker_io_is_docker_io():
    assert proxy_namespace("mirror.example:5000", "docker.io") == "docker.io"
    assert proxy_namespace("registry-1.docker.io", "docker.io") == ""
    assert proxy_namespace("registry-1.docker.io", "ghcr.io") == "ghcr.io"
    assert proxy_namespace("ghcr.io", "ghcr.io") == ""
    assert proxy_namespace("localhost:5000", "localhost:5001") == "localhost:5001"


def test_hosts_toml_mirrors_get_ns_and_override_path_keeps_it(tmp_path):
    src = sources(
        tmp_path,
        hosts={
            "docker.io": """
[host."http://10.0.0.1:5000"]
[host."https://override.example/custom/api"]
  override_path = true
[host."https://registry-1.docker.io"]
"""
        },
    )
    eps = src.endpoints(parse("alpine:3"))
    assert [e.resource("library/alpine", "manifests", "3") for e in eps] == [
        "http://10.0.0.1:5000/v2/library/alpine/manifests/3?ns=docker.io",
        "https://override.example/custom/api/library/alpine/manifests/3?ns=docker.io",
        "https://registry-1.docker.io/v2/library/alpine/manifests/3",  # docker.io itself, as a host entry
        "https://registry-1.docker.io/v2/library/alpine/manifests/3",  # the default server
    ]
    assert eps[0].resource("library/alpine", "blobs", DIGEST) == (
        f"http://10.0.0.1:5000/v2/library/alpine/blobs/{DIGEST}?ns=docker.io"
    )


def test_a_hosts_toml_server_elsewhere_gets_ns_too(tmp_path):
    src = sources(tmp_path, hosts={"_default": 'server = "https://cache.example"\n'})
    (server,) = src.endpoints(parse("reg.example:5000/team/app"))
    assert (
        server.resource("team/app", "manifests", "1")
        == "https://cache.example/v2/team/app/manifests/1?ns=reg.example:5000"
    )


def test_registries_conf_and_daemon_json_mirrors_get_no_ns(tmp_path):
    conf = '[[registry]]\nlocation = "reg.example"\n\n[[registry.mirror]]\nlocation = "mirror.example/cache"\n'
    daemon = {"registry-mirrors": ["https://mirror.example"]}
    for eps in (
        sources(tmp_path / "conf", conf=conf).endpoints(parse("reg.example/team/app")),
        sources(tmp_path / "daemon", daemon=daemon).endpoints(parse("alpine")),
    ):
        assert eps[0].mirror and "?" not in eps[0].resource("r", "blobs", DIGEST)
        assert all(e.namespace == "" for e in eps)
