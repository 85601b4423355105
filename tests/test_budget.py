"""The size budget against the suite's real registry: LRU eviction after a pull, the low-water mark,
an image bigger than the budget, a pull running beside an eviction, and the running total verify checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from support import images
from support.tools import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent


def _image(seed: int, size: int = 200_000, shared: list | None = None) -> images.Image:
    """An image of its own random layers (incompressible: its blobs weigh about ``size`` bytes in all)."""
    own = [images.random_layer(size // 2, seed=seed * 10 + i, path=f"data{i}.bin") for i in range(2)]
    return images.Image([*(shared or []), *own], cmd=("/bin/sh",), labels={"seed": str(seed)})


def _push(registry, name: str, image: images.Image) -> str:
    images.push(registry, f"budget/{name}", "1", image)
    return f"{registry.host}/budget/{name}:1"


def _blobs_on_disk(home: Path) -> int:
    """``du -sb`` of the blobs directory, as the issue measures it."""
    out = subprocess.run(["du", "-sb", str(home / "v1" / "blobs")], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def _cached(cas) -> set[str]:
    return {image["ref"] for image in json.loads(cas("images", "--json").stdout)["images"]}


def test_over_budget_the_least_recently_used_image_goes_and_the_newest_stays(cas, cas_home, registry):
    a, b, c = (_push(registry, name, _image(seed)) for name, seed in (("a", 1), ("b", 2), ("c", 3)))
    size = max(_image(seed).size for seed in (1, 2, 3))
    budget = int(size * 2.4)  # two images fit, with room above the low-water mark (90%)
    cas("pull", "-q", "--max-size", budget, a)
    cas("pull", "-q", "--max-size", budget, b)
    cas("export", "-q", a, "-o", os.devnull)  # a is used again: b is now the least recently used
    pulled = json.loads(cas("pull", "--json", "--max-size", budget, c).stdout)

    went = pulled["budget"]
    assert [image["ref"] for image in went["images"]] == [b]
    assert went["evicted_images"] == 1 and went["evicted_bytes"] > 0 and went["over_budget"] is False
    assert went["max_size"] == budget and went["store_bytes"] <= budget * 0.9
    assert _cached(cas) == {a, c}
    assert _blobs_on_disk(cas_home) <= budget

    said = cas("pull", "--max-size", budget, b).stderr  # back again: now a is the least recently used
    assert f"evicted 1 image ({a})" in said and "to stay under" in said and "max-size from --max-size" in said
    assert _cached(cas) == {b, c}
    assert _blobs_on_disk(cas_home) <= budget


def test_an_image_bigger_than_the_budget_is_kept_with_a_warning(cas, cas_home, registry):
    ref = _push(registry, "big", _image(4, size=400_000))
    pulled = cas("pull", "--max-size", "100000", ref)
    assert pulled.returncode == 0
    assert f"warning: {ref} (linux/amd64) alone is" in pulled.stderr and "it is kept" in pulled.stderr
    assert _cached(cas) == {ref}
    body = json.loads(cas("pull", "--json", "--max-size", "100000", ref).stdout)["budget"]
    assert body["over_budget"] is True and body["evicted_images"] == 0
    assert [image["ref"] for image in body["kept_too_big"]] == [ref]


def test_no_budget_or_nothing_over_it_and_no_budget_field(cas, registry):
    ref = _push(registry, "free", _image(5))
    assert "budget" not in json.loads(cas("pull", "--json", ref).stdout)
    assert "budget" not in json.loads(cas("pull", "--json", "--max-size", "1GB", ref).stdout)  # far under it


def test_a_pull_running_beside_an_eviction_finishes_and_its_export_loads(
    cas, cas_home, registry, proxy, clean_dockerd, tmp_path
):
    shared = images.random_layer(100_000, seed=60, path="shared.bin")
    old = _push(registry, "old", _image(6, shared=[shared]))
    other = _push(registry, "other", _image(7))
    newest = _push(registry, "newest", _image(8))
    slow = _image(9, shared=[shared])  # shares a layer with "old"
    images.push(registry, "budget/slow", "1", slow)
    cas("pull", "-q", old)
    cas("pull", "-q", other)

    proxy.throttle(100_000)  # the slow pull's own layers take about two seconds
    env = {**os.environ, "CAS_HOME": str(cas_home)}
    beside = subprocess.Popen(
        [sys.executable, "-m", "cli", "pull", "--json", f"{proxy.host}/budget/slow:1"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(
        lambda: any(p.stat().st_size for p in (cas_home / "v1" / "ingest").glob("*/data")),
        timeout=60,
        what="the slow pull half way through a layer",
    )
    # "slow" and "newest" fit under the low-water mark; "old", "other" and "newest" do not fit the budget
    budget = int((slow.size + _image(8).size) / 0.9) + 10_000
    assert beside.poll() is None, "the slow pull ended before the eviction: the test proves nothing"
    evicting = json.loads(cas("pull", "--json", "--max-size", budget, newest).stdout)["budget"]
    out, err = beside.communicate(timeout=120)
    assert beside.returncode == 0, err
    assert evicting["skipped"] is None, evicting
    assert {image["ref"] for image in evicting["images"]} == {old, other}  # layers "slow" shares with "old" stay

    archive = tmp_path / "slow.tar"
    cas("export", "-q", f"{proxy.host}/budget/slow:1", "-o", archive)
    clean_dockerd.load(archive)  # an empty daemon: every layer file must be in the archive
    assert cas("verify").returncode == 0


def test_verify_catches_a_wrong_running_total_and_repair_recounts_it(cas, cas_home, registry):
    from cas.store import Store

    ref = _push(registry, "counted", _image(10))
    cas("pull", "-q", ref)
    store = Store(cas_home)
    right = store.metadata.blob_bytes()
    assert right == sum(p.stat().st_size for p in (cas_home / "v1" / "blobs").rglob("*") if p.is_file())
    store.metadata._db.set("total:blob-bytes", right + 12345)  # a total that drifted from the files
    store.close()

    found = cas("verify", "--json", check=False)
    assert found.returncode == 1
    (finding,) = [f for f in json.loads(found.stdout)["findings"] if f["kind"] == "store-total"]
    assert str(right + 12345) in finding["detail"] and str(right) in finding["detail"]
    repaired = json.loads(cas("verify", "--repair", "--json", check=False).stdout)
    assert [f["repaired"] for f in repaired["findings"] if f["kind"] == "store-total"] == [
        "recounted from the blob records"
    ]
    assert cas("verify").returncode == 0
    store = Store(cas_home)
    assert store.metadata.blob_bytes() == right
    store.close()


def test_max_age_evicts_images_unused_for_that_long(cas, cas_home, registry):
    from cas.store import Store

    old, recent, new = (
        _push(registry, name, _image(seed)) for name, seed in (("aged", 11), ("recent", 12), ("new", 13))
    )
    cas("pull", "-q", old)
    cas("pull", "-q", recent)
    store = Store(cas_home)
    store.metadata.touch_refs(store.metadata.ref_records(old), when=time.time() - 8 * 86400)  # last used 8 days ago
    store.close()
    body = json.loads(cas("pull", "--json", new, env={"CAS_MAX_AGE": "7d"}).stdout)["budget"]
    assert [image["ref"] for image in body["images"]] == [old] and body["max_age_seconds"] == 7 * 86400
    assert _cached(cas) == {recent, new}


def test_an_import_keeps_the_budget_too(cas, cas_home, registry, tmp_path):
    refs = [_push(registry, f"imp{seed}", _image(seed)) for seed in (14, 15, 16)]
    archive = tmp_path / "third.tar"
    elsewhere = {"CAS_HOME": str(tmp_path / "elsewhere")}
    cas("pull", "-q", refs[2], env=elsewhere)
    cas("export", "-q", refs[2], "-o", archive, env=elsewhere)
    for ref in refs[:2]:
        cas("pull", "-q", ref)
    budget = int(max(_image(seed).size for seed in (14, 15, 16)) * 2.4)
    imported = cas("import", "--max-size", budget, archive)
    assert f"evicted 1 image ({refs[0]})" in imported.stderr
    assert _cached(cas) == {refs[1], refs[2]}
    assert _blobs_on_disk(cas_home) <= budget


def test_import_and_export_pull_take_max_age_too(cas, cas_home, registry, tmp_path):
    from cas.store import Store

    aged, again, new, fetched = (
        _push(registry, f"age-{name}", _image(seed))
        for name, seed in (("aged", 17), ("again", 18), ("new", 19), ("fetched", 20))
    )
    archive = tmp_path / "new.tar"
    elsewhere = {"CAS_HOME": str(tmp_path / "elsewhere")}
    cas("pull", "-q", new, env=elsewhere)
    cas("export", "-q", new, "-o", archive, env=elsewhere)

    def age(ref: str) -> None:
        cas("pull", "-q", ref)
        store = Store(cas_home)
        store.metadata.touch_refs(store.metadata.ref_records(ref), when=time.time() - 4 * 86400)
        store.close()

    age(aged)
    imported = json.loads(cas("import", "--json", "--max-age", "3d", archive).stdout)["budget"]
    assert [i["ref"] for i in imported["images"]] == [aged] and imported["max_age_from"] == "--max-age"
    age(again)
    exported = cas("export", "--pull", "--max-age", "3d", fetched, "-o", os.devnull)
    assert f"evicted 1 image ({again}), " in exported.stderr and "(max-age from --max-age)" in exported.stderr
    assert _cached(cas) == {new, fetched}


def test_a_copy_keeps_the_budget_and_spares_what_it_copied(cas, cas_home, registry):
    a, b = (_push(registry, name, _image(seed)) for name, seed in (("ca", 5), ("cb", 6)))
    budget = int(max(_image(seed).size for seed in (5, 6)) * 1.5)  # room for one image, not two
    cas("pull", "-q", a)
    copied = json.loads(cas("copy", "--json", "--max-size", budget, b, f"{registry.host}/budget/copied:1").stdout)
    assert [image["ref"] for image in copied["budget"]["images"]] == [a]
    assert _cached(cas) == {b}
    assert _blobs_on_disk(cas_home) <= budget
