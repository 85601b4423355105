"""The cache lifecycle end to end: real pulls from the real registry, `cas rm/du/prune/verify`
through the CLI, exports loaded on a clean daemon, and the store read by skopeo as an OCI layout."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from test_lifecycle_support import flip_byte, only_record


def blobs_on_disk(cas_home: Path) -> set[str]:
    sha = cas_home / "v1" / "blobs" / "sha256"
    return {f"sha256:{p.name}" for p in sha.iterdir()} if sha.is_dir() else set()


def blob_path(cas_home: Path, digest: str) -> Path:
    return cas_home / "v1" / "blobs" / "sha256" / digest.removeprefix("sha256:")


def as_json(proc) -> dict:
    return json.loads(proc.stdout)


def layout_refs(cas_home: Path) -> list[str]:
    index = json.loads((cas_home / "v1" / "index.json").read_text())
    return [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]


def test_rm_and_prune_remove_exactly_the_unique_blobs_and_the_rest_still_loads(
    cas, cas_home, registry, test_images, clean_dockerd, tmp_path
):
    base, app, dm = (test_images.ref(registry, n) for n in ("base", "app", "dockermedia"))
    cas("pull", base, app, dm)
    before = blobs_on_disk(cas_home)
    unique_to_app = set(test_images.app.digests) - set(test_images.base.digests) - set(test_images.dockermedia.digests)
    assert len(unique_to_app) == 4  # manifest, config, 2 own layers

    du = as_json(cas("du", "--json"))
    app_row = next(i for i in du["images"] if i["ref"] == app)
    assert app_row["unique_bytes"] == sum(os.path.getsize(blob_path(cas_home, d)) for d in unique_to_app)

    cas("rm", app)
    assert blobs_on_disk(cas_home) == before  # rm frees nothing by itself
    assert app not in layout_refs(cas_home)
    result = as_json(cas("prune", "--json"))
    assert {b["digest"] for b in result["blobs"]} == unique_to_app
    assert result["freed_bytes"] == app_row["unique_bytes"] and result["freed_images"] == 0
    assert blobs_on_disk(cas_home) == before - unique_to_app
    assert as_json(cas("verify", "--json", "--deep"))["ok"]

    registry.mark()
    for ref, hello in ((base, "hello from base\n"), (dm, "hello from dockermedia\n")):
        archive = tmp_path / f"{ref.rsplit('/', 1)[1].replace(':', '_')}.tar"
        cas("export", ref, "-o", archive)
        clean_dockerd.wipe()
        assert f"Loaded image: {ref}" in clean_dockerd.load(archive).stdout
        assert clean_dockerd.run(ref).stdout == hello
    assert registry.requests() == []

    gone = cas("export", app, "-o", tmp_path / "app.tar", check=False)
    assert gone.returncode != 0 and app in gone.stderr


def test_dry_run_deletes_nothing(cas, cas_home, registry, test_images):
    base, app = test_images.ref(registry, "base"), test_images.ref(registry, "app")
    cas("pull", base, app)
    cas("rm", app)
    files = blobs_on_disk(cas_home)
    layout = (cas_home / "v1" / "index.json").read_bytes()
    images = as_json(cas("images", "--json"))
    for args in ((), ("--all",), ("--keep-storage", "0"), ("--older-than", "0s")):
        out = cas("prune", "--dry-run", *args)
        assert "Would free" in out.stdout
        assert blobs_on_disk(cas_home) == files
        assert (cas_home / "v1" / "index.json").read_bytes() == layout
        assert as_json(cas("images", "--json")) == images
    predicted = as_json(cas("prune", "--dry-run", "--all", "--json"))
    assert {b["digest"] for b in predicted["blobs"]} == files
    real = as_json(cas("prune", "--all", "--json"))
    assert (
        real["freed_bytes"] == predicted["freed_bytes"]
        and real["freed_blobs"] == predicted["freed_blobs"]
        and blobs_on_disk(cas_home) == set()
    )
    assert layout_refs(cas_home) == []


def test_keep_storage_evicts_least_recently_used_and_keeps_shared_blobs(
    cas, cas_home, registry, test_images, clean_dockerd, tmp_path
):
    base, app, oci = (test_images.ref(registry, n) for n in ("base", "app", "ocidata"))
    cas("pull", app)
    cas("pull", base)
    cas("pull", oci)
    cas("export", app, "-o", tmp_path / "warm.tar")  # export counts as use: app is now the most recent
    # LRU order: base, ocidata, app
    du = as_json(cas("du", "--json"))
    rows = {i["ref"]: i for i in du["images"]}
    total = du["stored_bytes"]
    assert rows[base]["unique_bytes"] < rows[base]["size"]  # base shares its layers with app

    # room for everything except base's own manifest and config: base alone goes
    first = as_json(cas("prune", "--keep-storage", str(total - rows[base]["unique_bytes"]), "--json"))
    assert [i["ref"] for i in first["images"]] == [base]
    assert {b["digest"] for b in first["blobs"]} == {test_images.base.digest, test_images.base.config_blob.digest}
    assert set(test_images.app.digests) <= blobs_on_disk(cas_home), "a blob shared with a kept image went"

    # one byte less than what is left: the next least recently used (ocidata) goes, app stays
    du = as_json(cas("du", "--json"))
    left, oci_unique = du["stored_bytes"], {i["ref"]: i for i in du["images"]}[oci]["unique_bytes"]
    second = as_json(cas("prune", "--keep-storage", f"{left - 1}B", "--json"))
    assert [i["ref"] for i in second["images"]] == [oci]
    assert second["kept_bytes"] == left - oci_unique
    assert [i["ref"] for i in as_json(cas("images", "--json"))["images"]] == [app]

    clean_dockerd.wipe()
    cas("export", app, "-o", tmp_path / "app.tar")
    assert f"Loaded image: {app}" in clean_dockerd.load(tmp_path / "app.tar").stdout
    assert clean_dockerd.run(app).stdout == "hello from app\n"


def test_older_than_evicts_images_not_used_recently(cas, cas_home, registry, test_images):
    base, oci = test_images.ref(registry, "base"), test_images.ref(registry, "ocidata")
    cas("pull", base, oci)
    assert as_json(cas("prune", "--older-than", "1h", "--json"))["freed_images"] == 0
    from cas.store import Store

    store = Store(cas_home)  # two hours pass, for both images...
    store.metadata.touch_refs([only_record(store, base), only_record(store, oci)], when=time.time() - 7200)
    store.close()
    cas("export", oci, "-o", cas_home.parent / "oci.tar")  # ...then an export uses one of them
    result = as_json(cas("prune", "--older-than", "1h", "--json"))
    assert [i["ref"] for i in result["images"]] == [base]
    assert [i["ref"] for i in as_json(cas("images", "--json"))["images"]] == [oci]


def test_flipped_byte_is_found_named_repaired_and_pulled_back(
    cas, cas_home, registry, test_images, clean_dockerd, tmp_path
):
    base, app = test_images.ref(registry, "base"), test_images.ref(registry, "app")
    cas("pull", base, app)
    victim = test_images.base.layers[1].digest  # base's files layer, which app shares
    flip_byte(blob_path(cas_home, victim), 1000)

    found = cas("verify", check=False)
    assert found.returncode == 1
    assert f"corrupt: {victim}" in found.stdout and base in found.stdout and app in found.stdout
    deep = as_json(cas("verify", "--deep", "--json", check=False))
    assert [(f["kind"], f["what"]) for f in deep["findings"]] == [("corrupt", victim)]

    repaired = as_json(cas("verify", "--repair", "--json", check=False))
    assert repaired["needs_pull_refs"] == sorted([base, app])
    assert not blob_path(cas_home, victim).exists()
    assert sorted(layout_refs(cas_home)) == sorted([base, app])  # still listed: a layout may miss blobs
    failed = cas("export", app, "-o", tmp_path / "broken.tar", check=False)
    assert failed.returncode != 0 and victim in failed.stderr
    assert {row["ref"]: row["needs_pull"] for row in as_json(cas("images", "--json"))["images"]} == {
        base: True,
        app: True,
    }
    assert cas("images").stdout.count("needs pull") == 2

    registry.mark()
    cas("pull", app)
    assert [r.reference for r in registry.blob_gets()] == [victim]  # only the bad blob came back
    # the blob app's pull brought back was base's too: both marks go (before: base still "needs pull")
    assert {row["ref"]: row["needs_pull"] for row in as_json(cas("images", "--json"))["images"]} == {
        base: False,
        app: False,
    }
    assert as_json(cas("verify", "--deep", "--json"))["ok"]
    registry.mark()
    cas("pull", base)
    assert registry.blob_gets() == []  # nothing left to fetch for base
    assert sorted(layout_refs(cas_home)) == sorted([base, app])

    cas("export", app, "-o", tmp_path / "app.tar")
    assert f"Loaded image: {app}" in clean_dockerd.load(tmp_path / "app.tar").stdout
    assert clean_dockerd.run(app).stdout == "hello from app\n"


# Images with Docker media types are listed through an OCI view of their manifest (other digest):
# tests/test_pull.py::test_docker_media_images_are_readable_from_the_store_as_oci covers them.
@pytest.mark.parametrize("name", ["base", "app", "multi", "ocidata"])
def test_store_is_an_oci_layout_skopeo_copies_from(name, cas, cas_home, registry, test_images, skopeo, tmp_path):
    ref = test_images.ref(registry, name)
    others = [test_images.ref(registry, n) for n in ("base", "app", "multi", "ocidata") if n != name]
    cas("pull", ref, *others)
    cas("rm", *others)
    cas("prune")
    assert layout_refs(cas_home) == [ref]
    out = tmp_path / "out"
    # --preserve-digests: an OCI layout destination would otherwise gzip ocidata's plain layers
    skopeo.copy(
        f"oci:{cas_home / 'v1'}:{ref}",
        f"oci:{out}:copy",
        extra=("--preserve-digests", "--dest-oci-accept-uncompressed-layers"),
    )
    copied = json.loads((out / "index.json").read_text())["manifests"]
    expected = test_images[name].for_platform("linux/amd64") if name == "multi" else test_images[name]
    assert [m["digest"] for m in copied] == [expected.digest]
    for digest in expected.digests:
        assert (out / "blobs" / "sha256" / digest[7:]).read_bytes() == blob_path(cas_home, digest).read_bytes()
    gone = skopeo.run("copy", f"oci:{cas_home / 'v1'}:{others[0]}", f"oci:{tmp_path / 'nope'}:x", check=False)
    assert gone.returncode != 0


@pytest.mark.parametrize("what", ["manifest", "config"])
def test_inspect_after_repair_removed_the_manifest_or_config_says_to_pull(what, cas, cas_home, registry, test_images):
    base = test_images.ref(registry, "base")
    cas("pull", base)
    victim = test_images.base.digest if what == "manifest" else test_images.base.config_blob.digest
    flip_byte(blob_path(cas_home, victim), 10)
    repaired = as_json(cas("verify", "--repair", "--json", check=False))
    assert [(f["kind"], f["what"]) for f in repaired["findings"]] == [("corrupt", victim)]
    assert not blob_path(cas_home, victim).exists()

    gone = cas("inspect", base, check=False)
    assert gone.returncode == 1 and gone.stdout == ""
    assert "Traceback" not in gone.stderr
    assert gone.stderr.splitlines() == [
        f"error: {base} needs a pull: its {what} {victim} was removed by `cas verify --repair`",
        f"hint: run `cas pull {base}`",
    ]
    assert cas("inspect", base, "--json", check=False).returncode == 1

    registry.mark()
    cas("pull", base)
    assert [r.reference for r in registry.blob_gets()] == ([victim] if what == "config" else [])
    info = as_json(cas("inspect", base, "--json"))
    assert info["manifest"] == test_images.base.digest
    assert info["config"]["digest"] == test_images.base.config_blob.digest
    assert [layer["digest"] for layer in info["layers"]] == [layer.digest for layer in test_images.base.layers]
