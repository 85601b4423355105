"""Network failure policy: a stalled transfer is aborted (and resumes later), a slow one that keeps
moving is not; the rule itself (StallWatch) on a fake clock.

The transfers go through the fault proxy, which throttles blob bodies per response.
"""

from __future__ import annotations

import json

import pytest
from support import images

from cas.registry.stall import StallWatch

NO_MIRRORS = {"CAS_HOSTS_DIR": "", "CAS_REGISTRIES_CONF": "", "CAS_DOCKER_DAEMON_JSON": ""}


@pytest.fixture(scope="module")
def slow_image(registry):
    image = images.Image([images.random_layer(400_000, seed=81)])
    images.push(registry, "cas-test/stall", "1", image)
    return image


def layer_gets(proxy, image):
    digest = image.layers[0].digest
    return [r for r in proxy.requests if r.kind == "blob" and r.method == "GET" and r.path.endswith(digest)]


def test_a_stalled_download_is_aborted_naming_blob_and_registry_then_resumes(cas, proxy, slow_image):
    ref = f"{proxy.host}/cas-test/stall:1"
    proxy.throttle(1)  # one 1 KiB chunk per blob response, then silence
    failed = cas("pull", "--timeout", "1", ref, env=NO_MIRRORS, check=False)
    assert failed.returncode == 1
    first = failed.stderr.splitlines()[0]
    digest = slow_image.layers[0].digest
    assert first.startswith(f"error: download of blob {digest} of {proxy.host}/cas-test/stall stalled: ")
    assert "no data for 1 s" in first and "bytes held" in first
    assert "resumes where it stopped" in failed.stderr and "--timeout" in failed.stderr

    proxy.reset()
    done = json.loads(cas("pull", "--json", ref, env=NO_MIRRORS).stdout)["images"][0]
    assert done["downloaded_blobs"] == 1  # the config made it before; the layer resumed
    (resumed,) = layer_gets(proxy, slow_image)
    assert resumed.headers["range"].startswith("bytes=") and resumed.headers["range"] != "bytes=0-"
    assert resumed.status == 206 and resumed.bytes_sent < slow_image.layers[0].size


def test_a_slow_download_that_keeps_moving_is_not_aborted(cas, proxy, slow_image):
    proxy.throttle(150_000)  # ~2.7 s for the layer: longer than --timeout, far above the minimum rate
    done = json.loads(cas("pull", "--json", "--timeout", "1", f"{proxy.host}/cas-test/stall:1", env=NO_MIRRORS).stdout)
    assert done["images"][0]["downloaded_blobs"] == len(slow_image.digests)
    assert [r.status for r in layer_gets(proxy, slow_image)] == [200]  # one stream, never cut


def test_a_trickle_below_the_minimum_rate_is_a_stall(cas, proxy, slow_image):
    proxy.throttle(50_000)
    env = {**NO_MIRRORS, "CAS_MIN_RATE": "1000000", "CAS_TIMEOUT": "1"}
    failed = cas("pull", f"{proxy.host}/cas-test/stall:1", env=env, check=False)
    assert failed.returncode == 1
    assert "stalled: less than 1000000 bytes/s for 1 s (" in failed.stderr.splitlines()[0]


@pytest.mark.parametrize("value", ["soon", "-1", "0"])
def test_a_bad_timeout_in_the_environment_is_one_line(cas, value):
    failed = cas("pull", "127.0.0.1:1/x:1", env={**NO_MIRRORS, "CAS_TIMEOUT": value}, check=False)
    assert failed.returncode != 0 and "CAS_TIMEOUT" in failed.stderr and "Traceback" not in failed.stderr


# --- the rule ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_stall_watch_allows_slow_progress_and_stops_a_trickle():
    clock = Clock()
    watch = StallWatch(1000, 2.0, clock)
    for _ in range(10):  # 1500 bytes/s for 5 s: slow, but above the rate
        clock.now += 0.5
        watch.update(750)
    trickle = StallWatch(1000, 2.0, clock)
    clock.now += 1.0
    trickle.update(100)  # the window is not over yet: no verdict on 100 bytes
    clock.now += 1.0
    with pytest.raises(StallWatch.Stalled):
        trickle.update(100)
    assert trickle.describe() == "less than 1000 bytes/s for 2 s (100 bytes/s)"


def test_stall_watch_with_no_window_seen_describes_silence():
    assert StallWatch(1024, 30.0, Clock()).describe() == "no data for 30 s"


def test_a_split_download_below_the_minimum_rate_is_a_stall_and_keeps_its_ranges(store, proxy, slow_image):
    from cas.digest import Digest
    from cas.errors import Stalled
    from cas.registry import RegistryClient
    from cas.registry.ranged import ConnectionBudget, RangePolicy

    layer = slow_image.layers[0]
    digest = Digest.parse(layer.digest)
    proxy.throttle(20_000)  # per connection: 4 ranges together move ~80 KB/s, below the rate asked
    ranged = RangePolicy(ConnectionBudget(4), chunk=64 << 10, min_size=128 << 10, fast_enough=None)  # split at once
    with RegistryClient(proxy.host, ranges=ranged, timeout=1.0, min_rate=500_000) as client:
        with store.ingests.open(digest, layer.size) as ing, pytest.raises(Stalled) as info:
            client.download_blob("cas-test/stall", digest, ing)
    assert info.value.message.startswith(f"download of blob {digest} of {proxy.host}/cas-test/stall stalled: ")
    assert "less than 500000 bytes/s for 1 s" in info.value.message
    assert len({r.headers.get("range") for r in layer_gets(proxy, slow_image)}) > 1  # it was split
    proxy.reset()
    with RegistryClient(proxy.host, ranges=ranged) as client, store.ingests.open(digest, layer.size) as ing:
        client.download_blob("cas-test/stall", digest, ing, commit=ing.commit)  # resumes what it kept
    assert store.blobs.read(digest) == layer.data
    assert proxy.bytes_sent("blob") < layer.size  # what arrived before the stall was kept
