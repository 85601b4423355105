"""`cas push` against the real distribution registry, read back by skopeo and dockerd.

What reached the registry is counted on the server side (its access log) or, for what a
client sent, by the fault proxy in front of it. A destination seen through the proxy is
another registry for cas (another host:port), so the store knows no repository there to
mount from and every blob the repository lacks is uploaded. Consumers read the result
straight from the registry (the proxy keeps only the last of skopeo's several Accept headers).
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import unquote

import pytest


def _repo(name: str) -> str:
    """A repository no other test has pushed to (the registries live for the whole session)."""
    return f"pushed-{uuid.uuid4().hex[:8]}/{name}"


def _blob_uploads(requests) -> list:
    """Requests that carry blob bytes or open an upload (POST, PATCH, PUT on .../blobs/uploads/)."""
    return [r for r in requests if r.kind == "upload"]


def _push_json(cas, *args: str, **kwargs) -> dict:
    return json.loads(cas("push", "--json", *args, **kwargs).stdout)


def test_push_uploads_each_blob_once_and_a_second_push_uploads_nothing(cas, registry, proxy, skopeo, test_images):
    base = test_images.base
    cas("pull", test_images.ref(registry, "base"))
    repository = _repo("base")
    dest, direct = f"{proxy.host}/{repository}:1.0", f"{registry.host}/{repository}:1.0"

    mark = registry.mark()
    out = _push_json(cas, test_images.ref(registry, "base"), dest)
    assert out["digest"] == base.digest and out["manifest_count"] == 1
    assert out["uploaded_blobs"] == len(base.blobs) and out["uploaded_bytes"] == sum(b.size for b in base.blobs)
    assert out["mounted_blobs"] == 0 and out["skipped_blobs"] == 0
    logged = registry.requests(mark)
    puts = [r for r in _blob_uploads(logged) if r.method == "PUT" and r.status == 201]
    assert sorted(r.uri.split("digest=")[1].replace("%3A", ":") for r in puts) == sorted(b.digest for b in base.blobs)
    manifest_puts = [r for r in logged if r.kind == "manifest" and r.method == "PUT"]
    assert len(manifest_puts) == 1 and logged.index(manifest_puts[0]) == len(logged) - 1  # the manifest last

    inspected = skopeo.inspect(f"docker://{direct}")
    assert inspected["Digest"] == base.digest
    assert skopeo.run("inspect", "--tls-verify=false", "--raw", f"docker://{direct}").stdout.encode() == (
        base.manifest_blob.data
    )

    second = registry.mark()
    again = _push_json(cas, test_images.ref(registry, "base"), dest)
    assert again["skipped_blobs"] == len(base.blobs) and again["uploaded_bytes"] == 0
    assert _blob_uploads(registry.requests(second)) == []
    assert [(r.method, r.kind) for r in registry.requests(second)] == [("HEAD", "manifest")]  # the tag is ours
    assert proxy.count("upload") == len(base.blobs) * 2  # POST + PUT each, all in the first push


def test_push_within_one_registry_mounts_instead_of_uploading(cas, registry, skopeo, test_images):
    app = test_images.app
    cas("pull", test_images.ref(registry, "app"))
    dest = f"{registry.host}/{_repo('app')}:v1"
    mark = registry.mark()
    out = _push_json(cas, test_images.ref(registry, "app"), dest)
    assert out["mounted_blobs"] == len(app.blobs) and out["uploaded_blobs"] == 0
    uploads = _blob_uploads(registry.requests(mark))
    assert len(uploads) == len(app.blobs)
    assert all(r.method == "POST" and "mount=" in r.uri and "from=app" in r.uri and r.status == 201 for r in uploads)
    assert skopeo.inspect(f"docker://{dest}")["Digest"] == app.digest


def test_pushed_image_pulls_and_runs_in_docker(cas, registry, proxy, clean_dockerd, test_images):
    ref = test_images.ref(registry, "dockermedia")
    cas("pull", ref)
    repository = _repo("dockermedia")
    cas("push", ref, f"{proxy.host}/{repository}:run")
    dest = f"{registry.host}/{repository}:run"
    clean_dockerd.docker("pull", dest)
    digests = clean_dockerd.image_inspect(dest)["RepoDigests"]
    assert digests == [f"{dest.rsplit(':', 1)[0]}@{test_images.dockermedia.digest}"]
    assert clean_dockerd.run(dest).stdout == "hello from dockermedia\n"


def test_skopeo_copies_the_pushed_image_and_verifies_every_blob(cas, registry, proxy, skopeo, test_images, tmp_path):
    ref = test_images.ref(registry, "ocidata")  # uncompressed layers: `dir:` keeps them as they are
    cas("pull", ref)
    repository = _repo("ocidata")
    cas("push", ref, f"{proxy.host}/{repository}:copy")
    skopeo.copy(f"docker://{registry.host}/{repository}:copy", f"dir:{tmp_path / 'copy'}")
    assert (tmp_path / "copy" / "manifest.json").read_bytes() == test_images.ocidata.manifest_blob.data
    for blob in test_images.ocidata.blobs:
        assert (tmp_path / "copy" / blob.digest.split(":")[1]).read_bytes() == blob.data


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_push_to_registries_that_want_credentials(
    cas, registry, basic_registry, token_registry, skopeo, test_images, kind
):
    target = basic_registry if kind == "basic" else token_registry
    if kind == "token":
        target.token_server.reset()
    ref = test_images.ref(registry, "base")
    cas("pull", ref)
    repository = _repo("base")
    dest = f"{target.host}/{repository}:auth"
    login = ("-u", target.username, "--password-stdin")
    out = _push_json(cas, *login, ref, dest, input=target.password + "\n")
    assert out["uploaded_blobs"] == len(test_images.base.blobs)
    if kind == "token":
        asked = target.token_server.requests
        assert len(asked) == 1  # one token for every HEAD, POST, PUT of the push
        assert asked[0].user == target.username and asked[0].status == 200
        assert asked[0].granted == ((repository, ("pull", "push")),)
    creds = f"{target.username}:{target.password}"
    assert skopeo.inspect(f"docker://{dest}", creds=creds)["Digest"] == test_images.base.digest


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_anonymous_push_to_a_registry_that_wants_credentials_fails_with_a_hint(
    cas, registry, basic_registry, token_registry, test_images, kind
):
    target = basic_registry if kind == "basic" else token_registry  # the token server lets anyone pull
    ref = test_images.ref(registry, "base")
    cas("pull", ref)
    repository = _repo("base")
    mark = target.mark()
    proc = cas("push", ref, f"{target.host}/{repository}:anon", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and target.host in lines[0] and "log in" in lines[1]
    assert not [r for r in target.requests(mark) if r.status in (201, 202)]  # nothing was accepted


def _manifest_status(registry, repository: str, reference: str) -> int:
    from support.tools import http_status

    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    return http_status(f"{registry.url}/v2/{repository}/manifests/{reference}", headers={"Accept": accept})


def test_multi_platform_index_is_pushed_only_when_every_platform_is_cached(cas, registry, proxy, skopeo, test_images):
    multi = test_images.multi
    ref = test_images.ref(registry, "multi")
    cas("pull", "--platform", "linux/amd64", ref)
    repository = _repo("multi")

    refused = cas("push", ref, f"{proxy.host}/{repository}:all", check=False)
    assert refused.returncode == 1
    assert "linux/arm64/v8" in refused.stderr and "linux/arm/v7" in refused.stderr and "--platform" in refused.stderr
    assert _manifest_status(registry, repository, "all") == 404

    one = _push_json(cas, "--platform", "linux/amd64", ref, f"{proxy.host}/{repository}:amd64")
    amd64 = multi.for_platform("linux/amd64")
    assert one["digest"] == amd64.digest and one["platforms"] == ["linux/amd64"] and one["manifest_count"] == 1
    assert skopeo.inspect(f"docker://{registry.host}/{repository}:amd64")["Digest"] == amd64.digest

    for platform in ("linux/arm64/v8", "linux/arm/v7"):
        cas("pull", "--platform", platform, ref)
    mark = registry.mark()
    whole = _push_json(cas, ref, f"{proxy.host}/{repository}:all")
    assert whole["digest"] == multi.digest and whole["manifest_count"] == 4
    assert whole["platforms"] == ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]
    assert whole["skipped_blobs"] == len(amd64.blobs)  # pushed with the amd64 manifest just before
    raw = skopeo.run("inspect", "--tls-verify=false", "--raw", f"docker://{registry.host}/{repository}:all").stdout
    assert raw.encode() == multi.manifest_blob.data
    manifest_puts = [r for r in registry.requests(mark) if r.kind == "manifest" and r.method == "PUT"]
    assert [r.reference for r in manifest_puts] == [img.digest for img in multi.images] + ["all"]


def test_an_upload_failing_midway_leaves_no_manifest(cas, registry, proxy, test_images):
    app = test_images.app
    ref = test_images.ref(registry, "app")
    cas("pull", ref)
    repository = _repo("app")
    victim = app.blobs[-1].digest
    proxy.fail_next(400, count=1, pattern=rf"/blobs/uploads/.*digest={victim.replace(':', '(:|%3A)')}", method="PUT")
    mark = registry.mark()
    proc = cas("push", ref, f"{proxy.host}/{repository}:broken", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and victim in proc.stderr
    assert [r for r in registry.requests(mark) if r.kind == "manifest" and r.method == "PUT"] == []
    assert _manifest_status(registry, repository, "broken") == 404


def test_a_transient_upload_failure_is_retried_from_a_fresh_session(cas, registry, proxy, skopeo, test_images):
    ref = test_images.ref(registry, "base")
    cas("pull", ref)
    repository = _repo("base")
    proxy.fail_next(503, count=2, pattern=r"/blobs/uploads/.+digest=", method="PUT")
    proxy.fail_next(429, count=1, pattern=r"/blobs/uploads/$", method="POST", retry_after=0)
    proxy.fail_next(503, count=1, pattern=r"/manifests/", method="PUT")
    out = _push_json(cas, ref, f"{proxy.host}/{repository}:retried")
    assert out["uploaded_blobs"] == len(test_images.base.blobs)
    faulted = [(r.method, r.kind, r.status) for r in proxy.requests if r.fault == "status"]
    assert sorted(faulted) == [
        ("POST", "upload", 429),
        ("PUT", "manifest", 503),
        ("PUT", "upload", 503),
        ("PUT", "upload", 503),
    ]
    posts = [r for r in proxy.requests if r.kind == "upload" and r.method == "POST"]
    assert len(posts) == len(test_images.base.blobs) + 2 + 1  # a failed PUT starts a new upload; a 429 is asked again
    assert [r.status for r in proxy.requests if r.kind == "manifest" and r.method == "PUT"] == [503, 201]
    assert skopeo.inspect(f"docker://{registry.host}/{repository}:retried")["Digest"] == test_images.base.digest


def test_chunked_upload_when_the_registry_asks_for_it(cas, registry, proxy, skopeo, test_images, tmp_path):
    ref = test_images.ref(registry, "ocidata")
    cas("pull", ref)
    repository = _repo("ocidata")
    proxy.upload_headers({"OCI-Chunk-Min-Length": "65536"})
    out = _push_json(cas, ref, f"{proxy.host}/{repository}:chunked")
    patches = [r for r in proxy.requests if r.kind == "upload" and r.method == "PATCH"]
    expected = sum(-(-b.size // 65536) for b in test_images.ocidata.blobs)
    assert len(patches) == expected and all(r.status == 202 for r in patches)
    ranges = {r.headers["content-range"] for r in patches}
    assert {"0-65535", "65536-131071"} <= ranges and all(int(r.split("-")[0]) % 65536 == 0 for r in ranges)
    assert out["uploaded_bytes"] == sum(b.size for b in test_images.ocidata.blobs)
    skopeo.copy(f"docker://{registry.host}/{repository}:chunked", f"dir:{tmp_path / 'copy'}")
    for blob in test_images.ocidata.blobs:
        assert (tmp_path / "copy" / blob.digest.split(":")[1]).read_bytes() == blob.data


def test_credentials_never_go_to_an_upload_location_on_another_origin(
    cas, registry, basic_registry, proxy_factory, skopeo, test_images
):
    ref = test_images.ref(registry, "base")
    cas("pull", ref)
    front = proxy_factory(basic_registry)
    front.foreign_uploads("localhost")
    repository = _repo("base")
    login = ("-u", basic_registry.username, "--password-stdin")
    cas("push", *login, ref, f"{front.host}/{repository}:elsewhere", input=basic_registry.password + "\n")
    foreign = [r for r in front.requests if r.foreign]
    assert len(foreign) == len(test_images.base.blobs) and all(r.method == "PUT" for r in foreign)
    assert all("authorization" not in r.headers for r in foreign)
    assert any("authorization" in r.headers for r in front.requests if not r.foreign)
    creds = f"{basic_registry.username}:{basic_registry.password}"
    inspected = skopeo.inspect(f"docker://{basic_registry.host}/{repository}:elsewhere", creds=creds)
    assert inspected["Digest"] == test_images.base.digest


def test_a_store_blob_changed_after_commit_is_never_pushed(cas, cas_home, registry, proxy, test_images):
    ref = test_images.ref(registry, "base")
    cas("pull", ref)
    layer = max(test_images.base.blobs, key=lambda b: b.size)
    path = cas_home / "v1" / "blobs" / "sha256" / layer.digest.split(":")[1]
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    repository = _repo("base")
    mark = registry.mark()
    proc = cas("push", ref, f"{proxy.host}/{repository}:bad", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: cannot push: 1 blob(s) in the store changed after they were committed")
    assert f"{layer.digest} (layer " in proc.stderr and "nothing was pushed" in proc.stderr
    assert registry.requests(mark) == []  # the stat fingerprint caught it before the first request


def test_push_to_a_digest_checks_it_and_summary_names_the_counts(cas, registry, proxy, test_images):
    ref = test_images.ref(registry, "base")
    cas("pull", ref)
    repository = _repo("base")
    wrong = cas("push", ref, f"{proxy.host}/{repository}@{test_images.app.digest}", check=False)
    assert wrong.returncode == 2 and test_images.base.digest in wrong.stderr
    proc = cas("push", ref, f"{proxy.host}/{repository}@{test_images.base.digest}")
    assert f"uploaded {len(test_images.base.blobs)} blob(s)" in proc.stderr and "mounted 0" in proc.stderr
    assert _manifest_status(registry, repository, test_images.base.digest) == 200


def test_pushing_an_image_that_was_never_pulled_says_so(cas, registry):
    proc = cas("push", f"{registry.host}/never/pulled:1", f"{registry.host}/dest:1", check=False)
    assert proc.returncode == 1
    assert "not in the cache" in proc.stderr and "cas pull" in proc.stderr
    assert registry.requests() == []


def test_mount_on_a_token_registry_asks_for_pull_on_the_source_in_the_same_token(cas, token_registry, test_images):
    source = test_images.ref(token_registry, "app")
    cas("pull", source)  # anonymous pull is allowed there
    token_registry.token_server.reset()
    repository = _repo("app")
    mark = token_registry.mark()
    login = ("-u", token_registry.username, "--password-stdin")
    out = _push_json(cas, *login, source, f"{token_registry.host}/{repository}:m", input=token_registry.password + "\n")
    assert out["mounted_blobs"] == len(test_images.app.blobs) and out["uploaded_bytes"] == 0
    asked = token_registry.token_server.requests
    assert [r.scopes for r in asked] == [(f"repository:{repository}:pull,push", "repository:app:pull")]
    assert asked[0].granted == ((repository, ("pull", "push")), ("app", ("pull",)))
    mounts = [r for r in token_registry.requests(mark) if r.kind == "upload" and r.status == 201]
    assert len(mounts) == len(test_images.app.blobs) and all("mount=" in r.uri for r in mounts)


def test_a_later_push_mounts_blobs_an_earlier_push_put_in_another_repository(cas, registry, proxy, test_images):
    base, app = test_images.base, test_images.app
    cas("pull", test_images.ref(registry, "base"))
    cas("pull", test_images.ref(registry, "app"))
    first, second = _repo("base"), _repo("app")
    _push_json(cas, test_images.ref(registry, "base"), f"{proxy.host}/{first}:1")
    mark = registry.mark()
    out = _push_json(cas, test_images.ref(registry, "app"), f"{proxy.host}/{second}:1")
    shared = {lay.digest for lay in base.layers}
    assert out["mounted_blobs"] == len(shared) and out["uploaded_blobs"] == len(app.blobs) - len(shared)
    mounts = [r for r in registry.requests(mark) if r.kind == "upload" and "mount=" in r.uri]
    assert len(mounts) == len(shared)
    assert all(r.status == 201 and f"from={first}" in unquote(r.uri) for r in mounts)


def test_a_mount_the_registry_declines_becomes_an_upload_in_the_session_it_opened(cas, registry, proxy, test_images):
    import httpx

    base, app = test_images.base, test_images.app
    cas("pull", test_images.ref(registry, "app"))
    first, second = _repo("base"), _repo("app")
    cas("pull", test_images.ref(registry, "base"))
    _push_json(cas, test_images.ref(registry, "base"), f"{proxy.host}/{first}:1")
    for layer in base.layers:  # the store still believes `first` holds them
        assert httpx.delete(f"{registry.url}/v2/{first}/blobs/{layer.digest}").status_code == 202
    mark = registry.mark()
    out = _push_json(cas, test_images.ref(registry, "app"), f"{proxy.host}/{second}:1")
    assert out["mounted_blobs"] == 0 and out["uploaded_blobs"] == len(app.blobs)
    logged = registry.requests(mark)
    declined = [r for r in logged if r.kind == "upload" and r.method == "POST" and "mount=" in r.uri]
    assert len(declined) == len(base.layers) and all(r.status == 202 for r in declined)
    plain_posts = [r for r in logged if r.kind == "upload" and r.method == "POST" and "mount=" not in r.uri]
    assert len(plain_posts) == len(app.blobs) - len(base.layers)  # the declined mounts' sessions were used
    assert _manifest_status(registry, second, "1") == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["monolithic", "chunked"])
def test_bytes_that_do_not_match_their_digest_never_complete_an_upload(registry, proxy, chunked):
    """The in-flight check behind the fingerprint one: a file that changes while it is read."""
    import hashlib
    import io

    from cas.digest import Digest
    from cas.errors import IntegrityError
    from cas.registry import RegistryClient
    from cas.registry.upload import Uploader

    good = bytes(range(256)) * 1024  # 256 KiB
    digest = Digest.parse("sha256:" + hashlib.sha256(good).hexdigest())
    bad = good[:-1] + b"\x00"
    if chunked:
        proxy.upload_headers({"OCI-Chunk-Min-Length": "65536"})
    repository = _repo("torn")
    with RegistryClient(proxy.host) as client:
        with pytest.raises(IntegrityError, match=str(digest)):
            Uploader(client, repository).upload(digest, len(good), lambda: io.BytesIO(bad), lambda n: None)
    finishing = [r for r in proxy.requests if r.kind == "upload" and r.method == "PUT"]
    assert finishing == [] or all(r.status != 201 for r in finishing)
    assert registry.requests() and not [r for r in registry.requests() if r.status == 201]
    from support.tools import http_status

    # The status cas received, as the proxy passed it on. Not the registry's access log: when its
    # DELETE races the handler of the PUT cut short, distribution answers 204 and then logs 500.
    dropped = [r for r in proxy.requests if r.kind == "upload" and r.method == "DELETE"]
    assert len(dropped) == 1 and dropped[0].status in (204, 404)  # 404: the failed PUT already ended it
    assert http_status(f"{registry.url}{dropped[0].path}") == 404  # no half-done upload left to be purged

    assert http_status(f"{registry.url}/v2/{repository}/blobs/{digest}") == 404


def test_one_child_of_an_index_pushes_by_its_digest_and_platforms_are_checked(
    cas, registry, proxy, skopeo, test_images
):
    multi = test_images.multi
    amd64 = multi.for_platform("linux/amd64")
    cas("pull", "--platform", "linux/amd64", test_images.ref(registry, "multi"))
    repository = _repo("child")
    out = _push_json(cas, f"{registry.host}/multi@{amd64.digest}", f"{proxy.host}/{repository}:child")
    assert out["digest"] == amd64.digest and out["manifest_count"] == 1
    assert skopeo.inspect(f"docker://{registry.host}/{repository}:child")["Digest"] == amd64.digest

    cas("pull", test_images.ref(registry, "base"))
    wrong = cas(
        "push",
        "--platform",
        "linux/arm64",
        test_images.ref(registry, "base"),
        f"{proxy.host}/{repository}:x",
        check=False,
    )
    assert wrong.returncode == 1 and "linux/arm64" in wrong.stderr and "linux/amd64" in wrong.stderr


def test_push_platform_finds_a_platform_whatever_record_is_newest(cas, registry, skopeo, test_images, tmp_path):
    """An export of one platform imported back is the newest record of the tag,
    and its top is that platform's manifest; every other cached platform still pushes."""
    ref = test_images.ref(registry, "multidocker")
    cas("pull", "--all-platforms", ref)
    archive = tmp_path / "amd64.tar"
    cas("export", "--platform", "linux/amd64", ref, "-o", archive)
    cas("import", archive)
    arm64 = test_images.multidocker.for_platform("linux/arm64/v8")

    repository = _repo("multidocker")
    out = _push_json(cas, "--platform", "linux/arm64", ref, f"{registry.host}/{repository}:arm64")
    assert out["digest"] == arm64.digest and out["platforms"] == ["linux/arm64/v8"]
    copied = skopeo.inspect(f"docker://{registry.host}/{repository}:arm64", raw=True)
    assert copied["config"]["digest"] == arm64.config_blob.digest
    amd64 = _push_json(cas, "--platform", "linux/amd64", ref, f"{registry.host}/{repository}:amd64")
    assert amd64["digest"] == test_images.multidocker.for_platform("linux/amd64").digest
