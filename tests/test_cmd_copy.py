"""`cas copy SRC DEST` (and `push -f`/`copy -f` with a prefix) against the suite's real registries.

What moved is read from the destination registry's own access log; skopeo reads the result.
"""

from __future__ import annotations

import json
import uuid


def _repo(name: str) -> str:
    return f"copied-{uuid.uuid4().hex[:8]}/{name}"


def _uploads(requests) -> list:
    return [r for r in requests if r.kind == "upload"]


def _put_digests(requests) -> list[str]:
    """Blobs whose bytes were uploaded (the PUT that commits an upload)."""
    return sorted(r.uri.split("digest=")[1].replace("%3A", ":") for r in _uploads(requests) if r.method == "PUT")


def test_copy_between_repositories_mounts_and_uploads_nothing(cas, registry, skopeo, test_images):
    app = test_images.app
    src = test_images.ref(registry, "app")
    dest = f"{registry.host}/{_repo('app')}:v1"
    mark = registry.mark()
    out = json.loads(cas("copy", "--json", src, dest).stdout)
    assert out["digest"] == app.digest and out["ref"] == src and out["destination"] == dest
    assert out["pull"]["downloaded_blobs"] == len(app.blobs) + 1  # the manifest too: the store was empty
    assert out["push"]["mounted_blobs"] == len(app.blobs) and out["push"]["uploaded_blobs"] == 0
    logged = registry.requests(mark)
    uploads = _uploads(logged)
    assert uploads and all(r.method == "POST" and "mount=" in r.uri and "from=app" in r.uri for r in uploads)
    assert _put_digests(logged) == []  # not one blob's bytes went up again
    assert skopeo.inspect(f"docker://{dest}")["Digest"] == app.digest

    again = registry.mark()
    second = json.loads(cas("copy", "--json", src, dest).stdout)
    assert second["pull"]["downloaded_blobs"] == 0 and second["push"]["uploaded_blobs"] == 0
    assert registry.blob_gets(again) == [] and _uploads(registry.requests(again)) == []


def test_copy_between_registries_uploads_only_what_the_destination_lacks(
    cas, registry, basic_registry, skopeo, test_images
):
    cas("login", "-u", basic_registry.username, "--password-stdin", basic_registry.host, input=basic_registry.password)
    base, app = test_images.base, test_images.app
    repository = _repo("app")
    mark = basic_registry.mark()
    first = json.loads(
        cas("copy", "--json", test_images.ref(registry, "base"), f"{basic_registry.host}/{repository}:base").stdout
    )
    assert first["push"]["uploaded_blobs"] == len(base.blobs)
    assert _put_digests(basic_registry.requests(mark)) == sorted(b.digest for b in base.blobs)

    mark = basic_registry.mark()
    dest = f"{basic_registry.host}/{repository}:app"
    out = json.loads(cas("copy", "--json", test_images.ref(registry, "app"), dest).stdout)
    own = sorted(set(app.digests) - set(base.digests) - {app.digest})  # app's config and its two layers
    assert out["push"]["uploaded_blobs"] == len(own) and out["push"]["skipped_blobs"] == len(base.layers)
    assert _put_digests(basic_registry.requests(mark)) == own  # base's layers were not sent again
    creds = f"{basic_registry.username}:{basic_registry.password}"
    assert skopeo.inspect(f"docker://{dest}", creds=creds)["Digest"] == app.digest


def test_copy_of_a_multi_platform_image_whole_or_one_platform(cas, registry, skopeo, test_images):
    multi = test_images.multi
    src = test_images.ref(registry, "multi")
    whole = f"{registry.host}/{_repo('multi')}:all"
    out = json.loads(cas("copy", "--json", "--all-platforms", src, whole).stdout)
    assert out["digest"] == multi.digest and len(out["platforms"]) == len(multi.images)
    assert skopeo.run("inspect", "--tls-verify=false", "--raw", f"docker://{whole}").stdout.encode() == (
        multi.manifest_blob.data
    )
    one = f"{registry.host}/{_repo('multi')}:arm"
    out = json.loads(cas("copy", "--json", "--platform", "linux/arm64", src, one).stdout)
    arm = multi.for_platform("linux/arm64/v8")
    assert out["digest"] == arm.digest and out["platforms"] == ["linux/arm64/v8"]
    assert skopeo.inspect(f"docker://{one}")["Digest"] == arm.digest
    two = cas("copy", "--platform", "linux/arm64,linux/amd64", src, one, check=False)
    assert two.returncode == 2 and two.stderr.startswith("error: cas copy takes one platform of an index")


