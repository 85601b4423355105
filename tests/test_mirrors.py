"""Mirrors end to end: an upstream registry and the distribution registry as its pull-through cache.

Everything is counted on the servers: each registry's access log tells cas's requests
(User-Agent ``cas/...``) from the mirror's own requests to its upstream (Go's client).
"""

from __future__ import annotations

import json
import time

import pytest
from support import images
from support.registry import Registry
from support.tools import free_port, wait_until

REPO = "team/app"


@pytest.fixture
def fleet(tmp_path):
    """A fresh upstream holding ``team/app:1`` (two layers, ~600 KB), and a pull-through mirror of it."""
    upstream = Registry(tmp_path / "upstream").start()
    mirror = Registry(tmp_path / "mirror", proxy_remote=upstream.url).start()
    image = images.Image([images.random_layer(400_000, seed=71), images.random_layer(200_000, seed=72)])
    images.push(upstream, REPO, "1", image)
    upstream.mark(), mirror.mark()  # count from here: what the test does
    yield upstream, mirror, image
    mirror.stop()
    upstream.stop()


def hosts_dir(tmp_path, registry_host: str, body: str):
    directory = tmp_path / "hosts.d"
    (directory / registry_host).mkdir(parents=True)
    (directory / registry_host / "hosts.toml").write_text(body)
    return directory


def mirror_hosts(tmp_path, upstream: Registry, mirror_url: str, capabilities: str = '["pull", "resolve"]'):
    body = f'server = "{upstream.url}"\n\n[host."{mirror_url}"]\n  capabilities = {capabilities}\n'
    return hosts_dir(tmp_path, upstream.host, body)


def env_for(hosts=None, registries_conf=None, daemon_json=None) -> dict[str, str]:
    """Only the configuration a test gives: never the machine's /etc files."""
    return {
        "CAS_HOSTS_DIR": str(hosts or ""),
        "CAS_REGISTRIES_CONF": str(registries_conf or ""),
        "CAS_DOCKER_DAEMON_JSON": str(daemon_json or ""),
    }


def pull_json(cas, ref: str, env: dict[str, str], *extra: str) -> dict:
    return json.loads(cas("pull", "--json", *extra, ref, env=env).stdout)["images"][0]


def by_cas(records):
    return [r for r in records if r.user_agent.startswith("cas/")]


def not_cas(records):
    return [r for r in records if not r.user_agent.startswith("cas/")]


def test_hosts_toml_mirror_is_the_only_way_to_the_upstream(cas, fleet, tmp_path):
    upstream, mirror, image = fleet
    env = env_for(hosts=mirror_hosts(tmp_path, upstream, mirror.url))
    result = pull_json(cas, f"{upstream.host}/{REPO}:1", env)

    assert by_cas(upstream.requests()) == []  # cas never spoke to the upstream...
    served_up = not_cas(upstream.blob_gets())
    assert {r.reference for r in served_up if r.status == 200} == {b.digest for b in image.blobs}  # ...the mirror did
    mirror_gets = [r for r in by_cas(mirror.requests()) if r.method == "GET" and r.status == 200]
    assert {r.reference for r in mirror_gets if r.kind == "blob"} == {b.digest for b in image.blobs}
    assert result["manifest_endpoint"] == mirror.url
    assert [e["url"] for e in result["endpoints"]] == [mirror.url]
    assert result["endpoints"][0]["served_bytes"] == sum(b.size for b in image.blobs) + image.manifest_blob.size
    assert result["fallbacks"] == []


def test_upstream_down_a_cached_image_still_pulls_and_loads_on_an_empty_daemon(
    cas, cas_home, fleet, tmp_path, clean_dockerd
):
    upstream, mirror, image = fleet
    env = env_for(hosts=mirror_hosts(tmp_path, upstream, mirror.url))
    ref = f"{upstream.host}/{REPO}:1"
    pull_json(cas, ref, env, "--jobs", "1")  # host 1 fills the mirror
    upstream.stop_only()

    env["CAS_HOME"] = str(tmp_path / "host2")  # host 2: a fresh store, the upstream gone
    result = pull_json(cas, ref, env)
    assert result["downloaded_blobs"] == len(image.digests) and result["manifest_endpoint"] == mirror.url
    archive = tmp_path / "app.tar"
    cas("export", ref, "-o", archive, env=env)
    assert f"Loaded image: {ref}" in clean_dockerd.load(archive).stdout


