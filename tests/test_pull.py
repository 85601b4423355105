"""`cas pull` against the real distribution registry, measured on the server side."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from support.tools import cas_in_background, store_lock_held, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent


def _blob_sizes(image, digests) -> int:
    return sum(b.size for b in image.blobs if b.digest in digests)


def _store_is_sound(home: Path) -> list[str]:
    """Every file under blobs/ hashes to its own name."""
    checked = []
    for path in (home / "v1" / "blobs" / "sha256").glob("*"):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, f"{path} does not match its name"
        checked.append(path.name)
    return checked


def test_second_pull_downloads_nothing_and_costs_one_manifest_request(cas, registry, test_images):
    ref = test_images.ref(registry, "base")
    first = registry.mark()
    out = json.loads(cas("pull", "--json", ref).stdout)["images"][0]
    assert registry.blob_bytes_served(first) == test_images.base.size - test_images.base.manifest_blob.size
    assert out["downloaded_bytes"] == test_images.base.size  # the blobs and the manifest, which was new too

    second = registry.mark()
    proc = cas("pull", ref)
    assert registry.blob_bytes_served(second) == 0
    assert [r.method for r in registry.requests(second)] == ["GET"]
    assert len(registry.manifest_requests(second)) == 1
    assert "downloaded 0 blob(s)" in proc.stderr and f"reused {len(test_images.base.digests)}," in proc.stderr


def test_pulling_app_after_base_downloads_only_apps_own_blobs(cas, registry, test_images):
    cas("pull", test_images.ref(registry, "base"))
    mark = registry.mark()
    out = json.loads(cas("pull", "--json", test_images.ref(registry, "app")).stdout)["images"][0]
    app, base = test_images.app, test_images.base
    own = set(app.digests) - set(base.digests) - {app.digest}
    fetched = {r.reference for r in registry.blob_gets(mark)}
    assert fetched == own
    assert registry.blob_bytes_served(mark) == _blob_sizes(app, own)
    shared = set(app.digests) & set(base.digests)
    assert out["reused_blobs"] == len(shared) and out["downloaded_blobs"] == len(own) + 1  # app's manifest is new


def test_blobs_are_shared_across_registries(cas, registry, basic_registry, test_images):
    cas("pull", test_images.ref(registry, "dockermedia"))
    ref = test_images.ref(basic_registry, "dockermedia")
    mark = basic_registry.mark()
    cas("pull", "-u", basic_registry.username, "--password-stdin", ref, input=basic_registry.password + "\n")
    assert basic_registry.blob_bytes_served(mark) == 0
    served = [r for r in basic_registry.manifest_requests(mark, method="GET") if r.status == 200]
    assert len(served) == 1


def test_warm_pull_by_digest_makes_no_request_at_all(cas, registry, test_images):
    pushed = test_images.push(registry)["multi"]
    by_digest = f"{registry.host}/multi@{pushed.digest}"
    cas("pull", by_digest)
    mark = registry.mark()
    proc = cas("pull", "--json", by_digest)
    assert registry.requests(mark) == []
    assert json.loads(proc.stdout)["images"][0]["manifest_requests"] == 0


def test_multi_platform_index_resolves_to_the_asked_platform(cas, registry, test_images):
    for name in ("multi", "multidocker"):
        ref = test_images.ref(registry, name)
        out = json.loads(cas("pull", "--json", "--platform", "linux/arm64", ref).stdout)["images"][0]
        child = test_images[name].for_platform("linux/arm64/v8")
        assert out["platform"] == "linux/arm64/v8"
        assert out["manifest"] == child.digest
        assert out["digest"] == test_images[name].digest
        inspected = json.loads(cas("inspect", "--json", ref).stdout)
        assert inspected["config"]["architecture"] == "arm64"
    host = json.loads(cas("pull", "--json", test_images.ref(registry, "multi")).stdout)["images"][0]
    assert host["platform"] == "linux/amd64"


def test_media_types_and_uncompressed_layers(cas, registry, test_images):
    for name in ("dockermedia", "ocidata"):
        out = json.loads(cas("pull", "--json", test_images.ref(registry, name)).stdout)["images"][0]
        assert out["manifest"] == test_images[name].digest
        info = json.loads(cas("inspect", "--json", test_images.ref(registry, name)).stdout)
        assert info["media_type"] == test_images[name].media_type
        assert [layer["digest"] for layer in info["layers"]] == [b.digest for b in test_images[name].blobs[1:]]
    _store_is_sound(Path(os.environ["CAS_HOME"]))


def test_images_lists_what_was_pulled(cas, registry, test_images):
    cas("pull", test_images.ref(registry, "base"), test_images.ref(registry, "ocidata"))
    rows = json.loads(cas("images", "--json").stdout)["images"]
    assert [r["ref"] for r in rows] == [test_images.ref(registry, "base"), test_images.ref(registry, "ocidata")]
    assert rows[0]["manifest"] == test_images.base.digest and rows[0]["platform"] == "linux/amd64"
    assert rows[0]["size"] == test_images.base.size
    table = cas("images").stdout
    assert "REFERENCE" in table and test_images.ref(registry, "ocidata") in table


def test_registry_serving_wrong_bytes_is_an_error_and_nothing_is_committed(cas, cas_home, registry, test_images):
    layer = test_images.app.blobs[-1]
    registry.corrupt_blob(layer.digest)
    proc = cas("pull", test_images.ref(registry, "app"), check=False)
    assert proc.returncode == 1
    assert "digest mismatch" in proc.stderr and layer.digest in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 2
    assert layer.digest.split(":")[1] not in _store_is_sound(cas_home)
    assert json.loads(cas("images", "--json").stdout)["images"] == []


def test_sigkill_mid_blob_then_the_next_pull_resumes_and_completes(cas, cas_home, proxy, test_images, registry):
    test_images.push(registry)
    ref = f"{proxy.host}/base:latest"
    proxy.throttle(200_000)
    victim = cas_in_background(cas_home, "pull", "--jobs", "1", ref)
    ingest = cas_home / "v1" / "ingest"

    def partial_bytes() -> int:
        return sum(p.stat().st_size for p in ingest.glob("*/data")) if ingest.exists() else 0

    wait_until(lambda: partial_bytes() > 100_000, timeout=30, what="a partial download")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    kept = partial_bytes()
    assert kept > 0
    committed = sum(
        b.size for b in test_images.base.blobs if (cas_home / "v1" / "blobs" / "sha256" / b.digest[7:]).exists()
    )
    _store_is_sound(cas_home)
    assert json.loads(cas("images", "--json").stdout)["images"] == []

    proxy.throttle(None)
    mark = len(proxy.requests)
    resumed = json.loads(cas("pull", "--json", ref).stdout)["images"][0]
    blob_bytes = test_images.base.size - test_images.base.manifest_blob.size
    assert resumed["downloaded_bytes"] == blob_bytes - kept - committed  # nothing the victim got is fetched again
    ranged = [r for r in proxy.requests[mark:] if "range" in r.headers]
    assert ranged and ranged[0].status == 206, "the partial blob was not resumed with a Range request"
    assert len(_store_is_sound(cas_home)) == len(test_images.base.digests)
    assert list(ingest.iterdir()) == []


def test_two_processes_pulling_at_once_download_each_blob_once(cas_home, proxy, registry, test_images):
    test_images.push(registry)
    proxy.throttle(2_000_000)
    ref = f"{proxy.host}/app:latest"
    env = {**os.environ, "CAS_HOME": str(cas_home)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cli", "pull", "--json", ref],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    gets = [r.path.rsplit("/", 1)[1] for r in proxy.requests if r.kind == "blob" and r.method == "GET"]
    assert sorted(gets) == sorted(set(gets)), "a blob was downloaded twice"
    assert set(gets) == set(test_images.app.digests) - {test_images.app.digest}
    outs = [json.loads(out)["images"][0] for out, _ in results]
    assert sum(o["downloaded_blobs"] for o in outs) == len(gets) + 1  # one of them stored the manifest


def test_retries_429_and_5xx_then_succeeds(cas, proxy, registry, test_images):
    test_images.push(registry)
    proxy.fail_next(503, count=2, pattern=r"/manifests/")
    proxy.fail_next(429, count=1, retry_after=1)
    started = time.monotonic()
    cas("pull", f"{proxy.host}/ocidata:latest")
    assert time.monotonic() - started >= 1.0, "Retry-After was not honoured"
    assert proxy.count("manifest") == 3
    faults = [r.status for r in proxy.requests if r.fault == "status"]
    assert sorted(faults) == [429, 503, 503]


def test_dropped_connection_resumes_with_range(cas, cas_home, proxy, registry, test_images):
    test_images.push(registry)
    proxy.drop_after(400_000, times=None)  # every blob response is cut after 400 kB: the ~1 MB layer needs 3 resumes
    out = json.loads(cas("pull", "--json", f"{proxy.host}/base:latest").stdout)["images"][0]
    assert sum(r.fault == "drop" for r in proxy.requests) == 2
    blob_bytes = test_images.base.size - test_images.base.manifest_blob.size
    assert blob_bytes == proxy.bytes_sent("blob")  # each byte fetched once
    assert out["downloaded_bytes"] == blob_bytes + test_images.base.manifest_blob.size
    assert any("range" in r.headers and r.status == 206 for r in proxy.requests)
    assert len(_store_is_sound(cas_home)) == len(test_images.base.digests)


def test_token_auth_pull_is_anonymous_and_reuses_the_token(cas, token_registry, token_server, test_images):
    ref = test_images.ref(token_registry, "base")
    cas("pull", ref)
    first = token_server.token_requests
    assert first >= 1
    mark = token_registry.mark()
    cas("pull", ref)
    assert token_server.token_requests == first, "the cached token was not reused"
    assert len(token_registry.requests(mark)) == 1


def test_basic_auth_from_docker_config(cas, cas_home, basic_registry, test_images):
    ref = test_images.ref(basic_registry, "ocidata")
    denied = cas("pull", ref, check=False)
    assert denied.returncode == 1 and "Traceback" not in denied.stderr
    assert basic_registry.host in denied.stderr
    import base64

    token = base64.b64encode(f"{basic_registry.username}:{basic_registry.password}".encode()).decode()
    config = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    config.write_text(json.dumps({"auths": {basic_registry.host: {"auth": token}}}))
    assert cas("pull", ref).returncode == 0
    wrong = cas("pull", "-u", basic_registry.username, "--password-stdin", ref, input="wrong\n", check=False)
    assert wrong.returncode == 1 and "authentication failed" in wrong.stderr


def test_user_mistakes_are_one_line_errors_before_any_network(cas, registry):
    mark = registry.mark()
    for args, fragment, code in [
        (["pull", f"{registry.host}/Upper:1"], "lowercase", 2),
        (["pull", f"{registry.host}/x@sha256:abc"], "64 lowercase hex", 2),
        (["pull", "--platform", "linux", f"{registry.host}/x"], "invalid platform", 2),
        (["inspect", f"{registry.host}/never-pulled"], "not in the cache", 1),
    ]:
        proc = cas(*args, check=False)
        assert proc.returncode == code, (args, proc.stderr)
        assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert registry.requests(mark) == []


def test_registry_errors_are_one_line(cas, registry):
    missing = cas("pull", f"{registry.host}/no-such-repo:1", check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr
    closed = cas("pull", "127.0.0.1:9/x:1", check=False)
    assert closed.returncode == 1 and "cannot reach registry 127.0.0.1:9" in closed.stderr
    for proc in (missing, closed):
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith("error: ")


def test_a_reference_that_fails_does_not_stop_the_others_and_each_failure_is_said(cas, registry, test_images):
    """As podman pull does: every reference is tried; each failure is its error and hint, then one last line."""
    base, missing, app = (
        test_images.ref(registry, "base"),
        f"{registry.host}/no-such-repo:1",
        test_images.ref(registry, "app"),
    )
    closed = "127.0.0.1:9/x:1"
    mark = registry.mark()
    proc = cas("pull", base, missing, closed, app, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(("error: ", "hint: "))]
    assert [line.split(":", 1)[0] for line in errors] == ["error", "hint"] * 3
    assert "not found" in errors[0] and "cannot reach registry 127.0.0.1:9" in errors[2]
    assert errors[4] == f"error: 2 of 4 references failed to pull: {missing}, {closed}"
    assert [r["ref"] for r in json.loads(cas("images", "--json").stdout)["images"]] == [app, base]
    assert {r.repository for r in registry.blob_gets(mark)} == {"base", "app"}  # app was pulled after the failures

    body = json.loads(cas("pull", "--json", missing, app, check=False).stdout)
    assert [i["ref"] for i in body["images"]] == [app]
    assert [(f["ref"], f["error"].startswith(f"image {missing} not found")) for f in body["failed"]] == [
        (missing, True)
    ]


def test_a_store_wide_failure_stops_a_pull_of_several_references_at_once(cas, cas_home, registry, test_images):
    """The store's lock timing out would time out for every reference: one error, not one per reference."""
    refs = [test_images.ref(registry, name) for name in ("base", "app")]
    with store_lock_held(cas_home, shared=False):
        proc = cas("pull", "--lock-timeout", "0.2", *refs, check=False)
    assert proc.returncode == 1 and "timed out" in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error: ")]) == 1


