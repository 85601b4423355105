"""A `cas serve` left running keeps the budget by itself: max-age evicts with nothing written, and
what it serves stays (a real server, a short max-age and check interval)."""

from __future__ import annotations

import json
import threading
import time

import httpx
from support.serving import CasServer
from support.tools import wait_until
from test_budget import _cached, _image, _push

from cas.manifest import DOCKER_MANIFEST, OCI_MANIFEST

ACCEPT = {"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"}


def test_a_running_serve_evicts_by_max_age_without_any_write_and_keeps_what_it_serves(
    cas, cas_home, registry, tmp_path
):
    from cas.store import Store

    aged, served, idle = (
        _push(registry, name, _image(seed)) for name, seed in (("aged", 41), ("served", 42), ("idle", 43))
    )
    for ref in (aged, served, idle):
        cas("pull", "-q", ref)
    store = Store(cas_home)
    store.metadata.touch_refs(store.metadata.ref_records(aged), when=time.time() - 8 * 86400)
    # served and idle: used at the same instant; only serving can keep one past max-age
    store.metadata.touch_refs(
        [*store.metadata.ref_records(served), *store.metadata.ref_records(idle)], when=time.time()
    )
    store.close()
    config = tmp_path / "config.toml"
    config.write_text('max-age = "6s"\n\n[serve]\nbudget-interval = "1s"\n')

    registry.mark()
    serving = threading.Event()
    server = CasServer(cas_home, "--offline", "--upstream", f"lab={registry.host}", env={"CAS_CONFIG": str(config)})
    with server, httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:

        def keep_serving() -> None:
            while not serving.is_set():
                assert http.get("/v2/lab/budget/served/manifests/1", headers=ACCEPT).status_code == 200
                serving.wait(0.5)

        assert http.get("/v2/lab/budget/served/manifests/1", headers=ACCEPT).status_code == 200
        client = threading.Thread(target=keep_serving)
        client.start()
        try:
            wait_until(lambda: aged not in _cached(cas), timeout=60, what="the aged image evicted by the server")
            wait_until(lambda: idle not in _cached(cas), timeout=60, what="the idle image evicted past max-age")
        finally:
            serving.set()
            client.join()
        assert _cached(cas) == {served}  # used when idle was, but served since
        log = server.output()
    assert f"keeping the store's budget, max-age 6s (from {config}:1), every 1s" in log
    for ref in (aged, idle):
        assert f"evicted 1 image ({ref}), " in log and f"as unused for longer than 6s (max-age from {config}:1)" in log
    assert registry.requests() == []  # nothing was pulled: no write started the evictions
    assert json.loads(cas("stats", "--json").stdout)["evicted_images"] == 2
    blobs = cas_home / "v1" / "blobs" / "sha256"
    for seed, gone in ((41, True), (42, False), (43, True)):
        assert all((blobs / b.digest.split(":")[1]).exists() != gone for b in _image(seed).blobs), seed
    assert cas("verify").returncode == 0


def test_a_pull_through_keeps_the_budget_at_once_and_spares_what_it_pulled(cas, cas_home, registry):
    first, second = (_push(registry, name, _image(seed)) for name, seed in (("first", 44), ("second", 45)))
    budget = int(max(_image(seed).size for seed in (44, 45)) * 1.5)  # one image fits, not two
    server = CasServer(cas_home, "--upstream", f"lab={registry.host}", env={"CAS_MAX_SIZE": str(budget)})
    with server, httpx.Client(base_url=server.url, timeout=60, trust_env=False) as http:
        assert "every 10m" in server.output()  # the periodic check is far off: the eviction below is the write's
        for name, ref in (("first", first), ("second", second)):
            assert http.get(f"/v2/lab/budget/{name}/manifests/1", headers=ACCEPT).status_code == 200
            wait_until(lambda ref=ref: f"pulled through {ref}" in server.output(), timeout=60, what=f"{ref} pulled")
        wait_until(lambda: f"evicted 1 image ({first})" in server.output(), timeout=60, what="the eviction")
        assert _cached(cas) == {second}
        log = server.output()
    assert "to stay under" in log and "max-size from $CAS_MAX_SIZE" in log, log
    assert cas("verify").returncode == 0
