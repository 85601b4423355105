"""Parallel ranged downloads (cas.registry.ranged + cas.store.ranges) against the real registry
behind the fault proxy: the split, its fallbacks to one stream, resets, redirects, a kill.

Blobs are small here (a few MiB) with a small chunk, so a split has many ranges; the proxy
records every request, so "split", "fell back" and "resumed" are checked on the server side.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading

import httpx
import pytest
from support import auth, images
from support.tools import wait_until

from cas.digest import Digest
from cas.registry import Credentials, RegistryClient
from cas.registry.ranged import ConnectionBudget, RangePolicy, Unusual, check_answer, split
from cas.store import ranges

REPO = "cas-test/ranged"
CHUNK = 256 << 10
PROBE = 256 << 10  # a first range longer than this is judged before it ends
FAST = {"retries": 3, "backoff": 0.01}


@pytest.fixture(scope="module")
def blob(registry):
    """A 3 MiB + 5 bytes blob (12 ranges of 256 KiB and a short one), pushed once."""
    data = os.urandom((3 << 20) + 5)
    pushed = images.Blob(data, "application/octet-stream")
    with auth.client(registry, push=True) as c:
        images.push_blob(c, REPO, pushed)
    return pushed


def policy(connections: int = 4, fast_enough: float | None = None, chunk: int = CHUNK) -> RangePolicy:
    """Splits at once, whatever the speed (the loopback registry is fast): the split itself is under test."""
    return RangePolicy(
        ConnectionBudget(connections), chunk=chunk, min_size=2 * chunk, fast_enough=fast_enough, probe=PROBE
    )


def download(
    store, host: str, blob, *, connections: int = 4, progress=None, fast_enough=None, chunk: int = CHUNK
):  # fmt: skip
    digest = Digest.parse(blob.digest)
    report = progress.append if isinstance(progress, list) else progress
    with RegistryClient(host, ranges=policy(connections, fast_enough, chunk), **FAST) as client:
        with store.ingests.open(digest, blob.size) as ing:
            client.download_blob(REPO, digest, ing, report)
            info = ing.commit()
    assert store.blobs.read(digest) == blob.data
    return info


def blob_gets(proxy):
    return [r for r in proxy.requests if r.kind == "blob" and r.method == "GET"]


def ranges_asked(requests) -> list[str | None]:
    return [r.headers.get("range") for r in requests]


# --- pure pieces ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("intervals", "merged", "prefix", "missing"),
    [
        ([], [], 0, [(0, 10)]),
        ([(0, 4)], [(0, 4)], 4, [(4, 10)]),
        ([(6, 8), (0, 2), (2, 3)], [(0, 3), (6, 8)], 3, [(3, 6), (8, 10)]),
        ([(4, 6), (5, 10)], [(4, 10)], 0, [(0, 4)]),
        ([(0, 10)], [(0, 10)], 10, []),
        ([(3, 3)], [], 0, [(0, 10)]),
    ],
)
def test_interval_arithmetic(intervals, merged, prefix, missing):
    assert ranges.merge(intervals) == merged
    assert ranges.prefix_end(intervals) == prefix
    assert ranges.gaps(intervals, 10) == missing


def test_split_cuts_missing_parts_into_chunks():
    assert split([(0, 10), (12, 13)], 4) == [(0, 4), (4, 8), (8, 10), (12, 13)]


@pytest.mark.parametrize(
    ("status", "content_range", "ok"),
    [
        (206, "bytes 0-99/1000", True),
        (200, None, False),  # the server ignores Range
        (206, None, False),
        (206, "bytes 0-99/*", False),  # no full size
        (206, "bytes 0-99/999", False),  # another size
        (206, "bytes 1-100/1000", False),  # another range
        (206, "bytes 0-49/1000", False),  # a shorter one
        (416, "bytes */1000", False),
    ],
)
def test_only_the_exact_range_of_the_full_size_is_accepted(status, content_range, ok):
    headers = {"Content-Range": content_range} if content_range else {}
    response = httpx.Response(status, headers=headers)
    if ok:
        check_answer(response, 0, 100, 1000)
    else:
        with pytest.raises(Unusual):
            check_answer(response, 0, 100, 1000)


def test_a_corrupt_range_record_holds_nothing(tmp_path):
    (tmp_path / ranges.RECORD).write_text('{"size": 10, "held": [[0, 99]]}')
    assert ranges.load(tmp_path, 10) == []
    (tmp_path / ranges.RECORD).write_text("not json")
    assert ranges.load(tmp_path, 10) == []
    (tmp_path / ranges.RECORD).write_text('{"size": 11, "held": [[0, 4]]}')
    assert ranges.load(tmp_path, 10) == []
    assert ranges.load(tmp_path / "none", 10) is None


# --- against the registry ------------------------------------------------------------------


def test_a_large_blob_is_fetched_as_exact_ranges_and_verifies(store, proxy, blob):
    progress: list[int] = []
    info = download(store, proxy.host, blob, progress=progress)
    assert info.size == blob.size
    gets = blob_gets(proxy)
    expected = [f"bytes={s}-{e - 1}" for s, e in split([(0, blob.size)], CHUNK)]
    assert sorted(ranges_asked(gets)) == sorted(expected)
    assert ranges_asked(gets)[0] == expected[0]  # the probe asks for the first chunk
    assert all(r.status == 206 for r in gets)
    assert sum(progress) == blob.size and min(progress) > 0
    assert proxy.bytes_sent("blob") == blob.size  # no byte fetched twice
    assert not (store.ingests.dir / f"sha256-{Digest.parse(blob.digest).hex}").exists()


def test_a_server_that_ignores_range_still_yields_the_blob(store, proxy, blob):
    proxy.strip_range()
    progress: list[int] = []
    download(store, proxy.host, blob, progress=progress)
    gets = blob_gets(proxy)
    assert gets[0].fault == "strip-range" and gets[0].status == 200  # the probe: 200 ends the split
    assert [r.status for r in gets[1:]] == [200] and "range" not in gets[1].headers  # one stream from 0
    assert sum(progress) == blob.size


def test_a_resumed_download_from_a_server_that_ignores_range(store, proxy, blob):
    digest = Digest.parse(blob.digest)
    with store.ingests.open(digest, blob.size) as ing:  # an earlier, interrupted single stream
        ing.write(blob.data[: 1 << 20])
    proxy.strip_range()
    download(store, proxy.host, blob)
    gets = blob_gets(proxy)
    assert gets[0].headers["range"] == f"bytes={1 << 20}-{(1 << 20) + CHUNK - 1}"
    assert [r.status for r in gets] == [200, 200]  # the probe, then the whole blob from 0


def test_a_wrong_first_content_range_keeps_one_stream(store, proxy, blob):
    proxy.wrong_content_range(times=1)
    download(store, proxy.host, blob)
    gets = blob_gets(proxy)
    assert gets[0].fault == "wrong-range"
    assert len(gets) == 2 and "range" not in gets[1].headers and gets[1].status == 200


def test_a_wrong_content_range_mid_split_falls_back_to_one_stream_from_the_prefix(store, proxy, blob):
    proxy.wrong_content_range(times=1, after=3)
    progress: list[int] = []
    download(store, proxy.host, blob, connections=2, progress=progress)
    gets = blob_gets(proxy)
    assert [r.fault for r in gets].count("wrong-range") == 1
    last = gets[-1]
    assert last.status in (200, 206) and last.headers.get("range", "bytes=0-").endswith("-")  # one open-ended stream
    assert sum(progress) == blob.size  # what was dropped was rolled back


def test_resets_in_several_ranges_at_once_are_retried_and_verify(store, proxy, blob):
    proxy.drop_after(100_000, times=8)  # the first range alone, then up to 4 at once
    progress: list[int] = []
    download(store, proxy.host, blob, connections=4, progress=progress)
    gets = blob_gets(proxy)
    dropped = [r for r in gets if r.fault == "drop"]
    assert len(dropped) >= 5 and all(r.status == 206 for r in dropped)
    assert len({r.headers["range"].rsplit("-", 1)[1] for r in dropped}) >= 3  # cuts in several ranges
    for cut in dropped:  # each cut range was asked again from where it stopped
        start, end = map(int, cut.headers["range"].removeprefix("bytes=").split("-"))
        assert f"bytes={start + 100_000}-{end}" in ranges_asked(gets)
    assert sum(progress) == blob.size


def test_ranges_follow_a_redirect_to_another_origin_without_credentials(store, basic_registry, proxy_factory, blob):
    with auth.client(basic_registry, push=True) as c:
        images.push_blob(c, REPO, blob)
    proxy = proxy_factory(basic_registry)
    proxy.redirect_blobs()
    digest = Digest.parse(blob.digest)
    credentials = Credentials(basic_registry.username, basic_registry.password)
    with RegistryClient(proxy.host, ranges=policy(), credentials=credentials, **FAST) as client:
        with store.ingests.open(digest, blob.size) as ing:
            client.download_blob(REPO, digest, ing)
            ing.commit()
    assert store.blobs.read(digest) == blob.data
    served = proxy.origin.requests
    assert sorted(r.range for r in served) == sorted(f"bytes={s}-{e - 1}" for s, e in split([(0, blob.size)], CHUNK))
    assert all(r.status == 206 for r in served)
    assert proxy.origin.authorizations == [None] * len(served)  # the registry's credentials stayed home
    assert all(r.headers.get("authorization") for r in blob_gets(proxy) if r.status == 307)


def test_a_fast_first_range_keeps_the_rest_on_one_stream(store, proxy, blob):
    download(store, proxy.host, blob, fast_enough=1)  # any link is "fast" at 1 byte/s
    assert ranges_asked(blob_gets(proxy)) == [f"bytes=0-{CHUNK - 1}", f"bytes={CHUNK}-"]
    assert proxy.bytes_sent("blob") == blob.size  # the first range was kept, not fetched again


def test_a_slow_first_range_splits_the_rest(store, proxy, blob):
    proxy.throttle(4 << 20)  # 4 MiB/s per connection
    download(store, proxy.host, blob, fast_enough=16 << 20)
    assert len(blob_gets(proxy)) == len(split([(0, blob.size)], CHUNK))


def test_a_slow_link_starts_the_other_ranges_once_the_probe_is_in_not_after_the_first_range(store, proxy, blob):
    """The first range is 1 MiB at 1 MiB/s; its first 256 KiB (the probe) judge the link, so the
    next ranges are asked while it is still arriving, not a second later."""
    big = 1 << 20
    proxy.throttle(1 << 20)
    seen: list[tuple[int, int]] = []  # at each chunk reported: (blob GETs asked, bytes the first one sent)

    def progress(n: int) -> None:
        gets = blob_gets(proxy)
        seen.append((len(gets), gets[0].bytes_sent))

    download(store, proxy.host, blob, progress=progress, fast_enough=16 << 20, chunk=big)
    assert len(blob_gets(proxy)) == len(split([(0, blob.size)], big))
    assert any(gets > 1 and first_sent < big for gets, first_sent in seen)


def test_a_fast_probe_keeps_one_stream_from_the_end_of_the_first_range(store, proxy, blob):
    download(store, proxy.host, blob, fast_enough=1, chunk=1 << 20)  # judged after 256 KiB: fast
    assert ranges_asked(blob_gets(proxy)) == [f"bytes=0-{(1 << 20) - 1}", f"bytes={1 << 20}-"]
    assert proxy.bytes_sent("blob") == blob.size


def test_one_connection_means_one_stream(store, proxy, blob):
    download(store, proxy.host, blob, connections=1)
    assert ranges_asked(blob_gets(proxy)) == [None]


KILLED_DOWNLOAD = """
import sys
sys.path.insert(0, sys.argv[1])
from cas.digest import Digest
from cas.registry import Credentials, RegistryClient
from cas.registry.ranged import ConnectionBudget, RangePolicy
from cas.store import Store
host, repo, digest, size, chunk = sys.argv[2], sys.argv[3], Digest.parse(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
store = Store(sys.argv[7])
policy = RangePolicy(ConnectionBudget(4), chunk=chunk, min_size=2 * chunk)
with RegistryClient(host, ranges=policy) as client, store.ingests.open(digest, size) as ing:
    client.download_blob(repo, digest, ing)
    ing.commit()
"""


def test_a_ranged_download_killed_with_several_ranges_in_flight_resumes_and_verifies(
    store, registry, proxy, proxy_factory, blob
):
    digest = Digest.parse(blob.digest)
    entry = store.ingests.dir / f"sha256-{digest.hex}"
    proxy.throttle(1 << 20)  # 1 MiB/s per connection: 4 ranges in flight for a while
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_DOWNLOAD, repo_root, proxy.host, REPO, blob.digest, str(blob.size)]
        + [str(CHUNK), str(store.home)],
        stderr=subprocess.PIPE,
    )

    def held_beyond_prefix():
        record = ranges.load(entry, blob.size) or []
        return len(record) >= 2 and record

    try:
        held = wait_until(held_beyond_prefix, timeout=60, what="two separate ranges recorded")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    held = ranges.load(entry, blob.size)  # what the kill left
    assert len(held) >= 2 and sum(e - s for s, e in held) < blob.size
    data = (entry / "data").read_bytes()
    for start, end in held:  # every recorded byte is the blob's
        assert data[start:end] == blob.data[start:end]

    proxy = proxy_factory(registry)  # a fresh log: the killed child's last requests may still be arriving
    download(store, proxy.host, blob)
    asked = ranges_asked(blob_gets(proxy))
    for start, end in held:  # nothing recorded was fetched again
        for request in asked:
            first, last = map(int, request.removeprefix("bytes=").split("-"))
            assert last < start or first >= end, (request, held)
    assert proxy.bytes_sent("blob") == blob.size - sum(e - s for s, e in held)
    assert hashlib.sha256(store.blobs.read(digest)).hexdigest() == digest.hex


def test_the_range_record_never_names_bytes_not_on_disk(store, blob, tmp_path):
    """The store side alone: the record is written before a byte lands, and after bytes land."""
    digest = Digest.parse(blob.digest)
    with store.ingests.open(digest, blob.size) as ing:
        writer = ing.ranged()
        entry = writer.directory
        assert json.loads((entry / ranges.RECORD).read_text()) == {"size": blob.size, "held": []}
        writer.write_at(CHUNK, blob.data[CHUNK : 2 * CHUNK])
        writer.range_done()
        assert ranges.load(entry, blob.size) == [(CHUNK, 2 * CHUNK)]
        assert writer.offset == 0  # not contiguous from 0: nothing hashed yet
        writer.write_at(0, blob.data[:CHUNK])
        assert writer.offset == 2 * CHUNK  # the prefix grew over both ranges
        writer.close()
    with store.ingests.open(digest, blob.size) as ing:  # resumed: the prefix is re-hashed, the rest listed
        assert ing.offset == 2 * CHUNK
        ing.write(blob.data[2 * CHUNK :])  # a single stream from the prefix
        assert ing.commit().size == blob.size


class _Held(httpx.SyncByteStream):
    """A range's bytes, held back until ``release`` is set (or 10 s pass); ``streaming`` is set first."""

    def __init__(self, data: bytes, release: threading.Event) -> None:
        self.data, self.release, self.streaming = data, release, threading.Event()

    def __iter__(self):
        self.streaming.set()
        self.release.wait(10)
        yield self.data


def test_a_connection_given_back_by_one_blob_is_taken_at_once_by_another_blobs_queued_ranges(store):
    """Blob A holds two of three connections; blob B, split on the third, has ranges queued and its
    first range held until its second one is asked for. A's connections coming back must start B's
    second range then, not when B's first range ends (it would wait 10 s for that, and fail)."""
    from cas.registry.ranged import fetch

    chunk = 64 << 10
    budget = ConnectionBudget(3)
    policy = RangePolicy(budget, chunk=chunk, min_size=2 * chunk, fast_enough=None)
    blobs = {name: os.urandom(count * chunk) for name, count in (("a", 2), ("b", 4))}
    release_a, b_second_asked = threading.Event(), threading.Event()
    streams: dict[tuple[str, int], _Held] = {}

    def opener(name: str):
        def open_range(start: int, end: int) -> httpx.Response:
            data = blobs[name]
            if name == "b" and start > 0:
                b_second_asked.set()  # B's later ranges flow at once, and release its first one
            release = release_a if name == "a" else b_second_asked
            streams[(name, start)] = stream = _Held(data[start:end], release)
            headers = {"Content-Range": f"bytes {start}-{end - 1}/{len(data)}"}
            return httpx.Response(206, headers=headers, stream=stream)

        return open_range

    results: dict[str, bool] = {}

    def download(name: str) -> None:
        data = blobs[name]
        digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
        with budget.slot(), store.ingests.open(digest, len(data)) as ing:
            results[name] = fetch(opener(name), ing, policy, lambda n: None, retries=0, backoff=0)
            ing.commit()

    threads = {name: threading.Thread(target=download, args=(name,)) for name in blobs}
    threads["a"].start()
    wait_until(lambda: ("a", chunk) in streams and streams[("a", chunk)].streaming.is_set(), timeout=10,
               what="blob A streaming on both its connections")  # fmt: skip
    threads["b"].start()
    wait_until(lambda: ("b", 0) in streams and streams[("b", 0)].streaming.is_set(), timeout=10,
               what="blob B's first range held")  # fmt: skip
    assert not b_second_asked.is_set()  # no connection was free for it
    release_a.set()
    assert b_second_asked.wait(5), "B's queued range waited for B's own first range to end"
    for thread in threads.values():
        thread.join(30)
    assert results == {"a": True, "b": True}
    assert all(store.blobs.read(Digest.parse("sha256:" + hashlib.sha256(d).hexdigest())) == d for d in blobs.values())
