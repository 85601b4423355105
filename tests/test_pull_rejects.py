"""Images `cas pull` must refuse before it records anything."""

from __future__ import annotations

import json

from support import images as im


def _push_with_diff_ids(registry, repository: str, image: im.Image, diff_ids: list[str]) -> str:
    """Push ``image`` with its config's rootfs.diff_ids replaced; returns the reference."""
    image.config["rootfs"]["diff_ids"] = diff_ids
    image.config_blob = im.Blob(im.canonical_json(image.config), image.config_blob.media_type)
    image.manifest["config"] = image.config_blob.descriptor()
    image.manifest_blob = im.Blob(im.canonical_json(image.manifest), image.manifest_blob.media_type)
    im.push(registry, repository, "1", image)
    return f"{registry.host}/{repository}:1"


def test_pull_rejects_a_config_listing_fewer_diff_ids_than_layers_and_records_nothing(cas, cas_home, registry):
    one, two = im.random_layer(4000, seed=71), im.random_layer(4000, seed=72)
    ref = _push_with_diff_ids(registry, "diffids-short", im.Image([one, two]), [one.diff_id])

    proc = cas("pull", ref, check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(f"error: the image {ref} is inconsistent: its manifest has 2 layers")
    assert "config lists 1 diff_ids" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(cas("images", "--json").stdout)["images"] == []
    assert json.loads((cas_home / "v1" / "index.json").read_text())["manifests"] == []
    # what the failed pull downloaded is unreferenced: a prune takes it
    assert json.loads(cas("prune", "--json").stdout)["freed_blobs"] > 0


def test_pull_rejects_a_config_listing_more_diff_ids_than_layers(cas, registry):
    one = im.random_layer(4000, seed=73)
    ref = _push_with_diff_ids(registry, "diffids-long", im.Image([one]), [one.diff_id, one.diff_id])
    proc = cas("pull", ref, check=False)
    assert proc.returncode == 1 and "its manifest has 1 layers but its config lists 2 diff_ids" in proc.stderr
    assert json.loads(cas("images", "--json").stdout)["images"] == []