def test_mirror_down_falls_back_to_the_upstream_fast(cas, fleet, tmp_path):
    upstream, mirror, image = fleet
    env = env_for(hosts=mirror_hosts(tmp_path, upstream, mirror.url))
    mirror.stop()
    started = time.monotonic()
    result = pull_json(cas, f"{upstream.host}/{REPO}:1", env)
    elapsed = time.monotonic() - started

    assert elapsed < 3.0, f"the fallback took {elapsed:.2f} s"
    assert result["manifest_endpoint"] == upstream.url
    assert [e["url"] for e in result["endpoints"]] == [upstream.url]
    (fallback,) = result["fallbacks"]  # found dead once: every later request skips it without knocking
    assert fallback["endpoint"] == mirror.url and "connection refused" in fallback["reason"]
    assert fallback["what"] == f"manifest {upstream.host}/{REPO}:1"
    assert len(by_cas(upstream.blob_gets())) == len(image.blobs)


def test_a_mirror_without_the_image_404s_and_the_upstream_serves_it(cas, fleet, tmp_path, registry):
    upstream, _, image = fleet
    env = env_for(hosts=mirror_hosts(tmp_path, upstream, registry.url))  # a plain registry: no team/app
    result = pull_json(cas, f"{upstream.host}/{REPO}:1", env)

    tried = by_cas(registry.manifest_requests())
    assert [(r.path, r.status) for r in tried] == [(f"/v2/{REPO}/manifests/1", 404)]
    assert result["manifest_endpoint"] == upstream.url
    assert "not found" in result["fallbacks"][0]["reason"]
    assert {r.reference for r in by_cas(upstream.blob_gets())} == {b.digest for b in image.blobs}


def test_a_mirror_serving_a_corrupted_blob_is_named_and_the_blob_comes_from_upstream(
    cas, cas_home, fleet, tmp_path, registry, proxy
):
    upstream, _, image = fleet
    images.push(registry, REPO, "1", image)  # the fault proxy's registry holds the same image...
    bad = image.layers[0].digest
    registry.corrupt_blob(bad)  # ...with one layer damaged on its disk
    env = env_for(hosts=mirror_hosts(tmp_path, upstream, proxy.url))
    result = pull_json(cas, f"{upstream.host}/{REPO}:1", env)

    (fallback,) = result["fallbacks"]
    assert fallback["endpoint"] == proxy.url and fallback["what"] == f"blob {bad}"
    assert fallback["reason"].startswith(f"mirror {proxy.url} served wrong bytes for blob {bad}")
    assert f"expected {bad}, got sha256:" in fallback["reason"]
    assert [r.reference for r in by_cas(upstream.blob_gets())] == [bad]  # only that blob came from upstream
    stored = cas_home / "v1" / "blobs" / "sha256" / bad.removeprefix("sha256:")
    assert images.sha256(stored.read_bytes()) == bad


def test_registries_conf_mirror_pulls_through_the_mirror(cas, fleet, tmp_path):
    upstream, mirror, image = fleet
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{upstream.host}"\n\n[[registry.mirror]]\nlocation = "{mirror.host}"\n')
    result = pull_json(cas, f"{upstream.host}/{REPO}:1", env_for(registries_conf=conf))
    assert by_cas(upstream.requests()) == []
    assert result["manifest_endpoint"] == mirror.url and len(result["endpoints"]) == 1


def test_digest_only_mirror_resolves_tags_at_the_upstream_only(cas, fleet, tmp_path):
    upstream, mirror, image = fleet
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f'[[registry]]\nlocation = "{upstream.host}"\n\n'
        f'[[registry.mirror]]\nlocation = "{mirror.host}"\npull-from-mirror = "digest-only"\n'
    )
    result = pull_json(cas, f"{upstream.host}/{REPO}:1", env_for(registries_conf=conf))

    assert [(r.method, r.reference) for r in by_cas(upstream.requests())] == [("GET", "1")]  # the tag, nothing else
    assert not [r for r in by_cas(mirror.manifest_requests()) if r.reference == "1"]
    assert {r.reference for r in by_cas(mirror.blob_gets())} == {b.digest for b in image.blobs}
    assert result["manifest_endpoint"] == upstream.url


