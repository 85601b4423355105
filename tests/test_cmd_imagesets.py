"""Image-set files (`-f FILE`) and lock files on pull and export, against the suite's registry."""

from __future__ import annotations

import json
import tarfile
import uuid

from support import images


def _repo(name: str) -> str:
    return f"set-{uuid.uuid4().hex[:8]}/{name}"


def test_pull_f_reads_comments_blank_lines_platforms_and_stdin(cas, registry, test_images, tmp_path):
    base, multi = test_images.ref(registry, "base"), test_images.ref(registry, "multi")
    listing = tmp_path / "images.txt"
    listing.write_text(f"# what the builds use\n\n{base}\n   {multi}  linux/arm64,linux/amd64  # two of three\n")
    out = json.loads(cas("pull", "--json", "-f", listing).stdout)
    got = {image["ref"]: sorted(p["platform"] for p in image["platforms"]) for image in out["images"]}
    assert got == {base: ["linux/amd64"], multi: ["linux/amd64", "linux/arm64/v8"]} and out["failed"] == []

    mark = registry.mark()
    again = cas("pull", "-f", "-", input=f"{base}\n")
    assert again.stderr.startswith(f"{base}: ") and "downloaded 0 blob(s)" in again.stderr
    assert registry.blob_gets(mark) == []


def test_bad_lines_are_named_by_file_and_line(cas, registry, tmp_path):
    listing = tmp_path / "images.txt"
    listing.write_text("# ok\n127.0.0.1:5000/a:1\nNot/A:Ref\n")
    bad = cas("pull", "-f", listing, check=False)
    assert bad.returncode == 2 and bad.stdout == ""
    first, hint = bad.stderr.splitlines()
    assert first.startswith(f"error: {listing}:3: invalid reference 'Not/A:Ref'") and hint.startswith("hint: ")
    listing.write_text("a:1 linux/amd64 extra\n")
    words = cas("pull", "-f", listing, check=False)
    assert words.returncode == 2 and words.stderr.startswith(f"error: {listing}:1: 3 words: expected REF")
    platform = cas("pull", "-f", "-", input="a:1 linux\n", check=False)
    assert platform.returncode == 2 and platform.stderr.startswith("error: stdin:1: ")
    empty = cas("pull", "-f", "-", input="# nothing\n\n", check=False)
    assert empty.returncode == 2 and empty.stderr.startswith("error: stdin names no image")
    missing = cas("pull", "-f", tmp_path / "nope.txt", check=False)
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_a_failing_line_fails_like_a_failing_reference(cas, registry, test_images, tmp_path):
    base = test_images.ref(registry, "base")
    listing = tmp_path / "images.txt"
    listing.write_text(f"{registry.host}/no/such:1\n{base}\n")
    out = cas("pull", "--json", "-f", listing, "--lock", tmp_path / "x.lock", check=False)
    assert out.returncode == 1
    body = json.loads(out.stdout)
    assert [i["ref"] for i in body["images"]] == [base]
    assert body["failed"][0]["where"] == f"{listing}:1" and body["lock"] is None
    lines = out.stderr.splitlines()
    assert lines[0].startswith(f"error: {listing}:1: image {registry.host}/no/such:1 not found")
    assert lines[-1] == "hint: see the error for each above; the others were pulled; the lock file was not written"
    assert not (tmp_path / "x.lock").exists()


def test_a_lock_pins_digests_that_a_moved_tag_cannot_change(cas, cas_home, registry, test_images, tmp_path):
    repository = _repo("app")
    images.push(registry, repository, "stable", test_images.base)
    ref = f"{registry.host}/{repository}:stable"
    multi = test_images.ref(registry, "multi")
    listing, lock = tmp_path / "images.txt", tmp_path / "images.lock"
    listing.write_text(f"{ref}\n{multi} linux/arm64\n")
    cas("pull", "-q", "-f", listing, "--lock", lock)
    pinned = [line for line in lock.read_text().splitlines() if not line.startswith("#")]
    arm = "linux/arm64/v8"
    assert pinned == [f"{ref}@{test_images.base.digest} linux/amd64", f"{multi}@{test_images.multi.digest} {arm}"]

    images.push(registry, repository, "stable", test_images.app)  # the tag moves
    fresh = tmp_path / "fresh-home"
    out = cas("pull", "--json", "-f", lock, env={"CAS_HOME": str(fresh)})
    body = json.loads(out.stdout)
    assert [i["digest"] for i in body["images"]] == [test_images.base.digest, test_images.multi.digest]
    assert body["moved"] == [{"ref": ref, "locked": test_images.base.digest, "current": test_images.app.digest}]
    text = cas("pull", "-f", lock, env={"CAS_HOME": str(fresh)}).stderr
    assert f"tag moved: {ref} now names {test_images.app.digest}; kept {test_images.base.digest} as locked" in text
    shown = json.loads(cas("inspect", "--json", ref, env={"CAS_HOME": str(fresh)}).stdout)
    assert shown["digest"] == test_images.base.digest  # NAME:TAG in the store is the locked image

    site = tmp_path / "site.tar"
    cas("export", "-f", lock, "-o", site, env={"CAS_HOME": str(fresh)})
    with tarfile.open(site) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert sorted(tag for m in manifest for tag in m["RepoTags"]) == sorted([ref, multi])

    cas("pull", "-q", ref)  # this store follows the tag: an export from the lock refuses it
    refused = cas("export", "-f", lock, "-o", tmp_path / "no.tar", check=False)
    assert refused.returncode == 1 and not (tmp_path / "no.tar").exists()
    assert refused.stderr.splitlines() == [
        f"error: {lock}:2: {ref} is locked to {test_images.base.digest}; the store's is {test_images.app.digest}",
        f"hint: run `cas pull -f {lock}` first (it fetches exactly the locked digests)",
    ]
    cas("export", "--pull", "-f", lock, "-o", tmp_path / "yes.tar")  # --pull fetches the pins first