def test_copy_and_push_f_send_each_image_under_a_prefix(cas, registry, skopeo, test_images, tmp_path):
    base, app = test_images.ref(registry, "base"), test_images.ref(registry, "app")
    listing = tmp_path / "images.txt"
    listing.write_text(f"# mirrored\n{base}\n\n{app}\n")
    prefix = f"{registry.host}/{_repo('mirror')}"
    out = json.loads(cas("copy", "--json", "-f", listing, prefix).stdout)
    assert [i["destination"] for i in out["images"]] == [f"{prefix}/base:latest", f"{prefix}/app:latest"]
    assert skopeo.inspect(f"docker://{prefix}/app:latest")["Digest"] == test_images.app.digest

    lock = tmp_path / "images.lock"
    cas("pull", "-q", "-f", listing, "--lock", lock)
    pushed_to = f"{registry.host}/{_repo('pushed')}"
    out = json.loads(cas("push", "--json", "-f", lock, pushed_to).stdout)
    assert [i["digest"] for i in out["images"]] == [test_images.base.digest, test_images.app.digest]
    assert skopeo.inspect(f"docker://{pushed_to}/base:latest")["Digest"] == test_images.base.digest
    from_stdin = json.loads(cas("push", "--json", "-f", "-", pushed_to, input=lock.read_text()).stdout)
    moved = [(i["uploaded_blobs"], i["mounted_blobs"], i["skipped_blobs"]) for i in from_stdin["images"]]
    assert moved == [(0, 0, len(test_images.base.blobs)), (0, 0, len(test_images.app.blobs))]  # all there

    tagged = cas("copy", "-f", listing, f"{prefix}/x:1", check=False)
    assert tagged.returncode == 2 and "DEST is a prefix" in tagged.stderr
    listing.write_text(f"{registry.host}/no/such:1\n{base}\n")
    failed = cas("copy", "--json", "-f", listing, prefix, check=False)
    assert failed.returncode == 1
    body = json.loads(failed.stdout)  # one object, the failure in it
    assert [i["ref"] for i in body["images"]] == [base] and body["error"]["exit_code"] == 1
    assert [(f["ref"], f["where"]) for f in body["failed"]] == [(f"{registry.host}/no/such:1", f"{listing}:1")]
    lines = failed.stderr.splitlines()
    assert lines[0].startswith(f"error: {listing}:1: image {registry.host}/no/such:1 not found")
    assert lines[-1] == "hint: see the error for each above; the others were copied"


def test_copy_takes_a_login_for_each_side(cas, cas_home, registry, basic_registry, skopeo, test_images):
    user, password = basic_registry.username, basic_registry.password
    creds = f"{user}:{password}"
    src = test_images.ref(registry, "base")
    guarded = f"{basic_registry.host}/{_repo('base')}:1"
    refused = cas("copy", src, guarded, check=False)  # no saved login for DEST
    assert refused.returncode == 1 and refused.stderr.startswith("error: ")
    cas("copy", "-q", "-u", user, "--password-stdin", src, guarded, input=password)
    assert skopeo.inspect(f"docker://{guarded}", creds=creds)["Digest"] == test_images.base.digest

    within = f"{basic_registry.host}/{_repo('base')}:2"  # SRC on DEST's registry: -u serves both
    fresh = {"CAS_HOME": str(cas_home / "within")}
    cas("copy", "-q", "-u", user, "--password-stdin", guarded, within, input=password, env=fresh)
    assert skopeo.inspect(f"docker://{within}", creds=creds)["Digest"] == test_images.base.digest

    back = f"{registry.host}/{_repo('base')}:back"  # SRC needs the login, DEST (plain) none
    fresh = {"CAS_HOME": str(cas_home / "back")}
    out = cas(
        "copy", "--json", "--src-username", user, "--src-password-stdin", guarded, back, input=password, env=fresh
    )
    assert json.loads(out.stdout)["pull"]["downloaded_blobs"] == len(test_images.base.blobs) + 1
    assert skopeo.inspect(f"docker://{back}")["Digest"] == test_images.base.digest

    both = cas("copy", "-u", user, "--password-stdin", "--src-password-stdin", guarded, back, check=False)
    assert both.returncode == 2 and "both read stdin" in both.stderr
    half = cas("copy", "--src-username", user, guarded, back, check=False)
    assert half.returncode == 2 and "--src-username and --src-password-stdin go together" in half.stderr