def test_daemon_json_registry_mirrors_serve_docker_hub_references(cas, fleet, tmp_path):
    upstream, mirror, image = fleet
    images.push(upstream, "library/mirrored", "1", image)
    daemon = tmp_path / "daemon.json"
    daemon.write_text(json.dumps({"registry-mirrors": [mirror.url], "debug": True}))
    # No internet here: docker.io itself is unreachable, so success means the mirror served everything.
    result = pull_json(cas, "mirrored:1", env_for(daemon_json=daemon))
    assert result["ref"] == "docker.io/library/mirrored:1" and result["manifest_endpoint"] == mirror.url
    assert result["fallbacks"] == []
    assert {r.reference for r in not_cas(upstream.blob_gets())} >= {b.digest for b in image.blobs}


def test_the_upstreams_credentials_never_reach_the_mirror(cas, tmp_path, proxy_factory, basic_registry):
    from support.tokenserver import TokenServer

    tokens = TokenServer(tmp_path / "tokens", users={"builder": "s3cret"}, anonymous=False).start()
    upstream = Registry(tmp_path / "up", "token", token_server=tokens, username="builder", password="s3cret").start()
    mirror = Registry(tmp_path / "mirror", proxy_remote=upstream.url, proxy_credentials=("builder", "s3cret"))
    try:
        images.push(upstream, REPO, "1", images.Image([images.random_layer(100_000, seed=73)]))
        front = proxy_factory(mirror.start())  # records every header the mirror receives
        config = tmp_path / "docker-config"
        config.mkdir(exist_ok=True)  # the cas_home fixture made it: DOCKER_CONFIG
        (config / "config.json").write_text(json.dumps({"auths": {upstream.host: {"auth": "YnVpbGRlcjpzM2NyZXQ="}}}))
        env = {**env_for(hosts=mirror_hosts(tmp_path, upstream, front.url)), "DOCKER_CONFIG": str(config)}
        ref = f"{upstream.host}/{REPO}:1"
        result = pull_json(cas, ref, env)
        assert result["manifest_endpoint"] == front.url and result["fallbacks"] == []
        assert front.requests and all("authorization" not in r.headers for r in front.requests)
        assert by_cas(upstream.requests()) == []

        # A mirror that asks for credentials gets none (it has none of its own): cas falls back.
        challenging = proxy_factory(basic_registry)
        hosts = tmp_path / "challenging"
        hosts.mkdir()
        env["CAS_HOSTS_DIR"] = str(mirror_hosts(hosts, upstream, challenging.url))
        env["CAS_HOME"] = str(tmp_path / "host2")
        result = json.loads(
            cas("pull", "--json", "-u", "builder", "--password-stdin", ref, input="s3cret\n", env=env).stdout
        )["images"][0]
        assert result["fallbacks"][0]["endpoint"] == challenging.url
        assert result["manifest_endpoint"] == upstream.url
        assert challenging.requests and all("authorization" not in r.headers for r in challenging.requests)
        assert any(r.status == 200 for r in by_cas(upstream.blob_gets()))  # the upstream took the credentials
    finally:
        mirror.stop()
        upstream.stop()
        tokens.stop()


def test_a_blocked_registry_is_refused_before_any_request(cas, fleet, tmp_path):
    upstream, mirror, _ = fleet
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f'[[registry]]\nprefix = "{upstream.host}/team"\nlocation = "{upstream.host}/team"\nblocked = true\n'
    )
    done = cas("pull", f"{upstream.host}/{REPO}:1", env=env_for(registries_conf=conf), check=False)
    assert done.returncode == 1
    assert f"error: registry {upstream.host} is blocked for {upstream.host}/{REPO} by {conf}" in done.stderr
    assert upstream.requests() == [] and mirror.requests() == []


def test_an_https_loopback_upstream_in_hosts_toml_is_reached_with_its_ca(cas, tmp_path):
    from support.pki import make_pki

    pki = make_pki(tmp_path / "pki")
    image = images.Image([images.random_layer(50_000, seed=74)])
    with Registry(tmp_path / "tls") as plain:  # the test's pusher speaks plain HTTP: fill the storage first
        images.push(plain, REPO, "1", image)
    with Registry(tmp_path / "tls", tls=pki) as upstream:
        ref = f"{upstream.host}/{REPO}:1"
        refused = cas("pull", ref, env=env_for(), check=False)  # loopback without configuration: plain HTTP
        assert refused.returncode == 1, refused.stderr
        hosts = hosts_dir(tmp_path, upstream.host, f'server = "https://{upstream.host}"\nca = "{pki.ca}"\n')
        result = pull_json(cas, ref, env_for(hosts=hosts))
        assert result["manifest_endpoint"] == f"https://{upstream.host}"
        assert result["downloaded_blobs"] == len(image.digests)
        blob_lines = lambda: [  # noqa: E731  (requests() syncs over plain HTTP; read the log itself)
            line for line in upstream.access_log_path.read_text().splitlines() if "/blobs/" in line and '"cas/' in line
        ]
        wait_until(lambda: len(blob_lines()) == len(image.blobs), timeout=10, what="the TLS registry's log")


