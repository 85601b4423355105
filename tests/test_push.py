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
    assert out["digest"] == base.digest and out["manifests"] == 1
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


def test_anonymous_push_to_a_registry_that_wants_credentials_fails_with_a_hint(
    cas, registry, basic_registry, test_images
):
    ref = test_images.ref(registry, "base")
    cas("pull", ref)
    proc = cas("push", ref, f"{basic_registry.host}/{_repo('base')}:anon", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "hint: " in proc.stderr and "Traceback" not in proc.stderr
