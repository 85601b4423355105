"""Several platforms of one reference, against the real registry, dockerd, podman and skopeo.

The ``multi`` (OCI index) and ``multidocker`` (Docker manifest list) test images each hold
linux/amd64 (runnable here: it has busybox), linux/arm64/v8 and linux/arm/v7.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from test_lifecycle_support import flip_byte

AMD64, ARM64, ARM = "linux/amd64", "linux/arm64/v8", "linux/arm/v7"


def _rows(cas, ref: str) -> list[tuple[str, str]]:
    return [(r["ref"], r["platform"]) for r in _json(cas, "images") if r["ref"] == ref]


def _json(cas, command: str, *args: str, check: bool = True):
    """The body of ``cas COMMAND --json``; for a command that lists images, its ``images``."""
    body = json.loads(cas(command, "--json", *args, check=check).stdout)
    return body["images"] if command in ("images", "pull", "rm") else body


def _blob(cas_home: Path, digest: str) -> Path:
    algorithm, hexpart = digest.split(":")
    return cas_home / "v1" / "blobs" / algorithm / hexpart


def _tar_json(archive: Path, name: str):
    with tarfile.open(archive) as tar:
        return json.load(tar.extractfile(name))


def test_pulling_another_platform_keeps_the_first(cas, cas_home, registry, test_images, skopeo):
    """Before: the second pull replaced the first record, and prune freed the first platform's blobs."""
    ref = test_images.ref(registry, "multi")
    cas("pull", "--platform", "linux/amd64", ref)
    cas("pull", "--platform", "linux/arm64", ref)
    assert _rows(cas, ref) == [(ref, AMD64), (ref, ARM64)]
    layout = json.loads((cas_home / "v1" / "index.json").read_text())["manifests"]
    assert [(m["annotations"]["org.opencontainers.image.ref.name"], m["platform"]["architecture"]) for m in layout] == [
        (ref, "amd64"),
        (ref, "arm64"),
    ]
    assert skopeo.inspect(f"oci:{cas_home / 'v1'}:{ref}")["Architecture"] == "amd64"  # the first entry of the name
    pruned = _json(cas, "prune")
    assert pruned["freed_images"] == 0 and pruned["freed_blobs"] == 0
    for platform in (AMD64, ARM64):
        image = test_images.multi.for_platform(platform)
        info = _json(cas, "inspect", "--platform", platform, ref)
        assert info["manifest"] == image.digest and info["digest"] == test_images.multi.digest


def test_pull_several_platforms_at_once_and_all_of_them(cas, registry, test_images):
    ref = test_images.ref(registry, "multidocker")
    mark = registry.mark()
    out = _json(cas, "pull", "--platform", "linux/amd64,linux/arm64/v8", ref)
    assert [p["platform"] for p in out[0]["platforms"]] == [AMD64, ARM64]
    assert [p["manifest"] for p in out[0]["platforms"]] == [
        test_images.multidocker.for_platform(p).digest for p in (AMD64, ARM64)
    ]
    wanted = {test_images.multidocker.digest}.union(
        *(test_images.multidocker.for_platform(p).digests for p in (AMD64, ARM64))
    )
    assert out[0]["downloaded_blobs"] == len(wanted)  # the index, and each platform's manifest, config and layers
    assert len([r for r in registry.manifest_requests(mark, method="GET") if r.status == 200]) == 3  # index + 2
    assert _rows(cas, ref) == [(ref, AMD64), (ref, ARM64)]

    multi = test_images.ref(registry, "multi")
    text = cas("pull", "--all-platforms", multi).stderr
    assert all(f"{multi}: " in line for line in text.strip().splitlines()[-3:])
    assert _rows(cas, multi) == [(multi, AMD64), (multi, ARM), (multi, ARM64)]

    both = cas("pull", "--all-platforms", "--platform", "linux/amd64", multi, check=False)
    assert both.returncode == 2 and both.stderr.startswith("error: --all-platforms and --platform")


