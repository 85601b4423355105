"""One blob counting across pull, export, du and prune (docs/cli.md, "Output: units, counts, quiet").

An image's blobs are its index (for a multi-platform reference), manifests, config and
layers, each digest once: pull counts them as downloaded or reused, du's ``blob_count``
counts them, export counts what it writes. Store totals (du's ``stored_blobs``, prune's
``freed_blobs``) count files under ``blobs/``, which also hold the OCI view cas derives
for each Docker-typed manifest.
"""

from __future__ import annotations

import json
import tarfile


def _json(cas, *args: str) -> dict:
    return json.loads(cas(*args, "--json").stdout)


def _du_counts(cas, ref: str) -> dict[str, int]:
    return {i["platform"]: i["blob_count"] for i in _json(cas, "du")["images"] if i["ref"] == ref}


def test_a_docker_image_counts_the_same_blobs_in_pull_du_and_export(cas, registry, test_images, tmp_path):
    image = test_images.dockermedia  # Docker-typed: cas stores an OCI view of its manifest beside it
    ref = test_images.ref(registry, "dockermedia")
    cold = _json(cas, "pull", ref)["images"][0]
    warm = _json(cas, "pull", ref)["images"][0]
    blobs = len(set(image.digests))
    assert (cold["downloaded_blobs"], cold["reused_blobs"]) == (blobs, 0)
    assert (warm["downloaded_blobs"], warm["reused_blobs"]) == (0, blobs)
    assert warm["reused_bytes"] == image.size
    assert _du_counts(cas, ref) == {image.platform: blobs}
    for fmt in ("docker-archive", "oci-archive"):
        exported = _json(cas, "export", "--format", fmt, ref, "-o", str(tmp_path / f"{fmt}.tar"))
        assert exported["exported_blobs"] == blobs, fmt

    assert _json(cas, "du")["stored_blobs"] == blobs + 1  # files: the OCI view too
    cas("rm", ref)
    pruned = _json(cas, "prune")
    assert pruned["freed_blobs"] == blobs + 1 and pruned["kept_blobs"] == 0


def test_a_second_image_reuses_exactly_the_blobs_it_shares(cas, registry, test_images):
    base, app = test_images.base, test_images.app
    cas("pull", test_images.ref(registry, "base"))
    pulled = _json(cas, "pull", test_images.ref(registry, "app"))["images"][0]
    shared = set(app.digests) & set(base.digests)
    assert pulled["reused_blobs"] == len(shared) and pulled["downloaded_blobs"] == len(set(app.digests) - shared)
    assert _du_counts(cas, test_images.ref(registry, "app")) == {app.platform: len(set(app.digests))}


def test_several_platforms_count_their_index_once(cas, registry, test_images, tmp_path):
    index = test_images.multidocker
    ref = test_images.ref(registry, "multidocker")
    platforms = ("linux/amd64", "linux/arm64/v8")
    pulled = _json(cas, "pull", "--platform", ",".join(platforms), ref)["images"][0]
    each = {p: {index.digest, *index.for_platform(p).digests} for p in platforms}
    assert pulled["downloaded_blobs"] == len(set().union(*each.values()))
    assert _du_counts(cas, ref) == {p: len(blobs) for p, blobs in each.items()}  # du: per platform, index included

    archive = tmp_path / "multi.tar"
    exported = _json(cas, "export", "--format", "oci-archive", ref, "-o", str(archive))
    (made,) = exported["indexes"]  # the archive's own index naming the two platforms, not the registry's
    assert made["digest"] != index.digest
    with tarfile.open(archive) as tar:
        written = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("blobs/")]
    assert exported["exported_blobs"] == len(written) == pulled["downloaded_blobs"]
