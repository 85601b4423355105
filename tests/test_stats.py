"""`cas stats` against the real registry: what a warm pull reused is what the registry did not serve again."""

from __future__ import annotations

import json
import os

from test_budget import _image, _push


def _stats(cas) -> dict:
    return json.loads(cas("stats", "--json").stdout)


def test_a_warm_pull_counts_as_reused_exactly_the_bytes_the_registry_did_not_serve_again(cas, registry):
    ref = _push(registry, "counted-pull", _image(31))
    by_digest = ref.rsplit(":", 1)[0] + "@" + _image(31).digest
    assert _stats(cas)["since_at"] is None

    registry.mark()
    cas("pull", "-q", by_digest)
    cold = sum(r.bytes for r in registry.requests())
    after_cold = _stats(cas)
    assert after_cold["downloaded_bytes"] == cold and after_cold["reused_bytes"] == 0
    assert after_cold["downloaded_blobs"] == 4  # manifest, config, two layers
    assert after_cold["since_at"] is not None

    registry.mark()
    cas("pull", "-q", by_digest)
    assert registry.requests() == []  # by digest, all present: nothing was served again
    after_warm = _stats(cas)
    assert after_warm["reused_bytes"] - after_cold["reused_bytes"] == cold
    assert after_warm["reused_blobs"] == 4 and after_warm["downloaded_bytes"] == cold
    assert after_warm["hit_ratio"] == 0.5

    registry.mark()
    cas("pull", "-q", ref)  # by tag: the manifest is asked for again, every blob is reused
    served_again = sum(r.bytes for r in registry.requests())
    by_tag = _stats(cas)
    assert by_tag["reused_bytes"] - after_warm["reused_bytes"] == _image(31).size
    assert served_again == _image(31).manifest_blob.size  # the tag's manifest, and no blob

    text = cas("stats").stdout
    assert "hit ratio:" in text and "reused:" in text and "downloaded:" in text


def test_exports_and_evictions_are_counted_and_reset_starts_again(cas, registry):
    refs = [_push(registry, f"counted{seed}", _image(seed)) for seed in (32, 33, 34)]
    for ref in refs[:2]:
        cas("pull", "-q", ref)
    exported = json.loads(cas("export", "--json", refs[0], "-o", os.devnull).stdout)
    budget = int(max(_image(seed).size for seed in (32, 33, 34)) * 2.4)
    evicted = json.loads(cas("pull", "--json", "--max-size", budget, refs[2]).stdout)["budget"]

    counted = _stats(cas)
    assert counted["exports"] == 1 and counted["exported_bytes"] == exported["exported_bytes"]
    assert counted["evicted_images"] == 1 and counted["evicted_bytes"] == evicted["evicted_bytes"]
    assert counted["served_bytes"] == 0

    reset = json.loads(cas("stats", "--reset", "--json").stdout)
    assert reset["reset"] is True and reset["exports"] == 1  # what the counters held
    after = _stats(cas)
    assert after["exports"] == 0 and after["downloaded_bytes"] == 0 and after["hit_ratio"] is None
    assert after["since_at"] >= counted["since_at"]
