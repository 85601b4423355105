"""`cas serve` over time: a prune while a client pulls, LRU use, SIGTERM mid-transfer, docker's
registry-mirrors, and the refusal to serve a non-loopback address unasked."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import socket
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from support import images
from support.consumers import Dockerd
from support.serving import CasServer
from support.tools import wait_until

from cas.manifest import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

ALL = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))


def client(server: CasServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, trust_env=False)


def test_a_prune_between_the_manifest_and_the_blobs_never_breaks_the_pull(cas, cas_home, registry, test_images):
    app, other = test_images.app, test_images.dockermedia
    for name in ("app", "dockermedia"):
        cas("pull", "-q", test_images.ref(registry, name))
    own_layer = other.blobs[-1]  # dockermedia's own layer: app does not share it
    with CasServer(cas_home, "--offline", "--upstream", f"lab={registry.host}") as server, client(server) as http:
        assert http.get("/v2/lab/app/manifests/latest", headers={"Accept": ALL}).status_code == 200
        cas("rm", test_images.ref(registry, "app"), test_images.ref(registry, "dockermedia"))
        pruned = json.loads(cas("prune", "--json").stdout)
        assert own_layer.digest in {b["digest"] for b in pruned["blobs"]}  # the prune did run, and swept
        assert pruned["leased_blobs"] >= len(app.blobs)
        for blob in app.blobs:  # the served manifest held every blob of app
            got = http.get(f"/v2/lab/app/blobs/{blob.digest}")
            assert got.status_code == 200 and got.content == blob.data
        assert http.get(f"/v2/lab/dockermedia/blobs/{own_layer.digest}").status_code == 404  # nothing held it
    assert cas("verify").returncode == 0


def test_serving_a_manifest_is_a_use_for_lru(cas, cas_home, registry, test_images):
    ref = test_images.ref(registry, "app")
    cas("pull", "-q", ref)
    before = json.loads(cas("inspect", "--json", ref).stdout)
    time.sleep(1.1)  # used times are shown to the second
    with CasServer(cas_home, "--upstream", f"lab={registry.host}") as server, client(server) as http:
        assert http.head("/v2/lab/app/manifests/latest", headers={"Accept": ALL}).status_code == 200
    after = json.loads(cas("inspect", "--json", ref).stdout)
    assert after["used_at"] > before["used_at"], (before, after)


def test_sigterm_mid_transfer_finishes_the_transfer_and_leaves_the_store_clean(cas, cas_home, registry):
    big = images.Image([images.random_layer(24 << 20, seed=1919)])
    images.push(registry, "servebig", "1", big)
    cas("pull", "-q", f"{registry.host}/servebig:1")
    layer = big.blobs[-1]
    server = CasServer(cas_home, "--upstream", f"lab={registry.host}").start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            conn.sendall(f"GET /v2/lab/servebig/blobs/{layer.digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            received = conn.recv(256 << 10)
            server.signal()
            wait_until(lambda: not _accepts(server.port), timeout=10, what="the server to stop accepting")
            assert server.proc.poll() is None  # still sending the transfer in flight
            while True:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert len(body) == layer.size and "sha256:" + hashlib.sha256(body).hexdigest() == layer.digest
        assert server.proc.wait(timeout=15) == 0
        assert "stopped" in server.output()
    finally:
        server.stop()
    assert cas("verify").returncode == 0
    assert cas("prune", "--json").returncode == 0  # no lease of the stopped server holds anything


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_docker_registry_mirror_pulls_a_docker_hub_name_from_the_store(cas, cas_home, registry, test_images, tmp_path):
    images.push(registry, "library/servedhub", "1", test_images.dockermedia)
    daemon = tmp_path / "daemon.json"
    daemon.write_text(json.dumps({"registry-mirrors": [registry.url]}))
    cas("pull", "-q", "servedhub:1", env={"CAS_DOCKER_DAEMON_JSON": str(daemon)})
    short = Path(tempfile.mkdtemp(prefix="cas-mirrored-"))  # containerd's socket path must stay under 108 bytes
    with CasServer(cas_home, "--offline") as server, contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, short, ignore_errors=True)
        with Dockerd(short, f"--registry-mirror={server.url}") as docker:
            registry.mark()
            docker.docker("pull", "servedhub:1")
            assert docker.run("servedhub:1", "/bin/cat", "/hello.txt").stdout == "hello from dockermedia\n"
            assert registry.requests() == []  # no route to Docker Hub here: the store served it all


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0"])
def test_a_non_loopback_listen_is_refused_without_a_decision(cas, listen):
    refused = cas("serve", "--listen", listen, check=False, timeout=30)
    assert refused.returncode == 2
    assert "not a loopback address" in refused.stderr and "--allow-anonymous" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_client_that_never_reads_is_dropped_after_client_timeout(cas, cas_home, registry):
    big = images.Image([images.random_layer(24 << 20, seed=2020)])
    images.push(registry, "serveslow", "1", big)
    cas("pull", "-q", f"{registry.host}/serveslow:1")
    layer = big.blobs[-1]
    with CasServer(cas_home, "--offline", "--client-timeout", "2", "--upstream", f"lab={registry.host}") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
            conn.sendall(f"GET /v2/lab/serveslow/blobs/{layer.digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            mine = conn.getsockname()[1]
            assert _server_side(server.port, mine)
            # the kernel times the server's side out without a word to the client: look at the server's side
            wait_until(
                lambda: not _server_side(server.port, mine), timeout=30, what="the server to drop the stuck client"
            )
        with client(server) as http:  # the server goes on serving
            assert http.head(f"/v2/lab/serveslow/blobs/{layer.digest}").status_code == 200


def _server_side(server_port: int, client_port: int) -> bool:
    """Whether the kernel still holds the server's end of the connection from ``client_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote = line.split()[1:3]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return True
    return False
