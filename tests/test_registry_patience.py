"""How long cas waits and what it says meanwhile.

- ``--timeout`` bounds the whole wait without progress, retries included: against a listener
  that accepts and never answers, one that accepts and hangs up, and one that refuses;
- each retry is said on stderr as it happens, unless -q; a longer --timeout is suggested only
  when the clock, not the count of retries, ended them;
- a split download with one range trickling is stalled one window after the rest arrived;
- ``-v`` logs a response cut short as cut, with the retry; the pull summary counts retries and
  discarded bytes apart from the bytes the store needed;
- a 206 whose Content-Range has the right end and size but the wrong start ends the split.

The rules themselves (``Patience``, the sliding stall window) are checked on a fake clock.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from support import auth, images
from support.registry import Registry
from support.tools import free_port

from cas.digest import Digest
from cas.errors import Stalled
from cas.registry import RegistryClient
from cas.registry.ranged import ConnectionBudget, RangePolicy, Unusual, check_answer
from cas.registry.retry import Patience
from cas.registry.stall import StallWatch
from cas.sizes import format_size

NO_MIRRORS = {"CAS_HOSTS_DIR": "", "CAS_REGISTRIES_CONF": "", "CAS_DOCKER_DAEMON_JSON": ""}
SLACK = 2.0  # on top of the bound each test checks: a loaded machine, an interpreter starting
RETRY_LINE = re.compile(r"^retrying in \d+\.\d s: ", re.M)
REPO = "cas-test/patience"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Listener:
    """A TCP listener on 127.0.0.1 that accepts every connection and then says nothing
    (``hang_up=False``) or closes it at once (``hang_up=True``)."""

    def __init__(self, *, hang_up: bool) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.hang_up = hang_up
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.hang_up:
                conn.close()
            else:
                self._held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture()
def silent():
    listener = Listener(hang_up=False)
    yield listener
    listener.close()


@pytest.fixture()
def hanging_up():
    listener = Listener(hang_up=True)
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def layered(registry):
    """One 3 MB layer, so a stream can be cut and resumed."""
    image = images.Image([images.random_layer(3_000_000, seed=2020)])
    images.push(registry, REPO, "1", image)
    return image


def timed_pull(cas, *args: str):
    started = time.monotonic()
    done = cas("pull", *args, env=NO_MIRRORS, check=False, timeout=120)
    return done, time.monotonic() - started


# --- the rules, on a fake clock ---------------------------------------------------------------


def test_patience_counts_failures_in_a_row_and_progress_starts_the_count_and_the_clock_again():
    clock = Clock()
    patience = Patience(2, 0.001, 10.0, clock=clock)
    assert patience.failed(0) is not None and patience.failed(0) is not None
    assert patience.failed(0) is None and not patience.out_of_time  # the count ended it
    clock.now += 9.0
    assert patience.remaining() == pytest.approx(1.0)
    assert patience.failed(100) is not None  # progress: counted from zero again, a new 10 s
    assert patience.remaining() == pytest.approx(10.0)


def test_patience_gives_up_when_the_wait_would_end_past_timeout_whatever_the_count():
    clock = Clock()
    patience = Patience(5, 0.5, 2.0, clock=clock)
    clock.now += 1.9
    assert patience.failed(0, retry_after=1.0) is None  # 1 s more would end past the 2 s
    assert patience.out_of_time  # the clock ended it: a longer --timeout could help
    assert Patience(5, 0.5, 2.0, clock=clock).failed(0, limit=0) is None


def test_the_stall_window_slides_so_a_trickle_after_a_burst_is_caught_one_window_later():
    """A split download: the fast ranges brought 1 MB in the first second, one range trickles on."""
    clock = Clock()
    watch = StallWatch(1024, 5.0, clock)
    watch.update(1_000_000)
    with pytest.raises(StallWatch.Stalled):
        for _ in range(200):  # 500 bytes/s in 50 ms steps, for up to 10 s
            clock.now += 0.05
            watch.update(25)
    assert clock.now - 1000.0 <= 5.0 + 0.2  # fixed windows saw the burst in the first and waited a second
    assert watch.describe().startswith("less than 1024 bytes/s for 5 s (")


def test_a_206_with_only_its_start_wrong_is_unusual():
    """Right end, right size, wrong start: a check of end and size alone would let it through."""
    response = httpx.Response(206, headers={"Content-Range": "bytes 1-99/1000"})
    with pytest.raises(Unusual):
        check_answer(response, 0, 100, 1000)


# --- item 1: --timeout bounds the whole wait --------------------------------------------------


def test_a_listener_that_never_answers_fails_within_timeout(cas, silent):
    done, took = timed_pull(cas, "--timeout", "3", f"{silent.host}/x:y")
    assert done.returncode == 1
    assert took < 3 + 1 + SLACK, f"{took:.1f} s for --timeout 3"
    assert done.stderr.startswith(f"error: cannot reach registry {silent.host}: timed out")
    assert "--timeout" in done.stderr.splitlines()[-1]  # waiting longer is what could help here
    assert "Traceback" not in done.stderr


def test_a_token_server_that_never_answers_is_bounded_by_timeout_too(cas, silent):
    """The registry's 401 sends the client to a token realm that accepts and says nothing."""

    class Challenge(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response_only(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://{silent.host}/token",service="x"')
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Challenge)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        done, took = timed_pull(cas, "--timeout", "2", f"127.0.0.1:{server.server_address[1]}/x:y")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1
    assert took < 2 + 1 + SLACK, f"{took:.1f} s for --timeout 2"
    assert f"cannot reach {silent.host} (for registry 127.0.0.1:" in done.stderr and "timed out" in done.stderr


def test_a_listener_that_hangs_up_is_retried_aloud_within_timeout(cas, hanging_up):
    done, took = timed_pull(cas, "--timeout", "2", f"{hanging_up.host}/x:y")
    assert done.returncode == 1
    assert took < 2 + 1 + SLACK, f"{took:.1f} s for --timeout 2"
    said = RETRY_LINE.findall(done.stderr)  # the first retry is at once, unsaid (an idle connection the server closed?)
    assert len(said) >= 1 and hanging_up.accepted == len(said) + 2
    assert f"cannot reach registry {hanging_up.host}: connection dropped" in done.stderr
    assert "--timeout" in done.stderr.splitlines()[-1]  # the clock, not the count, ended the retries


def test_a_refused_connection_fails_at_once_and_suggests_no_longer_timeout(cas):
    """Refused twice more within about 0.3 s (a registry restarting): too brief to say, -v logs them."""
    host = f"127.0.0.1:{free_port()}"
    done, took = timed_pull(cas, "--timeout", "5", f"{host}/x:y")
    assert done.returncode == 1
    assert took < 1 + SLACK  # waiting longer would not help
    assert done.stderr.splitlines() == [
        f"error: cannot reach registry {host}: connection refused",
        "hint: check that the registry is running at that host and port",
    ]
    verbose = cas("-v", "pull", "--timeout", "5", f"{host}/x:y", env=NO_MIRRORS, check=False)
    logged = re.findall(
        rf"cas\.registry: retrying in 0\.[12] s: cannot reach registry {re.escape(host)}: ", verbose.stderr
    )
    assert verbose.returncode == 1 and len(logged) == 2


def test_retries_of_a_busy_registry_are_said_as_they_happen_unless_quiet_and_counted(cas, proxy, layered):
    proxy.fail_next(503, count=2, pattern="/manifests/")
    done = cas("pull", f"{proxy.host}/{REPO}:1", env=NO_MIRRORS)
    lines = done.stderr.splitlines()
    assert len(RETRY_LINE.findall(done.stderr)) == 2 and RETRY_LINE.match(lines[0])
    assert lines[0].endswith(
        f": registry {proxy.host} answered 503 for {proxy.host}/{REPO}:1: injected 503 by the fault proxy"
    )
    assert lines[-1].endswith("; 2 retries, 0 B discarded")
    proxy.reset()
    proxy.fail_next(503, count=2, pattern="/manifests/")
    quiet = cas("pull", "-q", f"{proxy.host}/{REPO}:1", env=NO_MIRRORS)
    assert quiet.stderr == "" and proxy.count("manifest") == 3
    proxy.reset()
    proxy.fail_next(503, count=2, pattern="/manifests/")
    body = json.loads(cas("pull", "--json", f"{proxy.host}/{REPO}:1", env=NO_MIRRORS).stdout)["images"][0]
    assert (body["retry_count"], body["discarded_bytes"], body["downloaded_bytes"]) == (2, 0, 0)


# --- item 2: a split download's stall -------------------------------------------------------------


def test_one_trickling_range_of_a_split_download_is_stalled_within_timeout(store, proxy, registry):
    data = os.urandom(6 * (64 << 10))
    blob = images.Blob(data, "application/octet-stream")
    with auth.client(registry, push=True) as c:
        images.push_blob(c, REPO, blob)
    digest = Digest.parse(blob.digest)
    proxy.throttle_range(500, after=1)  # the second range trickles at 500 B/s; the others are at full speed
    split_at_once = RangePolicy(ConnectionBudget(4), chunk=64 << 10, min_size=128 << 10, fast_enough=None)
    timeout = 5.0
    with RegistryClient(proxy.host, ranges=split_at_once, timeout=timeout) as client:
        with store.ingests.open(digest, blob.size) as ing, pytest.raises(Stalled) as info:
            started = time.monotonic()
            try:
                client.download_blob(REPO, digest, ing)
            finally:
                took = time.monotonic() - started
    assert took < timeout + 1 + SLACK, f"{took:.1f} s for a timeout of {timeout:g} s"
    assert "less than 1024 bytes/s for 5 s" in info.value.message
    assert [r.fault for r in proxy.requests].count("slow-range") == 1


# --- item 6: -v and the summary ---------------------------------------------------------------------


def test_verbose_logs_a_cut_response_as_cut_and_its_retry(cas, proxy, layered):
    layer = layered.layers[0]
    proxy.drop_after(1_000_000, times=2)  # -j 1: the config comes first and is too small to be cut
    done = cas("-v", "pull", "-j", "1", f"{proxy.host}/{REPO}:1", env=NO_MIRRORS)
    first = next(
        line for line in done.stderr.splitlines() if f"GET {proxy.url}/v2/{REPO}/blobs/{layer.digest} " in line
    )
    assert re.search(r" 200, 1000000 bytes in \d+\.\d+ s, then cut: ", first), first
    assert re.search(
        rf"cas\.registry: retrying in \d+\.\d s: connection dropped while downloading blob {layer.digest} "
        rf"of {proxy.host}/{REPO} \(1000000 bytes held\)$",
        done.stderr,
        re.M,
    )
    assert not RETRY_LINE.search(done.stderr)  # under -v the log says it, once


def test_the_summary_counts_retries_and_discarded_bytes_apart(cas, proxy, layered, tmp_path):
    """The layer's stream is cut after 1 MB; the resume's Range is ignored, so that 1 MB comes again."""
    ref, layer = f"{proxy.host}/{REPO}:1", layered.layers[0]
    proxy.drop_after(1_000_000, times=2)  # -j 1: the config comes first and is too small to be cut
    proxy.strip_range(times=1)
    done = cas("pull", "-j", "1", ref, env=NO_MIRRORS)
    summary = done.stderr.splitlines()[-1]
    assert f"downloaded 3 blob(s), {format_size(layered.size)}; " in summary  # manifest, config, layer
    assert summary.endswith("; 1 retry, 976.6 KiB discarded"), summary
    layer_gets = [r for r in proxy.requests if r.method == "GET" and r.path.endswith(layer.digest)]
    assert [(r.fault, r.status) for r in layer_gets] == [("drop", 200), ("strip-range", 200)]

    proxy.reset()
    proxy.drop_after(1_000_000, times=2)
    proxy.strip_range(times=1)
    elsewhere = {**NO_MIRRORS, "CAS_HOME": str(tmp_path / "another-home")}
    body = json.loads(cas("pull", "-j", "1", "--json", ref, env=elsewhere).stdout)["images"][0]
    assert body["downloaded_bytes"] == layered.size  # the blobs and the manifest; the 1 MB thrown away is not in it
    assert (body["retry_count"], body["discarded_bytes"]) == (1, 1_000_000)  # counted apart, as the summary does


# --- item 8: a Content-Range with only its start wrong ------------------------------------------


def test_a_range_answered_from_a_later_start_ends_the_split_and_the_blob_verifies(store, proxy, registry):
    data = os.urandom(6 * (64 << 10) + 7)
    blob = images.Blob(data, "application/octet-stream")
    with auth.client(registry, push=True) as c:
        images.push_blob(c, REPO, blob)
    digest = Digest.parse(blob.digest)
    proxy.later_range_start(after=2, by=4096)  # the third range: its body and Content-Range start 4 KiB late
    split_at_once = RangePolicy(ConnectionBudget(2), chunk=64 << 10, min_size=128 << 10, fast_enough=None)
    with RegistryClient(proxy.host, ranges=split_at_once, retries=3, backoff=0.01) as client:
        with store.ingests.open(digest, blob.size) as ing:
            client.download_blob(REPO, digest, ing)
            ing.commit()
    assert store.blobs.read(digest) == data
    gets = [r for r in proxy.requests if r.kind == "blob" and r.method == "GET"]
    (late,) = [r for r in gets if r.fault == "late-start"]
    assert late.status == 206
    assert gets[-1].headers.get("range", "bytes=0-").endswith("-")  # then one open-ended stream


def test_wrong_bytes_from_a_mirror_are_counted_as_discarded_not_as_downloaded(cas, tmp_path, registry, proxy):
    """The issue's case: a mirror served a damaged layer, the upstream the good one."""
    upstream = Registry(tmp_path / "upstream").start()
    try:
        image = images.Image([images.random_layer(300_000, seed=2021)])
        images.push(upstream, REPO, "m", image)
        images.push(registry, REPO, "m", image)  # the mirror (the fault proxy's registry) holds it...
        registry.corrupt_blob(image.layers[0].digest)  # ...damaged
        hosts = tmp_path / "hosts.d" / upstream.host
        hosts.mkdir(parents=True)
        (hosts / "hosts.toml").write_text(
            f'server = "{upstream.url}"\n\n[host."{proxy.url}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        env = {**NO_MIRRORS, "CAS_HOSTS_DIR": str(tmp_path / "hosts.d")}
        done = cas("pull", f"{upstream.host}/{REPO}:m", env=env)
    finally:
        upstream.stop()
    summary = done.stderr.splitlines()[-3]  # then the endpoints and the fallback
    assert f"downloaded 3 blob(s), {format_size(image.size)}; " in summary, done.stderr
    assert summary.endswith(f"; 0 retries, {format_size(image.layers[0].size)} discarded"), summary