def test_docker_default_platform_picks_the_platform_and_cas_platform_wins_over_it(cas, registry, test_images):
    """docker pull reads $DOCKER_DEFAULT_PLATFORM; cas does too, after its own $CAS_PLATFORM."""
    ref = test_images.ref(registry, "multi")
    cas("pull", "-q", ref, env={"DOCKER_DEFAULT_PLATFORM": "linux/arm64"})
    assert _rows(cas, ref) == [(ref, ARM64)]
    cas("pull", "-q", ref, env={"DOCKER_DEFAULT_PLATFORM": "linux/arm64", "CAS_PLATFORM": "linux/arm/v7"})
    assert _rows(cas, ref) == [(ref, ARM), (ref, ARM64)]
    archive = cas("export", "-q", ref, "-o", "-", env={"DOCKER_DEFAULT_PLATFORM": "linux/arm/v7"}, text=False)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:  # a docker-archive holds one platform
        (entry,) = json.load(tar.extractfile("manifest.json"))
        config = json.load(tar.extractfile(entry["Config"]))
    assert (config["architecture"], config.get("variant")) == ("arm", "v7")
    both = cas("export", ref, "-o", "/dev/null", check=False)  # neither set: this host's is not cached
    assert both.returncode == 1 and "cached for several platforms" in both.stderr


def test_another_platform_of_a_single_platform_image_is_an_error_caching_nothing(cas, cas_home, registry, test_images):
    """Before: cas recorded the amd64 image as if it were the arm64 one."""
    ref = test_images.ref(registry, "base")
    failed = cas("pull", "--platform", "linux/arm64", ref, check=False)
    assert failed.returncode == 1
    error, hint = failed.stderr.strip().splitlines()[-2:]
    assert error == f"error: {ref} is a single-platform image for {AMD64}, not {ARM64}; nothing was cached"
    assert hint.startswith("hint: pull it without --platform")
    assert _json(cas, "images") == []
    assert [p for p in (cas_home / "v1" / "blobs").rglob("*") if p.is_file()] == []

    # the same through export --pull: the error names the platform, and never suggests --pull again
    circle = cas("export", "--pull", "--platform", "linux/arm64", ref, "-o", cas_home.parent / "x.tar", check=False)
    assert circle.returncode == 1 and "single-platform image for linux/amd64" in circle.stderr
    assert "--pull" not in circle.stderr.splitlines()[-1]
    assert not (cas_home.parent / "x.tar").exists()
    cas("pull", "--platform", "linux/amd64", ref)  # its own platform is fine
    assert _rows(cas, ref) == [(ref, AMD64)]


def test_rm_removes_every_platform_or_the_one_named(cas, registry, test_images):
    ref = test_images.ref(registry, "multi")
    cas("pull", "--all-platforms", ref)
    removed = _json(cas, "rm", "--platform", "linux/arm/v7", ref)
    assert [(r["ref"], r["platform"]) for r in removed] == [(ref, ARM)]
    assert _rows(cas, ref) == [(ref, AMD64), (ref, ARM64)]
    gone = cas("rm", "--platform", "linux/arm/v7", ref, check=False)
    assert gone.returncode == 1 and f"cached: {ref} ({AMD64}), {ref} ({ARM64})" in gone.stderr
    assert "removed " in cas("rm", ref).stdout
    assert _rows(cas, ref) == []


def test_prune_du_and_verify_count_per_platform(cas, cas_home, registry, test_images):
    ref = test_images.ref(registry, "multi")
    amd64, arm64 = (test_images.multi.for_platform(p) for p in (AMD64, ARM64))
    cas("pull", "--platform", "linux/arm64", ref)
    cas("pull", "--platform", "linux/amd64", ref)  # used after arm64
    du = _json(cas, "du")
    assert [(i["ref"], i["platform"]) for i in du["images"]] == [(ref, AMD64), (ref, ARM64)]
    by_platform = {i["platform"]: i for i in du["images"]}
    assert by_platform[ARM64]["shared_bytes"] == len(test_images.multi.manifest_blob.data)  # the index, listed by both

    victim = arm64.layers[0].digest  # arm64's own layer
    flip_byte(_blob(cas_home, victim), 10)
    found = _json(cas, "verify", check=False)["findings"]
    assert [(f["kind"], f["what"], f["refs"]) for f in found] == [("corrupt", victim, [f"{ref} ({ARM64})"])]
    cas("verify", "--repair", check=False)
    assert {r["platform"]: r["needs_pull"] for r in _json(cas, "images")} == {
        AMD64: False,
        ARM64: True,
    }
    cas("pull", "--platform", "linux/arm64", ref)  # heals arm64, leaves amd64 alone

    keep = amd64.size + len(test_images.multi.manifest_blob.data) + 100  # room for one platform, not two
    pruned = _json(cas, "prune", "--keep-storage", str(keep))
    assert [(i["ref"], i["platform"]) for i in pruned["images"]] == [(ref, AMD64)]  # least recently used
    assert _rows(cas, ref) == [(ref, ARM64)]