def test_export_since_inventory_from_the_same_lock(cas, registry, test_images, tmp_path):
    base, app = test_images.ref(registry, "base"), test_images.ref(registry, "app")
    lock = tmp_path / "images.lock"
    (tmp_path / "site.txt").write_text(f"{base}\n")
    cas("pull", "-q", "-f", tmp_path / "site.txt", "--lock", tmp_path / "site.lock")
    inventory = tmp_path / "inventory.json"
    inventory.write_text(cas("images", "--json").stdout)
    (tmp_path / "images.txt").write_text(f"{base}\n{app}\n")
    cas("pull", "-q", "-f", tmp_path / "images.txt", "--lock", lock)
    out = json.loads(
        cas("export", "--json", "-f", lock, "--since-inventory", inventory, "-o", tmp_path / "d.tar").stdout
    )
    assert out["delta"]["required_blobs"] == len(test_images.base.layers)  # base's layers are left to the site
    assert out["delta"]["bases"] == [] or out["delta"]["carried_blobs"] < len(test_images.app.digests)


def test_export_f_names_the_format_option_when_given_a_format(cas, tmp_path):
    old = cas("export", "-f", "oci-archive", "-o", tmp_path / "x.tar", "a:1", check=False)
    assert old.returncode == 2
    assert old.stderr.splitlines() == [
        "error: -f names an image-set file; no file oci-archive",
        "hint: for the format, write --format oci-archive",
    ]


def test_images_sharing_layers_wait_for_each_other_without_blaming_another_process(
    cas, cas_home, proxy, registry, test_images
):
    test_images.push(registry)
    proxy.throttle(400_000)  # busybox, the layer base and app share, takes seconds: both images want it at once
    listing = f"{proxy.host}/base:latest\n{proxy.host}/app:latest\n"
    out = cas("pull", "-f", "-", "--jobs", "2", input=listing)
    assert "waiting" not in out.stderr  # this command's own wait is no news
    shared = [lay.digest for lay in test_images.base.layers]
    gets = [r.path.rsplit("/", 1)[-1] for r in proxy.requests if r.method == "GET" and "/blobs/" in r.path]
    assert sorted(d for d in gets if d in shared) == sorted(shared)  # each shared layer fetched once

    logged = cas("pull", "-v", "-f", "-", "--jobs", "2", input=listing, env={"CAS_HOME": str(cas_home / "v")})
    assert "already under way in this cas command" in logged.stderr  # the wait happened, and -v says so
    assert "another cas process" not in logged.stderr


def test_a_set_reuses_one_connection_per_registry(cas, proxy, registry, test_images):
    test_images.push(registry)
    names = ("base", "app", "dockermedia")
    listing = "".join(f"{proxy.host}/{name}:latest\n" for name in names)
    cas("pull", "-q", "-f", "-", input=listing)
    proxy.reset()
    cas("pull", "-q", "-f", "-", "--jobs", "1", input=listing)  # warm: one manifest request an image
    manifests = [r for r in proxy.requests if r.kind == "manifest"]
    assert len(manifests) == len(names)
    assert len({r.client_port for r in manifests}) == 1  # one connection for the set, not one per image


def test_a_list_on_stdin_and_a_password_on_stdin_are_refused(cas, registry, test_images):
    base = test_images.ref(registry, "base")
    for command in (
        ["pull"],
        ["push", f"{registry.host}/x"],
        ["copy", f"{registry.host}/x"],
        ["export", "-o", "x.tar"],
    ):
        out = cas(*command, "-f", "-", "-u", "ci", "--password-stdin", input=f"{base}\n", check=False)
        assert out.returncode == 2, command
        assert out.stderr.startswith("error: -f - and --password-stdin would both read stdin"), command