def test_store_is_an_oci_layout_naming_each_ref(cas, cas_home, registry, test_images):
    ref = test_images.ref(registry, "base")
    cas("pull", ref)
    layout = cas_home / "v1"
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    [entry] = index["manifests"]
    assert entry["digest"] == test_images.base.digest
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == ref


@pytest.mark.parametrize("size", ["700k", "120k"])  # full while writing a blob / while writing the index
def test_full_disk_is_a_one_line_error_and_the_store_stays_sound(cas, tmp_path, registry, test_images, size):
    small = tmp_path / "small-disk"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(small)], check=True)
    try:
        proc = cas("pull", test_images.ref(registry, "base"), env={"CAS_HOME": str(small)}, check=False)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.startswith("error: no space left on device") and "Traceback" not in proc.stderr
        assert "cas prune" in proc.stderr
        _store_is_sound(small)
    finally:
        subprocess.run(["umount", str(small)], check=True)


@pytest.mark.parametrize("name", ["dockermedia", "multidocker"])
def test_docker_media_images_are_readable_from_the_store_as_oci(
    name, cas, cas_home, registry, test_images, skopeo, tmp_path
):
    """skopeo's oci: transport skips Docker-typed index entries, so the store lists an OCI view."""
    ref = test_images.ref(registry, name)
    cas("pull", ref)
    image = test_images[name].for_platform("linux/amd64") if name == "multidocker" else test_images[name]
    [entry] = json.loads((cas_home / "v1" / "index.json").read_text())["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    view = json.loads((cas_home / "v1" / "blobs" / "sha256" / entry["digest"][7:]).read_bytes())
    assert view["annotations"]["dev.cas.converted-from"] == image.digest
    assert [view["config"]["digest"]] + [layer["digest"] for layer in view["layers"]] == image.digests[1:]

    out = tmp_path / "out"
    skopeo.copy(f"oci:{cas_home / 'v1'}:{ref}", f"oci:{out}:copy", extra=("--preserve-digests",))
    for digest in image.digests[1:]:
        assert (out / "blobs" / "sha256" / digest[7:]).read_bytes() == (
            cas_home / "v1" / "blobs" / "sha256" / digest[7:]
        ).read_bytes()
    export = tmp_path / "x.tar"
    cas("export", ref, "-o", export)
    with tarfile.open(export) as tar:  # the export still carries the registry's own manifest
        exported = json.load(tar.extractfile("index.json"))["manifests"]
        assert [m["digest"] for m in exported] == [image.digest]
        assert f"blobs/sha256/{entry['digest'][7:]}" not in tar.getnames()


def test_a_stale_index_json_is_mended_by_the_next_pull(cas, cas_home, registry, test_images):
    """A pull killed between recording its ref and rewriting index.json must not leave it stale for good."""
    ref = test_images.ref(registry, "base")
    cas("pull", ref)
    layout = cas_home / "v1" / "index.json"
    layout.chmod(0o644)
    layout.write_text('{"schemaVersion": 2, "manifests": []}')
    cas("pull", ref)
    [entry] = json.loads(layout.read_text())["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == ref