def test_docker_archive_holds_one_platform_and_each_loads_on_an_empty_daemon(
    cas, cas_home, registry, test_images, clean_dockerd, tmp_path
):
    ref = test_images.ref(registry, "multi")
    cas("pull", "--platform", "linux/arm64,linux/arm/v7", ref)
    none = cas("export", ref, "-o", tmp_path / "none.tar", check=False)  # neither is this host's
    assert none.returncode == 1 and not (tmp_path / "none.tar").exists()
    assert f"cached for several platforms ({ARM}, {ARM64}), none of them this host's" in none.stderr
    cas("pull", "--platform", "linux/amd64", ref)

    for platform, expected_arch in ((None, "amd64"), (ARM64, "arm64"), (ARM, "arm")):
        archive = tmp_path / f"{expected_arch}.tar"
        cas("export", ref, "-o", archive, *(("--platform", platform) if platform else ()))
        image = test_images.multi.for_platform(platform or AMD64)
        assert [m["digest"] for m in _tar_json(archive, "index.json")["manifests"]] == [image.digest]
        clean_dockerd.wipe()
        assert f"Loaded image: {ref}" in clean_dockerd.load(archive).stdout
        assert clean_dockerd.image_inspect(ref)["Architecture"] == expected_arch
    clean_dockerd.wipe()
    clean_dockerd.load(tmp_path / "amd64.tar")
    assert clean_dockerd.run(ref).stdout == "linux/amd64\n"


def test_oci_archive_holds_every_cached_platform_under_one_index(
    cas, registry, test_images, skopeo, clean_podman, tmp_path
):
    for name in ("multi", "multidocker"):
        ref = test_images.ref(registry, name)
        cas("pull", "--platform", "linux/amd64,linux/arm64", ref)
        archive = tmp_path / f"{name}.tar"
        result = _json(cas, "export", "--format", "oci-archive", ref, "-o", archive)
        top = _tar_json(archive, "index.json")["manifests"]
        assert len(top) == 1 and top[0]["annotations"]["org.opencontainers.image.ref.name"] == ref
        assert top[0]["digest"] == result["indexes"][0]["digest"]
        with tarfile.open(archive) as tar:
            made = json.load(tar.extractfile(f"blobs/sha256/{top[0]['digest'][7:]}"))
        pulled = [test_images[name].for_platform(p) for p in (AMD64, ARM64)]
        assert [(m["digest"], m["platform"]["architecture"]) for m in made["manifests"]] == [
            (pulled[0].digest, "amd64"),
            (pulled[1].digest, "arm64"),
        ]  # only what the archive holds: never arm/v7
        assert made["mediaType"] == top[0]["mediaType"] == test_images[name].media_type

        copied = tmp_path / f"{name}-copy"
        named = f":{ref}" if name == "multi" else ""  # skopeo looks names up among OCI-typed entries only
        skopeo.copy(f"oci-archive:{archive}{named}", f"oci:{copied}:x", all=True)
        index = json.loads((copied / "index.json").read_text())["manifests"][0]
        inner = json.loads((copied / "blobs" / "sha256" / index["digest"][7:]).read_text())
        assert [m["platform"]["architecture"] for m in inner["manifests"]] == ["amd64", "arm64"]
        for image in pulled:  # to oci: skopeo converts Docker manifests and configs; the layers stay
            assert all((copied / "blobs" / "sha256" / layer.digest[7:]).is_file() for layer in image.layers)

        clean_podman.wipe()
        assert ref in clean_podman.load(archive).stdout
        assert clean_podman.run(ref).stdout == "linux/amd64\n"  # podman picks this host's platform

    one = tmp_path / "one.tar"
    cas("export", "--format", "oci-archive", "--platform", "linux/arm64", ref, "-o", one)
    assert [m["digest"] for m in _tar_json(one, "index.json")["manifests"]] == [
        test_images.multidocker.for_platform(ARM64).digest
    ]


def test_oci_dir_holds_every_cached_platform(cas, registry, test_images, skopeo, tmp_path):
    ref = test_images.ref(registry, "multi")
    cas("pull", "--all-platforms", ref)
    out = tmp_path / "layout"
    said = cas("export", "--format", "oci-dir", ref, "-o", out).stderr
    assert said.startswith(f"exported {ref} ({AMD64}, {ARM}, {ARM64}) as oci-dir: ")
    copied = tmp_path / "copied"
    skopeo.copy(f"oci:{out}:{ref}", f"oci:{copied}:x", all=True)
    index = json.loads((copied / "index.json").read_text())["manifests"][0]
    inner = json.loads((copied / "blobs" / "sha256" / index["digest"][7:]).read_text())
    assert sorted(m["platform"]["architecture"] for m in inner["manifests"]) == ["amd64", "arm", "arm64"]
