"""What an operator sees and sets: the access log, /metrics, TLS, --htpasswd, and crowds of idle connections."""

from __future__ import annotations

import base64
import json
import re
import selectors
import socket
import ssl
import subprocess
import time

import httpx
import pytest
from support.pki import make_pki
from support.serving import CasServer
from support.tools import wait_until

from cas.manifest import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

ALL = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))


@pytest.fixture
def pulled(cas, registry, test_images):
    cas("pull", "-q", test_images.ref(registry, "app"))


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} not in:\n{text}"
    return float(found.group(1))


def test_json_access_log_and_metrics_and_stats(cas, pulled, cas_home, registry, test_images):
    layer = test_images.app.blobs[-1]
    with CasServer(cas_home, "--offline", "--log-format", "json", "--upstream", f"lab={registry.host}") as server:
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
            assert http.get("/v2/lab/app/manifests/latest", headers={"Accept": ALL}).status_code == 200
            assert http.get(f"/v2/lab/app/blobs/{layer.digest}").status_code == 200
            assert http.get("/v2/lab/app/manifests/nope", params={"ns": registry.host}).status_code == 404
            text = http.get("/metrics").text
    assert metric(text, 'cas_serve_requests_total{status="200"}') == 2
    assert metric(text, 'cas_serve_requests_total{status="404"}') == 1
    assert metric(text, "cas_serve_bytes_served_total") >= layer.size + len(test_images.app.manifest_blob.data)
    assert metric(text, 'cas_serve_cache_total{result="hit"}') == 2
    assert metric(text, "cas_serve_transfers_in_flight") == 0
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    blob_line = next(entry for entry in lines if entry["path"].endswith(layer.digest))
    assert blob_line["method"] == "GET" and blob_line["status"] == 200 and blob_line["bytes"] == layer.size
    assert blob_line["cache"] == "hit" and blob_line["seconds"] >= 0
    assert any(entry["ns"] == registry.host and entry["status"] == 404 for entry in lines)
    served = json.loads(cas("stats", "--json").stdout)["served_bytes"]  # flushed when the server stopped
    assert served >= metric(text, "cas_serve_bytes_served_total")  # and the scrape's own body after it


def test_text_access_log_and_upstream_bytes_of_a_pull_through(cas_home, registry, test_images, skopeo, tmp_path):
    with CasServer(cas_home, "--upstream", f"lab={registry.host}") as server:
        skopeo.copy(f"docker://{server.host}/lab/base:latest", f"dir:{tmp_path / 'base'}")
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
            text = http.get("/metrics").text
    assert metric(text, f'cas_serve_upstream_bytes_total{{upstream="{registry.host}"}}') > 0
    assert metric(text, 'cas_serve_cache_total{result="miss"}') >= 1
    line = re.compile(r"^\S+Z GET /v2/lab/base/manifests/latest 200 \d+B [\d.]+s miss$", re.M)
    assert line.search(server.output()), server.output()


def test_tls_with_a_certificate_skopeo_verifies(pulled, cas_home, registry, skopeo, tmp_path):
    pki = make_pki(tmp_path / "pki")
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(pki.ca.read_bytes())
    args = ("--offline", "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key))
    with CasServer(cas_home, *args, "--upstream", f"lab={registry.host}") as server:
        assert f"on https://{server.host}" in server.output()
        skopeo.run(
            "copy", "--src-cert-dir", str(certs), f"docker://{server.host}/lab/app:latest", f"dir:{tmp_path / 'app'}"
        )
        with pytest.raises(httpx.ConnectError):  # no one else's CA trusts it
            httpx.get(f"https://{server.host}/v2/", trust_env=False)
        context = ssl.create_default_context(cafile=str(pki.ca))
        assert httpx.get(f"https://{server.host}/v2/", verify=context, trust_env=False).status_code == 200


def test_htpasswd_requires_credentials_and_never_logs_them(pulled, cas_home, registry, skopeo, tmp_path):
    password = "s3cret-pw"
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(
        subprocess.run(["htpasswd", "-Bbn", "ci", password], capture_output=True, text=True, check=True).stdout
    )
    with CasServer(cas_home, "--offline", "--htpasswd", str(htpasswd), "--upstream", f"lab={registry.host}") as server:
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
            anonymous = http.get("/v2/")
            assert anonymous.status_code == 401 and anonymous.json()["errors"][0]["code"] == "UNAUTHORIZED"
            assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="cas serve"'
            assert http.get("/v2/", auth=("ci", "wrong")).status_code == 401
            assert http.get("/v2/lab/app/manifests/latest", auth=("nobody", password)).status_code == 401
            assert http.get("/v2/", auth=("ci", password)).status_code == 200
        skopeo.copy(f"docker://{server.host}/lab/app:latest", f"dir:{tmp_path / 'app'}", src_creds=f"ci:{password}")
    log = server.output()
    assert "200" in log and password not in log and base64.b64encode(f"ci:{password}".encode()).decode() not in log


def test_a_bad_htpasswd_file_is_refused_at_start(cas, tmp_path):
    bad = tmp_path / "htpasswd"
    bad.write_text("ci:$apr1$abc$def\n")  # an MD5 entry: the distribution registry reads only bcrypt
    refused = cas("serve", "--htpasswd", str(bad), check=False, timeout=30)
    assert (
        refused.returncode == 2
        and "line 1: not user:bcrypt-hash" in refused.stderr
        and "htpasswd -Bbn" in refused.stderr
    )


def test_hundreds_of_idle_connections_do_not_stop_the_server(pulled, cas_home, registry):
    with CasServer(cas_home, "--offline", "--upstream", f"lab={registry.host}") as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(400)]
        try:
            half = idle[::2]
            for conn in half:  # half of them send half a request and stop
                conn.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
            with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
                assert http.get("/v2/lab/app/manifests/latest", headers={"Accept": ALL}).status_code == 200
            assert server.proc.poll() is None
        finally:
            for conn in idle:
                conn.close()


