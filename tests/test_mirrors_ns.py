"""containerd's ``?ns=`` end to end: what a mirror's access log shows of cas's requests.

A pull-through cache serving several upstreams (Zot, Harbor, Spegel, Nexus) picks the
upstream from ``ns``. cas sends it as containerd does for hosts.toml endpoints, and not for
registries.conf or daemon.json mirrors, whose own clients (containers/image, docker) send none.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from support import auth, images
from test_mirrors import REPO, by_cas, env_for, hosts_dir, mirror_hosts, pull_json
from test_mirrors import fleet as fleet  # the fixture: an upstream and its pull-through mirror
from test_registry_ranged import CHUNK, FAST, policy

from cas.digest import Digest
from cas.registry import RegistryClient
from cas.registry.endpoints import hosts_toml
from cas.registry.ranged import split


def ns_of(uri: str) -> list[str]:
    return parse_qs(urlsplit(uri).query).get("ns", [])


def content(records):
    """cas's manifest and blob requests, the ones containerd names the namespace in."""
    return [r for r in by_cas(records) if r.kind in ("manifest", "blob")]


def test_every_manifest_and_blob_request_to_a_hosts_toml_mirror_names_the_upstream(cas, fleet, tmp_path):
    upstream, mirror, image = fleet
    pull_json(cas, f"{upstream.host}/{REPO}:1", env_for(hosts=mirror_hosts(tmp_path, upstream, mirror.url)))

    sent = content(mirror.requests())
    assert {r.kind for r in sent} == {"manifest", "blob"}
    assert {r.reference for r in sent if r.kind == "blob"} == {b.digest for b in image.blobs}
    assert all(ns_of(r.uri) == [upstream.host] for r in sent), [r.uri for r in sent]
    assert all(ns_of(r.uri) == [] for r in by_cas(mirror.requests()) if r not in sent)  # /v2/ and the like


def test_the_upstream_itself_gets_no_ns(cas, fleet, tmp_path):
    upstream, mirror, image = fleet
    hosts = mirror_hosts(tmp_path, upstream, mirror.url, capabilities='["pull"]')  # tags resolved upstream
    pull_json(cas, f"{upstream.host}/{REPO}:1", env_for(hosts=hosts))

    asked_upstream = content(upstream.requests())
    assert [(r.kind, r.reference) for r in asked_upstream] == [("manifest", "1")]
    assert ns_of(asked_upstream[0].uri) == []
    blobs = [r for r in content(mirror.requests()) if r.kind == "blob"]
    assert {r.reference for r in blobs} == {b.digest for b in image.blobs}
    assert all(ns_of(r.uri) == [upstream.host] for r in blobs)


@pytest.mark.parametrize("source", ["registries.conf", "daemon.json"])
def test_registries_conf_and_daemon_json_mirrors_get_no_ns_as_with_podman_and_docker(cas, fleet, tmp_path, source):
    upstream, mirror, image = fleet
    if source == "registries.conf":
        conf = tmp_path / "registries.conf"
        conf.write_text(
            f'[[registry]]\nlocation = "{upstream.host}"\n\n[[registry.mirror]]\nlocation = "{mirror.host}"\n'
        )
        ref, env = f"{upstream.host}/{REPO}:1", env_for(registries_conf=conf)
    else:  # docker.io references only; docker.io itself is unreachable here
        images.push(upstream, "library/mirrored", "1", image)
        daemon = tmp_path / "daemon.json"
        daemon.write_text(json.dumps({"registry-mirrors": [mirror.url]}))
        ref, env = "mirrored:1", env_for(daemon_json=daemon)
    result = pull_json(cas, ref, env)

    assert result["manifest_endpoint"] == mirror.url
    sent = content(mirror.requests())
    assert {r.kind for r in sent} == {"manifest", "blob"} and all("?" not in r.uri for r in sent)


def test_docker_hub_references_name_docker_io(cas, fleet, tmp_path):
    upstream, mirror, image = fleet
    images.push(upstream, "library/mirrored", "1", image)
    hosts = hosts_dir(tmp_path, "docker.io", f'[host."{mirror.url}"]\n  capabilities = ["pull", "resolve"]\n')
    result = pull_json(cas, "mirrored:1", env_for(hosts=hosts))  # docker.io is unreachable here

    assert result["manifest_endpoint"] == mirror.url
    sent = content(mirror.requests())
    assert {r.kind for r in sent} == {"manifest", "blob"}
    assert all(ns_of(r.uri) == ["docker.io"] for r in sent)


@pytest.mark.parametrize("redirect", [False, True], ids=["direct", "cdn-redirect"])
def test_range_requests_carry_ns_and_a_redirect_target_gets_none(tmp_path, store, registry, proxy, redirect):
    """Parallel ranges of one blob from a hosts.toml mirror (the fault proxy); with a 307 to
    another origin (a CDN's signed URL), that URL is followed as given: no ns added to it."""
    blob = images.Blob(bytes(range(256)) * (5 * CHUNK // 256) + b"tail", "application/octet-stream")
    with auth.client(registry, push=True) as c:
        images.push_blob(c, "ns/ranged", blob)
    if redirect:
        proxy.redirect_blobs()
    toml = hosts_dir(tmp_path, "reg.example", f'[host."{proxy.url}"]\n') / "reg.example" / "hosts.toml"
    endpoints = hosts_toml.read(toml, "reg.example", "ns/ranged")
    digest = Digest.parse(blob.digest)
    with RegistryClient("reg.example", endpoints=endpoints, ranges=policy(), **FAST) as client:
        with store.ingests.open(digest, blob.size) as ing:
            client.download_blob("ns/ranged", digest, ing)
            ing.commit()
    assert store.blobs.read(digest) == blob.data

    gets = [r for r in proxy.requests if r.kind == "blob" and r.method == "GET"]
    assert len(gets) == len(split([(0, blob.size)], CHUNK)) and all(r.headers.get("range") for r in gets)
    assert all(ns_of(r.path) == ["reg.example"] for r in gets)
    served = proxy.origin.requests
    assert len(served) == (len(gets) if redirect else 0)
    assert all(urlsplit(r.path).query.startswith("expires=") and ns_of(r.path) == [] for r in served)