def test_mutual_tls_and_skip_verify_from_hosts_toml(cas, tmp_path):
    from support.pki import make_pki

    pki = make_pki(tmp_path / "pki")
    image = images.Image([images.random_layer(30_000, seed=75)])
    with Registry(tmp_path / "mtls") as plain:
        images.push(plain, REPO, "1", image)
    with Registry(tmp_path / "mtls", tls=pki, client_certs=True) as upstream:
        ref = f"{upstream.host}/{REPO}:1"
        body = f'server = "https://{upstream.host}"\nca = "{pki.ca}"\n'
        hosts = hosts_dir(tmp_path / "no-client", upstream.host, body)
        refused = cas("pull", ref, env=env_for(hosts=hosts), check=False)  # the server wants a client certificate
        assert refused.returncode == 1 and "--insecure" not in refused.stderr
        hosts = hosts_dir(
            tmp_path / "client", upstream.host, body + f'client = ["{pki.client.cert}", "{pki.client.key}"]\n'
        )
        assert pull_json(cas, ref, env_for(hosts=hosts))["downloaded_blobs"] == len(image.digests)
        # skip_verify: no CA at all, and the pull still goes over TLS
        body = f'server = "https://{upstream.host}"\nskip_verify = true\nclient = ["{pki.client.cert}", "{pki.client.key}"]\n'
        hosts = hosts_dir(tmp_path / "skip", upstream.host, body)
        env = {**env_for(hosts=hosts), "CAS_HOME": str(tmp_path / "host-skip")}
        assert pull_json(cas, ref, env)["manifest_endpoint"] == f"https://{upstream.host}"


def test_configured_headers_are_sent_to_their_endpoint(cas, tmp_path, registry, test_images, proxy):
    body = (
        f'server = "{registry.url}"\n\n[host."{proxy.url}"]\n  capabilities = ["pull", "resolve"]\n'
        '  header = { X-Fleet = "build-7" }\n'
    )
    result = pull_json(cas, f"{registry.host}/base:latest", env_for(hosts=hosts_dir(tmp_path, registry.host, body)))
    assert result["manifest_endpoint"] == proxy.url
    assert proxy.requests and all(r.headers.get("x-fleet") == "build-7" for r in proxy.requests)


def test_connection_refused_with_no_endpoint_left_fails_fast(cas, monkeypatch):
    from cas.errors import Unreachable
    from cas.registry import RegistryClient
    from cas.registry import requester as client_module

    host = f"127.0.0.1:{free_port()}"
    slept: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", slept.append)  # count the backoff, do not wait for it
    with RegistryClient(host) as client, pytest.raises(Unreachable):  # the defaults a pull uses
        client.get_manifest(REPO, "1")
    assert len(slept) == 2 and sum(slept) <= 0.3  # was 5 retries, 0.5 + 1 + 2 + 4 + 8 s at most

    done = cas("pull", f"{host}/{REPO}:1", env=env_for(), check=False)
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == f"error: cannot reach registry {host}: connection refused"
    assert "--insecure" not in done.stderr


def test_falling_back_from_a_refused_mirror_waits_for_nothing(monkeypatch, registry, test_images, cas_home):
    from cas.registry import RegistryClient, walk
    from cas.registry import requester as client_module
    from cas.registry.endpoints import Endpoint, upstream

    dead = f"http://127.0.0.1:{free_port()}"
    endpoints = [Endpoint(dead, dead + "/v2", "", mirror=True), upstream(registry.host, "")]
    slept: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", slept.append)
    walk.forget_dead()
    with RegistryClient(registry.host, endpoints=endpoints) as client:
        fetched = client.get_manifest("base", "latest")
    assert fetched.endpoint == registry.url and slept == []  # one refused connection, no backoff
    assert [f.endpoint for f in client.served.fallbacks] == [dead]
    walk.forget_dead()