def test_a_tls_hello_on_the_plain_port_is_a_counted_400_without_a_traceback(cas_home):
    """skopeo and docker try HTTPS first: a request refused before routing is still logged and counted."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with CasServer(cas_home, "--offline") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            with pytest.raises(ssl.SSLError):
                context.wrap_socket(raw, server_hostname="127.0.0.1")
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
            wait_until(
                lambda: 'cas_serve_requests_total{status="400"} 1' in http.get("/metrics").text,
                timeout=10,
                what="the 400 counted",
            )
    assert "Traceback" not in server.output() and " 400 " in server.output()


def test_past_max_connections_a_new_connection_gets_a_503_and_the_server_lives_on(pulled, cas_home, registry):
    """A bounded pool: 300 idle sockets against a cap of 40 hold 40; the rest are answered 503 (or closed
    when they never ask), and the server answers again once there is room."""
    with CasServer(cas_home, "--offline", "--max-connections", "40", "--upstream", f"lab={registry.host}") as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(300)]
        try:
            for conn in idle[::2]:  # half of them send half a request and stop
                conn.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
            answers: dict[socket.socket, bytes] = {}
            with selectors.DefaultSelector() as watch:
                for conn in idle:
                    watch.register(conn, selectors.EVENT_READ)
                deadline = time.monotonic() + 30
                while len(answers) < 260 and time.monotonic() < deadline:  # the 503s, then the closes
                    for key, _ in watch.select(timeout=1):
                        answers[key.fileobj] = key.fileobj.recv(4096)
                        watch.unregister(key.fileobj)
            held = [conn for conn in idle if conn not in answers]
            refused = [a for a in answers.values() if a]
            assert len(held) == 40, (len(held), refused[:1])
            assert all(a.startswith(b"HTTP/1.1 503 ") and b'"code": "UNAVAILABLE"' in a for a in refused)
            assert (
                len(refused) >= 100 and b"Retry-After: 1" in refused[0] and b"maximum of 40 connections" in refused[0]
            )
            with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
                assert http.get("/v2/").status_code == 503  # full: still an answer, never a hang or a crash
                for conn in held:
                    conn.close()
                wait_until(lambda: http.get("/v2/").status_code == 200, timeout=10, what="room again")
                assert http.get("/v2/lab/app/manifests/latest", headers={"Accept": ALL}).status_code == 200
            assert server.proc.poll() is None
        finally:
            for conn in idle:
                conn.close()
    assert "Traceback" not in server.output()


def test_listen_and_upstreams_from_config_toml_and_a_flag_over_them(cas, cas_home, registry, test_images, tmp_path):
    config = tmp_path / "config.toml"
    server = CasServer(cas_home, env={"CAS_CONFIG": str(config)}, listen_flag=False)
    config.write_text(f'[serve]\nlisten = "{server.host}"\nupstreams = ["lab={registry.host}"]\n')
    with server:  # no --listen, no --upstream: both from the file
        got = httpx.get(f"{server.url}/v2/lab/app/manifests/latest", headers={"Accept": ALL}, timeout=60)
        assert got.status_code == 200 and got.headers["docker-content-digest"] == test_images.app.digest
    shown = {
        row["key"]: row
        for row in json.loads(cas("config", "--json", env={"CAS_CONFIG": str(config)}).stdout)["settings"]
    }
    assert shown["serve.listen"]["value"] == server.host and shown["serve.listen"]["source"] == f"{config}:2"
    assert shown["serve.upstreams"]["value"] == [f"lab={registry.host}"]
    flagged = CasServer(cas_home, "--upstream", f"other={registry.host}", env={"CAS_CONFIG": str(config)})
    with flagged:  # a flag replaces the file's list, as for every other setting
        assert httpx.get(f"{flagged.url}/v2/other/app/manifests/latest", headers={"Accept": ALL}).status_code == 200
        lab = httpx.get(f"{flagged.url}/v2/lab/app/manifests/latest", headers={"Accept": ALL}, timeout=60)
        assert lab.status_code != 200 and "docker.io" in lab.text  # no alias now: lab/app is Docker Hub's


def test_a_bad_listen_or_upstream_in_config_toml_is_blamed_on_its_line(cas, tmp_path):
    config = tmp_path / "config.toml"
    for body, line in (('[serve]\nlisten = "nowhere"\n', 2), ('jobs = 2\n[serve]\nupstreams = ["lab"]\n', 3)):
        config.write_text(body)
        refused = cas("serve", check=False, timeout=30, env={"CAS_CONFIG": str(config)})
        assert refused.returncode != 0 and f"{config}:{line}: serve." in refused.stderr, refused.stderr
        assert "--listen" not in refused.stderr.split("\n")[0] and "Traceback" not in refused.stderr
